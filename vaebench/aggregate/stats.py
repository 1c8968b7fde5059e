"""The report's numbers, each a small pure function of the runs table or the cells: the factorial ANOVA,
failure rates, the best configuration and its robustness, seeds against hyper-parameters, and the rank
correlation of reconstruction with the latent scores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from vaebench.aggregate.collect import AXES, levels
from vaebench.aggregate.fmt import config_text
from vaebench.anova import Anova, factorial_anova
from vaebench.results import BOUNDED_SCORES, F, FAILED, HIGHER_IS_BETTER, LATENT_REFERENCES, LATENT_SCORES, \
    latent_field

WITHIN = 0.10  # robustness: a configuration within 10 % of the best one
# Bounded scores, and ARI and silhouette can be <= 0 (worse than chance): never on a log scale, not even when a
# sweep's values happen to be positive, so that every sweep's figure and numbers read the same way. Nor the
# held-out likelihoods: they are logs already (nats per gene, of either sign), compared by differences.
LIKELIHOODS = (F.val_nll_is, F.test_nll_is, F.baseline_ppca_nll, F.test_baseline_ppca_nll, F.nll_vs_ppca)
LINEAR = (*BOUNDED_SCORES, *LIKELIHOODS)
RECON = F.val_recon_mse  # the reconstruction loss that the latent scores are compared with: it compares across models
LEARNED = 0.95  # recon_vs_mean at most this: better than predicting each gene's training mean by >= 5 %
STRONG, MODERATE = 0.7, 0.4  # |Spearman rho| from which a relation is called strong / moderate (conventional cut-offs)
REAL_SHARE = 0.1  # runs that did not learn (collapsed): from this share of a model's ok runs the report warns in bold
# The latent scores in the order a reader should weigh them: the balanced probe accuracy does not mislead on
# imbalanced labels (tumour / normal 1104 / 114 gave k-means ARI 0.04-0.21 beside a probe at 0.99); k-means'
# ARI and NMI, and the silhouette, after it. The probe's worst recall beside it says whether the small label is
# found at all (balanced accuracy 0.75 can be 1.0 and 0.5).
LATENT_ORDER = (F.latent_probe_balanced_accuracy, F.latent_probe_min_recall, F.latent_ari, F.latent_nmi,
                F.latent_silhouette)
# The held-out likelihood (the calibrated objective's): results written without it still aggregate (_numbers).
NLL, PPCA_NLL, NLL_VS_PPCA, KL_UNITS = F.val_nll_is, F.baseline_ppca_nll, F.nll_vs_ppca, F.kl_units_90


def latent_scores_present(df: pd.DataFrame) -> list[str]:
    """The latent scores the runs have, in LATENT_ORDER (any other LATENT_SCORES after)."""
    order = [m for m in LATENT_ORDER if m in LATENT_SCORES] + [m for m in LATENT_SCORES if m not in LATENT_ORDER]
    return [m for m in order if m in df]


def is_collapsed(runs: pd.DataFrame) -> pd.Series:
    """Per run: marked collapsed in its result (null, in older results and failed runs, is not)."""
    return runs[F.collapsed].eq(True) if F.collapsed in runs else pd.Series(False, index=runs.index)


@dataclass
class Analysed:
    """The runs the sensitivity statistics use, and the ones set apart."""
    runs: pd.DataFrame  # successful runs that learned (every successful run when none learned)
    collapsed: int  # successful runs marked collapsed
    ok: int  # successful runs (status ok and a finite metric)
    none_learned: bool  # every successful run collapsed: the statistics then rank runs that did not learn


def analysed_runs(ok: pd.DataFrame) -> Analysed:
    """The sensitivity statistics (ANOVA, seeds against hyper-parameters) on runs that learned: a collapsed run's
    metric says only that it did not learn (on BRCA the ANOVA's "optimizer matters most" only said that SGD
    collapsed). Collapsed runs are counted and analysed apart, as failures are. When every run collapsed, the
    statistics use them all, and the report says that they rank runs that did not learn."""
    collapsed = is_collapsed(ok)
    n = int(collapsed.sum())
    if n == len(ok):
        return Analysed(ok, n, len(ok), none_learned=len(ok) > 0)
    return Analysed(ok[~collapsed], n, len(ok), none_learned=False)




def is_log_scale(values: pd.Series, metric: str) -> bool:
    """ln(metric) only when every value is positive (losses can be negative) and the metric is not a score
    that can be <= 0 nor a log-likelihood; else the metric itself."""
    return metric not in LINEAR and len(values) > 0 and bool((values > 0).all())


def analysed(values: pd.Series, metric: str) -> pd.Series:
    values = values.astype(float)
    return np.log(values) if is_log_scale(values, metric) else values


def no_design(ok: pd.DataFrame) -> Optional[str]:
    """Why the runs form no factorial design, in words; None when they do. A search (hydra/sweeper=optuna) draws
    a new learning rate for nearly every trial: a factor whose levels mostly hold one run each cannot be compared
    level against level, and an ANOVA with a category per trial would fit every run exactly."""
    for factor in AXES:
        per_level = ok.groupby(factor).size()
        values = pd.Series(per_level.index)
        # A sampler's values (0.000311566) are not a grid's round ones (1e-3, 5e-4, 20): three significant digits.
        drawn = values.map(lambda v: isinstance(v, float) and float(f"{v:.3g}") != v).mean() >= 0.5
        if len(per_level) > 2 and per_level.median() < 2 and (drawn or len(per_level) >= 10):
            return (f"{factor} takes {len(per_level)} values in {len(ok)} runs, most of them once: the runs are a "
                    "search (such as hydra/sweeper=optuna), not a grid")
    return None


def search_effects(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """For runs without a design: Spearman's rho of each numeric hyper-parameter with y, and the runs' spread."""
    y = analysed(ok[metric], metric)
    rows = []
    for factor in (F.lr, F.latent_dim):
        if ok[factor].nunique() > 1:
            rho, p = spearman(ok[factor].astype(float), y)
            rows.append({"hyper-parameter": factor, "values": ok[factor].nunique(),
                         "lowest": ok[factor].min(), "highest": ok[factor].max(), "Spearman ρ with y": rho, "p": p})
    return pd.DataFrame(rows)


def sensitivity(ok: pd.DataFrame, metric: str) -> Optional[Anova]:
    """The factorial ANOVA of y = ln(metric) (or the metric itself, see `analysed`) over the successful runs:
    optimizer, lr, latent_dim, their two-way interactions and seed as a block (vaebench.anova). None when the
    runs are too few or do not vary, or form no design (a search: `no_design`)."""
    if len(ok) < 2 or no_design(ok):
        return None
    return factorial_anova(ok.assign(y=analysed(ok[metric], metric)), "y", AXES, block=F.seed)


def failure_rates(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per level of `by`: runs, each ending, and the share that did not end `ok`; where some run collapsed, also
    the collapsed ones (of the ok) and the share that did not learn (failed or collapsed)."""
    table = pd.crosstab(runs[by], runs[F.status]).reindex(columns=["ok", *FAILED], fill_value=0)
    table.insert(0, "runs", table.sum(axis=1))
    table["failure rate"] = 1 - table["ok"] / table["runs"]
    collapsed = (runs[F.status] == "ok") & is_collapsed(runs)
    if collapsed.any():
        table.insert(2, "of them collapsed", collapsed.groupby(runs[by]).sum().reindex(table.index, fill_value=0))
        table["did not learn"] = table["failure rate"] + table["of them collapsed"] / table["runs"]
    return table


