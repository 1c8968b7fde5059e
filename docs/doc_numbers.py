"""Every number the docs quote about the demo, regenerated from a demo run (issue 16).

    make docs          # runs the demo into outputs/docs-demo, then writes the numbers into the docs
    make docs-check    # the same run, then exit 1 when a doc disagrees with it (writes nothing)
    .venv/bin/python docs/doc_numbers.py outputs/docs-demo [--check]

A doc marks each passage this script writes:

    <!-- numbers: NAME -->the text of PASSAGES[NAME]<!-- /numbers -->

(on one line, or with the markers on lines of their own). The text between the markers is replaced; the
rest of the doc is the author's. The demo directory holds three sweeps, as `make docs` runs them:
`paper/` (+experiment=demo_paper), `calibrated/` (+experiment=demo, the default objective) and `seeds/`
(+experiment=demo model=vae seed=0,1,2). The numbers come from the same functions as vaebench-aggregate's report.md.
Write mode also draws the demo's VAE dot-plot under the default objective to docs/img/aggregate_demo_vae.png
(the README's figure).
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from vaebench.aggregate.collect import CELL, cells, levels, runs_context, scan, successful, tabulate
from vaebench.aggregate.fmt import fmt_lr
from vaebench.aggregate.report import summary
from vaebench.aggregate.plots import plot_model, save
from vaebench.aggregate.stats import LEARNED, analysed, analysed_runs, best_config, factor_effects, robustness, seed_spread
from vaebench.results import F

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/aggregate.md", "docs/choosing-settings.md")
FIGURE = Path("docs/img/aggregate_demo_vae.png")
BLOCK = re.compile(r"(<!-- numbers: (\w+) -->)(.*?)(<!-- /numbers -->)", re.S)
METRIC = F.recon_vs_mean  # vaebench-aggregate's default for these results
SWEEPS = ("paper", "calibrated", "seeds")


@dataclass
class Demo:
    paper: pd.DataFrame  # one row per run, as results.csv
    calibrated: pd.DataFrame  # the default objective
    seeds: pd.DataFrame
    root: Path


def load(root: Path) -> Demo:
    tables = {}
    for name in SWEEPS:
        found = scan([root / name])
        if not found.results:
            raise SystemExit(f"doc_numbers: no result.json below {root / name}; run `make docs` (it runs the demo)")
        tables[name] = tabulate(found.results)[0]
    return Demo(**tables, root=root)


# ---- the passages ------------------------------------------------------------------------------------------

def pct(share: float) -> str:
    return f"{100 * share:.2g}" if share < 0.1 else f"{100 * share:.0f}"


def span(values: list[float]) -> str:
    lo, hi = pct(min(values)), pct(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def optimizer_name(name: str) -> str:
    return {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}.get(name, name)


def demo_learned(d: Demo) -> str:
    """README: what `make demo` prints, in a sentence per objective."""
    paper, default = successful(d.paper, METRIC), successful(d.calibrated, METRIC)
    collapsed = int(paper[F.collapsed].eq(True).sum())
    learned = int((default[METRIC] <= LEARNED).sum())
    return (f"under the study's objective {collapsed} of {len(d.paper)} runs are `collapsed` (median "
            f"{paper[METRIC].median():.2f}x the per-gene-mean predictor), under the default objective {learned} of "
            f"{len(d.calibrated)} beat it by 5 % or more (median {default[METRIC].median():.2f}x)")


def anova_shares(d: Demo) -> str:
    """docs/aggregate.md: partial eta squared of each hyper-parameter on the demo (the report's ANOVA)."""
    # the default objective's runs: under the study's every demo run collapsed, and an ANOVA of collapsed runs
    # only says which settings reach the trivial solution fastest
    table = summary(d.calibrated, cells(d.calibrated, METRIC), METRIC, levels(d.calibrated))

    def spread(term: str) -> str:
        values = table[f"partial η² {term}"].dropna()
        lo, hi = f"{values.min():.2f}", f"{values.max():.2f}"
        return lo if lo == hi else f"{lo}–{hi}"

    return (f"On the demo (`make demo`, the default objective, {METRIC}), partial η² is {spread(F.optimizer)} for the "
            f"optimizer, depending on the model, {spread(F.lr)} for the learning rate, {spread('optimizer x lr')} "
            f"for optimizer x lr and {spread(F.latent_dim)} for the latent size.")


def vae_figure(d: Demo) -> str:
    """README's caption and docs/aggregate.md's reading of the VAE's dot-plot (the default objective)."""
    c = cells(d.calibrated, METRIC)
    c = c[(c[F.model] == "vae") & (c["n_ok"] > 0)]
    best = c.loc[c["mean"].idxmin()]
    worst = c.loc[c.groupby(F.lr)["mean"].idxmax()]
    epochs = c.groupby(F.optimizer)["epochs"].mean().sort_values()
    worst_opts = worst[F.optimizer].unique()
    if len(worst_opts) == 1:
        worst_text = (f"{optimizer_name(worst_opts[0])} is the worst at every learning rate "
                      f"({worst['mean'].min():.3f}–{worst['mean'].max():.3f})")
    else:
        worst_text = "the worst optimizer depends on the learning rate: " + ", ".join(
            f"{optimizer_name(r[F.optimizer])} at {fmt_lr(r[F.lr])}" for _, r in worst.iterrows())
    longest = optimizer_name(epochs.index[-1])
    collapsed, runs = int(c["n_collapsed"].sum()), int(c["n_ok"].sum())
    marked = (f"{collapsed} of {runs} runs are marked collapsed (a bar through the dot)" if collapsed else
              f"None of the {runs} runs is marked collapsed")
    return (f"{marked}. "
            f"{optimizer_name(best[F.optimizer])} at lr {fmt_lr(best[F.lr])}, latent {int(best[F.latent_dim])} is "
            f"the best cell ({best['mean']:.3f}x the mean predictor); {worst_text}. {longest} trains longest "
            f"(mean {epochs.iloc[-1]:.1f} epochs, against {epochs.iloc[0]:.1f} for "
            f"{optimizer_name(epochs.index[0])})")


def demo_failures(d: Demo) -> str:
    """docs/aggregate.md: whether the figure can show any failure."""
    failed = d.calibrated[(d.calibrated[F.model] == "vae") & (d.calibrated[F.status] != "ok")]
    if failed.empty:
        return "The demo grid has no failures, so none appear above"
    return f"{len(failed)} of the VAE's runs failed ({', '.join(sorted(failed[F.status].unique()))}): see their marks above"


def seeds_grid(d: Demo) -> str:
    """docs/choosing-settings.md: the seeds sweep in one line."""
    s = d.seeds
    return (f"{len(s)} runs: {s[F.optimizer].nunique()} optimizers x {s[F.lr].nunique()} learning rates x "
            f"{s[F.latent_dim].nunique()} latent sizes x {s[F.seed].nunique()} seeds, "
            f"{int((s[F.status] == 'ok').sum())} ok")


def seeds_learned(d: Demo) -> str:
    """docs/choosing-settings.md: the first table of the seeds sweep's report, in a sentence."""
    ok = successful(d.seeds, METRIC)
    collapsed = ok[ok[F.collapsed].eq(True)]
    text = (f"{int((ok[METRIC] <= LEARNED).sum())} of {len(d.seeds)} runs beat the mean predictor by 5 % or more, "
            f"{len(collapsed)} are marked collapsed")
    if len(collapsed) and collapsed[F.optimizer].nunique() == 1:
        opt = collapsed[F.optimizer].iloc[0]
        text += (f", all of them {optimizer_name(opt)}'s ({len(collapsed)} of its "
                 f"{int((d.seeds[F.optimizer] == opt).sum())} runs)")
    return text


def seeds_best(d: Demo) -> str:
    """docs/choosing-settings.md: the three best configurations by their mean over seeds, with the seeds."""
    c = cells(d.seeds, METRIC)
    c = c[c["n_ok"] == c["runs"]].sort_values("mean").head(3)  # as the report's best: every seed succeeded
    ok = successful(d.seeds, METRIC)
    by = ok.groupby(list(CELL))[METRIC]
    lines = [f"| configuration | mean {METRIC} | sd over seeds | lowest – highest seed | seeds |", "|---|---|---|---|---|"]
    for _, r in c.iterrows():
        key = tuple(r[list(CELL)])
        lines.append(f"| {optimizer_name(r[F.optimizer])}, lr {fmt_lr(r[F.lr])}, latent {int(r[F.latent_dim])} | "
                     f"{r['mean']:.3f} | {r['sd']:.3f} | {by.min()[key]:.3f} – {by.max()[key]:.3f} | {int(r['runs'])} |")
    return "\n".join(lines)


def seeds_robust(d: Demo) -> str:
    """docs/choosing-settings.md: the report's robustness table for the seeds sweep."""
    c = cells(d.seeds, METRIC)
    best = best_config(c, METRIC)
    table = robustness(c, best["mean"], levels(d.seeds)[F.optimizer], METRIC)
    lines = ["| optimizer | configurations | with a failure | its best | within 10 % of the best |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {optimizer_name(r['optimizer'])} | {r['configurations']} | {r['with a failure']} | "
                     f"{r['its best']:.3f} | {r['within 10 %']} |")
    return "\n".join(lines)


def seeds_spread(d: Demo) -> str:
    """docs/choosing-settings.md: the seed sd against each hyper-parameter's effect, and how many seeds suffice."""
    ok = analysed_runs(successful(d.seeds, METRIC)).runs  # as the report: the runs that learned
    spread = seed_spread(ok, METRIC)
    effects = factor_effects(ok, METRIC)
    means = analysed(ok[METRIC], METRIC).groupby([ok[F.optimizer], ok[F.lr], ok[F.latent_dim]]).mean()
    first, second = sorted(means)[:2]
    gap = second - first
    # Two configuration means, n seeds each, differ by more than twice the standard error of their difference
    # (2 * sd * sqrt(2 / n)) when n >= 8 (sd / gap)^2.
    needed = math.ceil(8 * (spread.seed_sd / gap) ** 2) if gap > 0 else math.inf
    effect_text = ", ".join(f"{name} {value:.3f} ({value / spread.seed_sd:.0f}x)" for name, value in
                            effects.sort_values(ascending=False).items())
    return (f"seed sd {spread.seed_sd:.4f} against a configuration sd of {spread.config_sd:.3f} (both of "
            f"ln {METRIC}, over {spread.n_cells} configurations); effects (largest minus smallest level mean, "
            f"and in seed sds): {effect_text}. The two best configurations differ by {gap:.4f} in mean ln "
            f"{METRIC}, {gap / spread.seed_sd:.1f} seed sds: telling them apart at two standard errors takes "
            f"{needed} seed{'s' if needed != 1 else ''} each, with the seed sd measured here")


PASSAGES: dict[str, Callable[[Demo], str]] = {
    "demo_learned": demo_learned, "anova_shares": anova_shares, "vae_figure": vae_figure, "demo_failures": demo_failures,
    "seeds_grid": seeds_grid, "seeds_learned": seeds_learned, "seeds_best": seeds_best, "seeds_spread": seeds_spread, "seeds_robust": seeds_robust,
}


# ---- filling the docs -------------------------------------------------------------------------------------

def fill(text: str, values: dict[str, str], where: str = "") -> str:
    """text with each marked passage's body replaced by its value; the whitespace around a body is kept, so a
    passage may sit inside a sentence or on lines of its own."""
    def one(m: re.Match) -> str:
        name, body = m.group(2), m.group(3)
        if name not in values:
            raise SystemExit(f"doc_numbers: {where} marks a passage '{name}' that no function writes; "
                             f"known: {', '.join(sorted(values))}")
        lead = body[:len(body) - len(body.lstrip())]
        trail = body[len(body.rstrip()):]
        return f"{m.group(1)}{lead}{values[name]}{trail}{m.group(4)}"

    return BLOCK.sub(one, text)


def names_in(text: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="the directory `make docs` ran the demo into")
    parser.add_argument("--check", action="store_true", help="exit 1 when a doc disagrees; write nothing")
    args = parser.parse_args(argv)
    demo = load(args.demo)
    used = {name for doc in DOCS for name in names_in((REPO / doc).read_text())}
    values = {name: PASSAGES[name](demo) for name in sorted(used) if name in PASSAGES}
    stale = []
    for doc in DOCS:
        path = REPO / doc
        old = path.read_text()
        new = fill(old, values, doc)
        if new != old:
            stale.append(doc)
            if args.check:
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), doc, doc + " (demo)"))
            else:
                path.write_text(new)
    if args.check:
        if stale:
            print(f"doc_numbers: {', '.join(stale)} disagree with the demo in {args.demo}: run `make docs` and commit")
            return 1
        print(f"doc_numbers: every marked number in {', '.join(DOCS)} agrees with the demo in {args.demo}")
        return 0
    vae = cells(demo.calibrated, METRIC)  # the README's figure: the default objective, where the models learn
    figure = plot_model(vae[vae[F.model] == "vae"], levels(demo.calibrated), "vae", METRIC,  # as vaebench-aggregate draws it
                        runs_context(demo.calibrated))
    save(figure, REPO / FIGURE.parent, FIGURE.stem, ["png"])
    print(f"doc_numbers: wrote {', '.join(stale) or 'no doc (every number already agreed)'} and {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
