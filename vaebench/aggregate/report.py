"""report.md: the summary table, then per model what explains the variation, failures, the best configuration
and its robustness, seeds against hyper-parameters and reconstruction against the latent space; and how
every number is computed from results.csv."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from vaebench.aggregate.collect import Experiments, Scan, cells, levels, runs_context, successful
from vaebench.aggregate.fmt import config_text, fmt, fmt_lr, fmt_spread
from vaebench.aggregate.stats import (LEARNED, MODERATE, REAL_SHARE, RECON, STRONG, WITHIN, analysed_runs,
                                      best_config, best_on_test, direction, factor_effects, failure_rates,
                                      has_baselines, has_test, held_out_field, is_collapsed, is_log_scale,
                                      latent_against_references, learning, learning_total, no_design, robustness, runs_of,
                                      search_effects, seed_spread, sensitivity, unfinished, worse)
from vaebench.anova import MIN_RESIDUAL_DF, Anova, failure_lines, p_text, partial_eta_sq, variation_lines
from vaebench.results import F, FAILED

# The ANOVA terms the summary table shows, one column each: the grid's factors, the interaction that decides
# the failures, and the seed.
SUMMARY_TERMS = ("optimizer", "lr", "latent_dim", "optimizer x lr", "seed")


def rho_meaning(row: pd.Series) -> str:
    """One plain sentence per correlation. They agree when the better end of one goes with the better end of the
    other: rho > 0 for two losses, rho < 0 for RECON (low is good) against a score (high is good)."""
    metric, rho = row["latent metric"], row["rho"]
    where = f"The best {RECON} ({row['best recon']}) ranks {row['its rank']} of {row['n']} on {metric} (1 = best)."
    if not np.isfinite(rho):
        return f"Too few points or no variation: no correlation. {where}"
    good = "higher" if worse(metric) < 0 else "lower"
    bad = "lower" if good == "higher" else "higher"
    agree = rho * worse(RECON) * worse(metric) > 0
    strength = "strongly" if abs(rho) >= STRONG else "moderately"
    if abs(rho) < MODERATE:
        verdict = f"Weak: {RECON} says little about {metric}."
    elif agree:
        verdict = (f"They {strength} agree: lower {RECON} goes with {good} {metric}, so better reconstruction "
                   "tends to give a better latent space.")
    else:
        verdict = (f"They {strength} disagree: lower {RECON} goes with {bad} {metric}, so better reconstruction "
                   "tends to give a worse latent space.")
    chance = f" With n = {row['n']} this could be chance (p = {fmt(row['p'], 2)})." if row["p"] >= 0.05 else ""
    return f"{verdict}{chance if abs(rho) >= MODERATE else ''} {where}"



def md_table(df: pd.DataFrame, index: bool = False) -> str:
    """A Markdown table (pandas' to_markdown needs the optional tabulate package)."""
    if index:
        df = df.reset_index()
    text = df.astype(object).map(lambda v: fmt(v, 3) if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def figure_link(text: str, path: str) -> str:
    return f"[{text}]({path})" if path.endswith(".pdf") else f"![{text}]({path})"  # Markdown shows no PDF inline


def sensitivities(df: pd.DataFrame, metric: str, models: Sequence[str]) -> dict[str, Optional[Anova]]:
    """Each model's ANOVA over its successful runs that learned (analysed_runs): fitted once, for the summary table
    and the model's section."""
    return {model: sensitivity(analysed_runs(successful(df[df[F.model] == model], metric)).runs, metric)
            for model in models}


def summary(df: pd.DataFrame, all_cells: pd.DataFrame, metric: str, lvl: dict[str, list],
            anovas: Optional[dict[str, Optional[Anova]]] = None) -> pd.DataFrame:
    """One row per model: the table the command prints and the report opens with."""
    anovas = anovas if anovas is not None else sensitivities(df, metric, lvl[F.model])
    rows = []
    for model in lvl[F.model]:
        runs = df[df[F.model] == model]
        anova = anovas[model]
        best = best_config(all_cells[all_cells[F.model] == model], metric)
        test = {}
        if has_test(df):  # the chosen configuration on the held-out test rows
            test = {f"best's {held_out_field(metric)}": best_on_test(runs, best)[held_out_field(metric)]
                    if best is not None else math.nan}
        rows.append({"model": model, "runs": len(runs), "ok": int((runs[F.status] == "ok").sum()),
                     "failed": int(runs[F.status].isin(FAILED).sum()),
                     **({"collapsed": int(((runs[F.status] == "ok") & is_collapsed(runs)).sum())} if F.collapsed in df
                        else {}),
                     "not converged": int(((runs[F.status] == "ok") & (runs.get(F.converged) != True)).sum()),  # noqa: E712
                     **{f"partial η² {t}": partial_eta_sq(anova, t) for t in SUMMARY_TERMS},
                     "best configuration": best_text(runs, best),
                     f"best {metric}": best["mean"] if best is not None else math.nan, **test})
    return pd.DataFrame(rows)


def best_text(runs: pd.DataFrame, best: Optional[pd.Series]) -> str:
    """The best configuration as the summary names it, flagged when its runs had not finished improving."""
    if best is None:
        return "—"
    flag = unfinished(runs_of(runs, best))
    return config_text(best) + (f" ⚠ {flag}" if flag else "")


def rho_table(corr: pd.DataFrame) -> pd.DataFrame:
    """(model, over) x latent score: rho and its n, the configuration means' row first where there is one."""
    text = [f"{fmt(r.rho, 2)} (n {r.n})" for r in corr.itertuples()]
    table = corr.assign(text=text).pivot(index=["model", "over"], columns="latent metric", values="text")
    rows = list(dict.fromkeys(zip(corr[F.model], corr["over"])))
    table = table.reindex(index=pd.MultiIndex.from_tuples(rows, names=["model", "over"]),
                          columns=list(dict.fromkeys(corr["latent metric"])))
    table.columns.name = None
    return table.fillna("—")


def rho_lines(corr: pd.DataFrame) -> list[str]:
    """The report's section on one model's correlations: every row, then a sentence per headline row."""
    if corr.empty:
        return []
    table = corr[["latent metric", "over", "n", "rho", "p", "best recon", "its rank"]].rename(
        columns={"rho": "Spearman ρ", "best recon": f"best {RECON}", "its rank": "its rank on the score"})
    # The sentence reads the configuration means where they give a rho, else the runs (two configurations
    # give no rho, but their runs may), and says which.
    head = corr[np.isfinite(corr["rho"])].drop_duplicates("latent metric")
    first = corr.drop_duplicates("latent metric")
    head = pd.concat([head, first[~first["latent metric"].isin(head["latent metric"])]]).sort_index()
    return (["### Reconstruction against the latent space", "",
             f"Spearman's rank correlation between {RECON} and each latent score over the successful runs, and with "
             "several seeds over the configurations' means (the ρ to read: a seed's noise is no configuration's "
             f"merit). Low {RECON} is good and a high score is good, so **a negative ρ means they agree**.", "",
             md_table(table), ""]
            + [f"- **{r['latent metric']}** (ρ = {fmt(r['rho'], 2)} over {r['n']} {r['over']}"
               + (", too few configurations for their means" if r["over"] == "runs" and (corr["over"] != "runs").any()
                  else "")
               + f"): {rho_meaning(r)}" for _, r in head.iterrows()] + [""])


def model_section(df: pd.DataFrame, model_cells: pd.DataFrame, metric: str, model: str, lvl: dict[str, list],
                  figure: Optional[str], corr: pd.DataFrame, anova: Optional[Anova]) -> list[str]:
    runs = df[df[F.model] == model]
    apart = analysed_runs(successful(runs, metric))
    ok = apart.runs  # the runs that learned: what the ANOVA and the seeds' numbers describe
    y_name = f"ln({metric})" if is_log_scale(ok[metric], metric) else metric
    lines = [f"## {model}", ""]
    if figure:
        lines += [figure_link(f"{model}: dot-plot", figure), ""]

    lines += [f"### What explains the variation of {y_name}", ""]
    if apart.none_learned:
        lines += [f"**Every one of the {apart.ok} successful runs collapsed** (did not learn): the numbers below rank "
                  "runs that learned nothing, by how far each stayed from the mean predictor, not settings that work.",
                  ""]
    elif apart.collapsed:
        lines += [f"Over the {len(ok)} successful runs that learned: the {apart.collapsed} that collapsed "
                  f"({F.collapsed} in their result) are left out here and counted with the failures below, because a "
                  f"collapsed run's {metric} says only that it did not learn.", ""]
    why_not = no_design(ok) if len(ok) >= 2 else None
    if why_not:
        effects = search_effects(ok, metric)
        lines += [f"No factorial ANOVA: {why_not}. An ANOVA compares the runs of each level of a factor, and here "
                  "nearly every level has one run. Instead, how each hyper-parameter's value ranks with "
                  f"{y_name} over the {len(ok)} runs (Spearman's ρ; a search samples where it expects good values, "
                  "so these are not the effects of a designed experiment):", "",
                  md_table(effects.assign(p=[p_text(v) for v in effects["p"]])) if len(effects) else "", ""]
    else:
        lines += variation_lines(anova, len(ok), y_name, md_table)

    collapsed = (runs[F.status] == "ok") & is_collapsed(runs)
    lines += ["### Failures" + (" and runs that did not learn" if collapsed.any() else ""), ""]
    lines += ["Per optimizer:", "", md_table(failure_rates(runs, "optimizer"), index=True), ""]
    by_lr = failure_rates(runs, "lr")
    by_lr.index = [fmt_lr(v) for v in by_lr.index]
    by_lr.index.name = "lr"
    lines += ["Per learning rate:", "", md_table(by_lr, index=True), ""]
    lines += failure_lines(runs, runs[F.status].isin(FAILED), md_table, fmt_lr)
    if collapsed.any():  # analysed apart, as the failures are: where do runs end without learning?
        lines += failure_lines(runs, runs[F.status].isin(FAILED) | collapsed, md_table, fmt_lr,
                               what="failed or collapsed")
    hit = runs[(runs[F.status] == "ok") & (runs.get(F.converged) != True)]  # noqa: E712
    lines += [f"{len(hit)} of {int((runs['status'] == 'ok').sum())} successful runs hit the epoch limit "
              "without converging.", ""]

    lines += ["### Best configuration and robustness", ""]
    best = best_config(model_cells, metric)
    if best is None:
        lines += ["No configuration in which every run succeeded.", ""]
    else:
        seeds = int(best["n_ok"])
        bound = best["mean"] + worse(metric) * WITHIN * abs(best["mean"])
        flag = unfinished(runs_of(runs, best))
        lines += [f"Best: **{config_text(best)}**, {metric} = {fmt(best['mean'])}"
                  + (f" (mean of {seeds} seeds, {fmt_spread(best, y_name != metric)})" if seeds > 1 else "")
                  + f", {fmt(best['epochs'], 3)} epochs.", ""]
        if flag:
            lines += [f"**⚠ The best configuration {flag}:** it had not finished learning, so more epochs "
                      "(trainer.max_epochs) may lower its value and change the ranking.", ""]
        lines += [f"Configurations within 10 % of the best ({metric} {'<=' if worse(metric) > 0 else '>='} "
                  f"{fmt(bound)}) with every run successful, per optimizer:", "",
                  md_table(robustness(model_cells, best["mean"], lvl[F.optimizer], metric)), ""]
        if has_test(runs):
            test = best_on_test(runs, best)
            lines += [f"On the test rows ({int(test[F.n_test])} samples held out from every run's training and "
                      f"stopping, and from this choice, which read validation rows only): "
                      f"{F.test_recon_mse} = {fmt(test[F.test_recon_mse])}, {F.test_recon_vs_mean} = "
                      f"{fmt(test[F.test_recon_vs_mean])}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
                      + ": the score to quote for this configuration; the validation score above is optimistic, "
                      "as it is the best of many.", ""]

    spread = seed_spread(ok, metric) if len(ok) else None
    if spread is not None:
        ratio = spread.config_sd / spread.seed_sd if spread.seed_sd > 0 else math.inf
        lines += ["### Seeds against hyper-parameters", "",
                  f"Seed-to-seed sd of {y_name} within a configuration (pooled over {spread.n_cells} "
                  f"configurations with two or more successful seeds): {fmt(spread.seed_sd, 3)}. "
                  f"Sd of the configurations' mean {y_name}: {fmt(spread.config_sd, 3)}, "
                  f"{fmt(ratio, 3)} times the seed sd. "
                  + ("Hyper-parameters matter more than the seed." if ratio > 1 else
                     "The seed moves the metric as much as the hyper-parameters: read the dot-plot with care."),
                  ""]
        effects = factor_effects(ok, metric)
        if len(effects):
            times = effects / spread.seed_sd if spread.seed_sd > 0 else effects * math.inf
            table = pd.DataFrame({"factor": effects.index, "levels": [ok[f].nunique() for f in effects.index],
                                  f"effect on {y_name} (largest − smallest level mean)": effects.to_numpy(),
                                  "× seed sd": times.to_numpy()})
            lines += ["Each hyper-parameter's effect beside the seed's. A factor whose effect is not well above "
                      "1 × the seed sd moves the metric no more than rerunning with another seed does.", "",
                      md_table(table), ""]
    lines += rho_lines(corr[corr[F.model] == model])
    return lines


METHOD = """## How the numbers are computed

From results.csv (one row per run, already de-duplicated), per model:

- Successful runs: `status == ok` and a finite {metric}. y = ln({metric}) when every successful value is positive,
  else {metric} itself; a latent score (which can be ≤ 0) and a log-likelihood are always y itself.
- Runs that learned: successful runs not marked `collapsed`. The ANOVA and the seeds' numbers use only them (a
  collapsed run's value says only that it did not learn); the collapsed runs are counted per optimizer and lr
  and tested like the failures. When every successful run collapsed, they use all of them, and say so.
- The variation of y: a factorial ANOVA, statsmodels' `ols("y ~ C(optimizer) + C(lr) + C(latent_dim) + their
  two-way interactions + C(seed)")`, type II sums of squares as model comparisons (each term added last to the
  terms that do not contain it; on a full grid the same as `anova_lm(fit, typ=2)`, and right when failures empty
  cells); a factor (or seed) with one level among the successful runs is left out, and so are interactions that
  would leave no residual or that empty cells make inseparable from other terms. Partial η² of a
  term: its sum of squares over (its sum of squares + the residual's). Sums of squares below 1e-10 of the total
  are rounding and shown as 0. "Matters most": the factor with the largest partial η². F and p only with at
  least {min_df} residual degrees of freedom: with fewer, the residual's variance rests on too few runs to test
  against, and the table shows partial η² alone.
- The best configuration is flagged (⚠) when a seed of it stopped at `trainer.max_epochs` (stop_reason
  max_epochs) or was `still_improving` at its last epoch: more epochs may change it.
- Failure rate: runs whose status is diverged, oom or error, over all runs of that optimizer or learning rate.
  Failure against optimizer x lr: a binomial GLM (logistic) of the failed/run counts per optimizer x lr pair on
  optimizer + lr; its deviance against one rate per pair is G², compared with χ² on (optimizers − 1) ×
  (learning rates − 1) degrees of freedom.
- A configuration is optimizer × lr × latent_dim; its value is the mean {metric} over its successful seeds. The
  best configuration is the {extreme} such mean among configurations where every run succeeded. A configuration is
  within 10 % of it when every run succeeded and its mean is {bound}.
- Seed sd: sqrt(Σ (y − mean y of its configuration)² / Σ (runs of the configuration − 1)), over configurations with
  two or more successful seeds. Configuration sd: sample sd of the configurations' mean y. Effect of a factor:
  largest minus smallest mean y of its levels (over all successful runs of the level), then divided by the seed sd.
- ± in the figures: sample sd of {metric} over a configuration's successful seeds; on a log colour scale as a
  share of their mean (±x %), on a linear one as the sd itself.
"""
METHOD_LEARNED = """- Did the models learn: over each model's `ok` runs that recorded baselines, the share with
  `recon_vs_mean` ≤ {learned} (val_recon_mse at least 5 % below the mean predictor's on the run's own split),
  the count with `collapsed` true, the median of `active_units`, and the lowest `recon_vs_mean` and
  `recon_vs_pca`. Latent scores: medians over the `ok` runs of `latent_*`, `latent_*_untrained` and
  `latent_*_pca`; "trained > untrained" is the share of runs whose trained score exceeds its untrained one.
"""
METHOD_RHO = """- Reconstruction against the latent space: `scipy.stats.spearmanr` of {recon} against each latent score, per
  model, over its `ok` runs where both are finite; with several seeds also over the configurations' means of
  both (the ρ the sentences use). p is two-sided and not corrected for the several scores. |ρ| ≥ {strong} is
  called strong, ≥ {moderate} moderate, below that weak. "Its rank": where the configuration (or run) with the
  lowest {recon} stands when ranked by the score, best first, ties sharing the better rank.
"""
METHOD_TEST = """- Test rows (data.test_fraction > 0): every run of an experiment holds out the same rows (drawn with
  data.split_seed, never the run's seed) from training, early stopping and this report's choice of the best
  configuration, which reads validation rows only. The best configuration's test score is the mean of
  `test_recon_mse` and of `test_recon_vs_mean` (test_recon_mse over the error of predicting each gene's training
  mean on the test rows) over its successful runs.
"""


def learning_lines(df: pd.DataFrame) -> list[str]:
    """The section report.md opens with when the runs recorded baselines: did each model learn at all?"""
    if not has_baselines(df):
        return []
    table = learning(df)
    lines = ["## Did the models learn?", "",
             f"Each run against trivial baselines on its own split: `{F.recon_vs_mean}` is val_recon_mse over the "
             "error of predicting each gene's training mean (1 = no better than that constant; posterior collapse "
             f"ends near 1), `{F.recon_vs_pca}` over the error of PCA with as many components as the latent size. "
             f"Over each model's `ok` runs; a run counts as learned at `{F.recon_vs_mean}` ≤ {LEARNED:g}.", "",
             learning_total(df), "", md_table(table), ""]
    share = f"share ≤ {LEARNED:g} × mean predictor"
    for _, row in table.iterrows():
        collapsed = row["collapsed"] if np.isfinite(row["collapsed"]) else 0
        if row[share] == 0:
            lines += [f"**{row['model']}: no run beats the mean predictor by 5 %.** Its sensitivity numbers below "
                      "compare runs that did not learn (collapsed), not models that learned.", ""]
        elif row["ok runs"] and collapsed / row["ok runs"] >= REAL_SHARE:
            lines += [f"**{row['model']}: {int(collapsed)} of {row['ok runs']} successful runs "
                      f"({collapsed / row['ok runs']:.0%}) did not learn (collapsed).** Its sensitivity numbers below "
                      "use the runs that learned; where the collapsed ones lie is under its failures.", ""]
    refs = latent_against_references(df)
    if not refs.empty:
        lines += ["Latent scores, median over `ok` runs, against the same network untrained (same seed and latent "
                  "size) and PCA with k = latent size. A trained score no better than the untrained one is "
                  "structure already in the data, not learning.", "", md_table(refs), ""]
    return lines


def _read_from(scanned: Scan, paths: Sequence[Path], runs: int, dropped: int, part: bool = False) -> str:
    read = [f"{len(scanned.results)} result files"] if scanned.results or not scanned.table_rows else []
    read += [f"{scanned.table_rows} rows of results.csv tables"] if scanned.table_rows else []
    return (f"Read from {', '.join(f'`{p}`' for p in paths)}: {', '.join(read)}, "
            + (f"{runs} runs of this experiment" if part else f"{runs} runs after de-duplication")
            + (f" ({dropped} older or superseded results of the same configuration dropped)" if dropped else ""))


def _not_counted(scanned: Scan) -> tuple[list[str], list[str]]:
    """The note near the top and the list at the end, for files and run dirs that gave no result."""
    if not (scanned.corrupt or scanned.partial or scanned.missing):
        return [], []
    note = [f"**Not counted:** {len(scanned.corrupt)} corrupt result files, {len(scanned.partial)} interrupted "
            f"writes, {len(scanned.missing)} runs without a result yet (running or killed); listed at the end.", ""]
    listed = (["## Not counted", ""] + [f"- corrupt: `{p}` ({why})" for p, why in scanned.corrupt]
              + [f"- interrupted write: `{p}`" for p in scanned.partial]
              + [f"- no result yet: `{p}`" for p in scanned.missing] + [""])
    return note, listed


def write_index(out: Path, scanned: Scan, df: pd.DataFrame, dropped: int, paths: Sequence[Path], split: Experiments,
                reports: dict[int, str]) -> Path:
    """report.md when the runs are of several experiments: which, what tells them apart, where each report is."""
    note, listed = _not_counted(scanned)
    rows = []
    for n, report in reports.items():
        runs = df[split.number == n]
        first = runs.iloc[0]
        rows.append({"experiment": n, "runs": len(runs), "ok": int((runs[F.status] == "ok").sum()),
                     "failed": int(runs[F.status].isin(FAILED).sum()),
                     **{c.removeprefix("config."): str(first[c]) for c in split.differ_in},
                     "report": f"[{report}]({report})"})
    lines = ["# vaebench: hyper-parameter sensitivity", "",
             _read_from(scanned, paths, len(df), dropped) + f", of {len(reports)} experiments.", "", *note,
             f"The runs differ in {', '.join(f'`{c}`' for c in split.differ_in)} besides the swept values, so they "
             "answer different questions: they are never averaged into one dot or one number. Each experiment has "
             "its own report and figures; `results.csv` holds every run, with its `experiment`.", "",
             md_table(pd.DataFrame(rows)), "", *listed]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_report(out: Path, scanned: Scan, df: pd.DataFrame, dropped: int, metric: str, paths: Sequence[Path],
                 figures: dict[str, Optional[str]], table: pd.DataFrame, corr: pd.DataFrame,
                 experiment: Optional[str] = None, anovas: Optional[dict[str, Optional[Anova]]] = None) -> Path:
    """report.md of one experiment; `experiment` says which, when the runs read were of several."""
    lvl = levels(df)
    anovas = anovas if anovas is not None else sensitivities(df, metric, lvl[F.model])
    all_cells = cells(df, metric)
    note, listed = _not_counted(scanned)
    lines = ["# vaebench: hyper-parameter sensitivity", ""]
    if experiment:
        lines += [f"**{experiment}.** The runs of the other experiments differ from these in data or settings and "
                  "have their own reports ([all experiments](../report.md)).", ""]
    context = runs_context(df)
    if context:  # as in every figure's title
        lines += [f"Runs: {context}.", ""]
    lines += [f"Metric: `{metric}` ({direction(metric)}). " + _read_from(scanned, paths, len(df), dropped, bool(experiment))
              + ". All numbers below can be recomputed from `results.csv` (see the end).", "", *note]
    if not (df[F.status] == "ok").any():
        lines += [f"**Every run failed** ({len(df)} runs): there is no {metric} to compare, only the failures below.",
                  ""]
    lines += learning_lines(df)
    lines += ["## Summary", "", md_table(table), ""]
    if not corr.empty:
        lines += [f"Does the best reconstruction give the best latent space? Spearman ρ between {RECON} and each "
                  "latent score (negative: they agree; details and what each means under each model):", "",
                  md_table(rho_table(corr), index=True), ""]
    if figures.get("overview"):
        lines += [figure_link("all models", figures["overview"]), ""]
    for model in lvl[F.model]:
        lines += model_section(df, all_cells[all_cells[F.model] == model], metric, model, lvl, figures.get(model),
                               corr, anovas[model])
    lower = worse(metric) > 0
    lines += [METHOD.format(metric=metric, extreme="lowest" if lower else "highest", min_df=MIN_RESIDUAL_DF,
                            bound="at most best + 0.1 × |best|" if lower else "at least best − 0.1 × |best|")]
    if has_baselines(df):
        lines[-1] += METHOD_LEARNED.format(learned=LEARNED)
    if not corr.empty:
        lines[-1] += METHOD_RHO.format(recon=RECON, strong=STRONG, moderate=MODERATE)
    if has_test(df):
        lines[-1] += METHOD_TEST
    lines += listed
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