def worse(metric: str) -> int:
    """+1 when a larger value of the metric is worse (losses), -1 when it is better (latent scores)."""
    return -1 if metric in HIGHER_IS_BETTER else 1


def best_config(model_cells: pd.DataFrame, metric: str) -> Optional[pd.Series]:
    """The cell with the best mean metric among cells where every run (every seed) succeeded."""
    clean = model_cells[model_cells["n_ok"] == model_cells["runs"]]
    return None if clean.empty else clean.loc[(worse(metric) * clean["mean"]).idxmin()]


def runs_of(runs: pd.DataFrame, cell: pd.Series) -> pd.DataFrame:
    """The runs (seeds) of one configuration."""
    return runs[np.logical_and.reduce([runs[a] == cell[a] for a in AXES])]


def unfinished(runs: pd.DataFrame) -> Optional[str]:
    """Why a configuration's numbers may not be its last word: its successful runs hit the epoch limit
    (trainer.max_epochs) without the stopping rule firing, or were still improving at their last epoch. None
    when neither; else words such as "hit the epoch limit (15 of 15 epochs) in 3 of 3 seeds, still improving"."""
    ok = runs[runs[F.status] == "ok"]
    if ok.empty:
        return None
    hit = ok[F.stop_reason].eq("max_epochs") if F.stop_reason in ok else ~ok.get(F.converged, pd.Series(True, index=ok.index)).eq(True)
    improving = ok[F.still_improving].eq(True) if F.still_improving in ok else pd.Series(False, index=ok.index)
    if not (hit.any() or improving.any()):
        return None
    limit = pd.to_numeric(ok["config.trainer.max_epochs"], errors="coerce") if "config.trainer.max_epochs" in ok else None
    parts = []
    if hit.any():
        epochs = f"{int(ok.loc[hit, F.epochs_run].max())}"
        if limit is not None and limit[hit].notna().any():
            epochs += f" of {int(limit[hit].max())}"
        seeds = f" in {int(hit.sum())} of {len(ok)} seeds" if len(ok) > 1 else ""
        parts.append(f"hit the epoch limit ({epochs} epochs){seeds}")
    if improving.any():
        seeds = f" in {int(improving.sum())} of {len(ok)} seeds" if len(ok) > 1 else ""
        parts.append(f"still improving at its last epoch{seeds}")
    return ", ".join(parts)


def within_best(model_cells: pd.DataFrame, best: float, metric: str) -> pd.Series:
    """Cells that count as robust: every run succeeded and the mean is within 10 % of the best."""
    s = worse(metric)
    return (model_cells["n_ok"] == model_cells["runs"]) & (s * model_cells["mean"] <= s * best + WITHIN * abs(best))


def robustness(model_cells: pd.DataFrame, best: float, optimizers: Sequence[str], metric: str) -> pd.DataFrame:
    rows = []
    for opt in optimizers:
        c = model_cells[model_cells[F.optimizer] == opt]
        if c.empty:
            continue
        near = int(within_best(c, best, metric).sum())
        own = best_config(c, metric)
        rows.append({"optimizer": opt, "configurations": len(c), "with a failure": int((c["n_failed"] > 0).sum()),
                     "its best": own["mean"] if own is not None else math.nan, "within 10 %": near,
                     "share": near / len(c)})
    return pd.DataFrame(rows)


@dataclass
class SeedSpread:
    seed_sd: float  # pooled within-configuration sd of y across seeds
    config_sd: float  # sd of the configurations' mean y
    n_cells: int  # configurations with two or more successful seeds


def seed_spread(ok: pd.DataFrame, metric: str) -> Optional[SeedSpread]:
    """Seeds against hyper-parameters, both as a standard deviation of y = ln(metric)."""
    y = analysed(ok[metric], metric)
    by = y.groupby([ok[c] for c in AXES])
    sizes = by.size()
    if (sizes >= 2).sum() == 0:
        return None
    within = float(((y - by.transform("mean")) ** 2).sum())
    dof = int((sizes - 1).sum())
    means = by.mean()
    return SeedSpread(seed_sd=math.sqrt(within / dof), config_sd=float(means.std()) if len(means) > 1 else math.nan,
                      n_cells=int((sizes >= 2).sum()))


def factor_effects(ok: pd.DataFrame, metric: str) -> pd.Series:
    """Per hyper-parameter with two or more levels: max − min of its levels' mean y, in the units of y like the
    seed sd, so that the report can set each one's effect beside seed-to-seed variation."""
    y = analysed(ok[metric], metric)
    return pd.Series({f: float(np.ptp(y.groupby(ok[f]).mean())) for f in AXES if ok[f].nunique() > 1}, dtype=float)


def spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Spearman's rho and its two-sided p; NaN for fewer than 3 points (2 points give ±1 whatever they are)
    or when either side does not vary."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan, math.nan
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def recon_vs_latent(df: pd.DataFrame) -> pd.DataFrame:
    """Does the best reconstruction give the best latent space? Per model and latent score present, Spearman's
    rank correlation between RECON and the score over the successful runs that have both. With several seeds
    also over the configurations' means (first row: the seed's noise is no configuration's merit). Each row
    says where the unit with the best RECON ranks on the score (1 = best). Empty when no run has a score."""
    columns = ["model", "latent metric", "over", "n", "rho", "p", "best recon", "its rank"]
    rows = []
    present = latent_scores_present(df)
    if RECON not in df or not present:
        return pd.DataFrame(rows, columns=columns)
    for model in levels(df)[F.model]:
        runs = df[(df[F.model] == model) & (df[F.status] == "ok")]
        for metric in present:
            both = runs[np.isfinite(runs[RECON].astype(float)) & np.isfinite(runs[metric].astype(float))]
            if both.empty:
                continue
            both = both.astype({RECON: float, metric: float})
            units = [("runs", both.reset_index(drop=True))]
            if both.groupby(list(AXES)).size().max() > 1:
                means = both.groupby(list(AXES), as_index=False)[[RECON, metric]].mean()
                units.insert(0, ("configuration means", means))
            for over, data in units:
                rho, p = spearman(data[RECON], data[metric])
                top = data.loc[data[RECON].idxmin()]
                rank = (worse(metric) * data[metric]).rank(method="min")[top.name]
                label = config_text(top) + (f", seed {int(top['seed'])}" if over == "runs" else "")
                rows.append({"model": model, "latent metric": metric, "over": over, "n": len(data), "rho": rho,
                             "p": p, "best recon": label, "its rank": int(rank)})
    return pd.DataFrame(rows, columns=columns)


def direction(metric: str) -> str:
    return "lower is better" if worse(metric) > 0 else "higher is better"


# The test counterpart of a selection metric; other metrics (latent scores, ...) are read beside the ratio.
TEST_OF = {F.val_recon_mse: F.test_recon_mse, F.recon_vs_mean: F.test_recon_vs_mean}
TEST_FIELDS = (F.test_recon_mse, F.test_recon_vs_mean)


def has_test(df: pd.DataFrame) -> bool:
    """Whether any run scored test rows (data.test_fraction > 0)."""
    return F.test_recon_mse in df and bool(np.isfinite(df[F.test_recon_mse].astype(float)).any())


def held_out_field(metric: str) -> str:
    return TEST_OF.get(metric, F.test_recon_vs_mean)


def best_on_test(runs: pd.DataFrame, best: pd.Series) -> dict[str, float]:
    """The test scores of the configuration chosen on validation rows: each test field's mean over the
    configuration's runs (its seeds), and n_test. Every run of an experiment holds out the same test rows
    (data/split.py), so no run trained, stopped or was chosen on them."""
    mine = runs[(runs[F.status] == "ok") & np.logical_and.reduce([runs[a] == best[a] for a in AXES])]
    out = {f: float(_numbers(mine, f).mean()) for f in TEST_FIELDS}
    out[F.n_test] = float(_numbers(mine, F.n_test).max())
    return out


def has_baselines(df: pd.DataFrame) -> bool:
    """Whether any run recorded its baselines (results of schema 1 did not)."""
    return F.recon_vs_mean in df and bool(np.isfinite(df[F.recon_vs_mean].astype(float)).any())


def _numbers(runs: pd.DataFrame, name: str) -> pd.Series:
    """A result field as floats, all NaN where the results do not have it."""
    return runs[name].astype(float) if name in runs else pd.Series(math.nan, index=runs.index)


def _median(values: pd.Series) -> float:
    """The median of the values present; NaN, without numpy's empty-slice warning, when there are none."""
    values = values.dropna()
    return float(values.median()) if len(values) else math.nan


def learning(df: pd.DataFrame) -> pd.DataFrame:
    """Did each model learn? Over its `ok` runs: the share better than the mean predictor by >= 5 %, runs marked
    collapsed, median active units, the best ratio to the mean predictor and to PCA with as many components as
    the latent size, each with where it was reached; and the held-out likelihood where recorded (`likelihood`)."""
    rows = []
    for model in levels(df)["model"]:
        ok = df[(df[F.model] == model) & (df[F.status] == "ok")]
        vs_mean, vs_pca = _numbers(ok, F.recon_vs_mean).dropna(), _numbers(ok, F.recon_vs_pca).dropna()
        best_mean = ok.loc[vs_mean.idxmin()] if len(vs_mean) else None
        best_pca = ok.loc[vs_pca.idxmin()] if len(vs_pca) else None
        collapsed = ok[F.collapsed].eq(True).sum() if F.collapsed in ok else math.nan
        row = {"model": model, "ok runs": len(ok), "with baselines": len(vs_mean),
               f"share ≤ {LEARNED:g} × mean predictor": (vs_mean <= LEARNED).mean() if len(vs_mean) else math.nan,
               "collapsed": collapsed, "median active units": _median(_numbers(ok, F.active_units)),
               f"best run's {F.recon_vs_mean}": vs_mean.min() if len(vs_mean) else math.nan,
               "at": config_text(best_mean) if best_mean is not None else "—",
               f"best run's {F.recon_vs_pca}": vs_pca.min() if len(vs_pca) else math.nan,
               "at latent": int(best_pca[F.latent_dim]) if best_pca is not None else "—"}
        rows.append({**row, **likelihood(ok)})
    return pd.DataFrame(rows)  # the likelihood's columns only where some run recorded it


def learning_total(df: pd.DataFrame) -> str:
    """The "Did the models learn?" table in one sentence over every model: what the README quotes for a demo."""
    ok = df[df[F.status] == "ok"]
    vs_mean = _numbers(ok, F.recon_vs_mean).dropna()
    if vs_mean.empty:
        return ""
    collapsed = int(is_collapsed(ok).sum())
    return (f"All models: {int((vs_mean <= LEARNED).sum())} of {len(df)} runs beat the mean predictor by 5 % or more, "
            f"{collapsed} are marked collapsed, {len(df) - len(ok)} failed (median {F.recon_vs_mean} "
            f"{vs_mean.median():.2f}).")


def likelihood_columns() -> tuple[str, ...]:
    return (f"best {NLL}", f"{PPCA_NLL} there", f"share beating PPCA ({NLL_VS_PPCA} < 0)", f"median {KL_UNITS}")


def likelihood(ok: pd.DataFrame) -> dict[str, float]:
    """The held-out likelihood of the calibrated objective, where the runs recorded it: the best (lowest)
    val_nll_is and PPCA's at the same run, the share of runs whose likelihood beats probabilistic PCA with k =
    latent size, and the median of the latent dims carrying 90 % of the KL. Empty for results without it."""
    nll = _numbers(ok, NLL).dropna()
    if nll.empty:
        return {}
    best = nll.idxmin()
    vs = _numbers(ok, NLL_VS_PPCA).dropna()
    best_col, ppca_col, share_col, units_col = likelihood_columns()
    return {best_col: float(nll[best]), ppca_col: float(_numbers(ok, PPCA_NLL)[best]),
            share_col: float((vs < 0).mean()) if len(vs) else math.nan, units_col: _median(_numbers(ok, KL_UNITS))}


def latent_against_references(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and latent score: the median over `ok` runs of the trained network's score, of the same
    network untrained and of PCA with k = latent size, and the share of runs whose trained score beats the
    untrained one. Scores with no reference recorded are left out."""
    columns = ["model", "latent score", "runs", "trained", *LATENT_REFERENCES, "trained > untrained"]
    rows = []
    for model in levels(df)["model"]:
        ok = df[(df[F.model] == model) & (df[F.status] == "ok")]
        for score in latent_scores_present(df):
            refs = {r: _numbers(ok, latent_field(score, r)) for r in LATENT_REFERENCES}
            trained = _numbers(ok, score)
            if trained.isna().all() or all(v.isna().all() for v in refs.values()):
                continue
            both = trained.notna() & refs["untrained"].notna()
            beats = (trained[both] > refs["untrained"][both]).mean() if both.any() else math.nan
            rows.append({"model": model, "latent score": score, "runs": int(trained.notna().sum()),
                         "trained": _median(trained), **{r: _median(v) for r, v in refs.items()},
                         "trained > untrained": beats})
    return pd.DataFrame(rows, columns=columns)
