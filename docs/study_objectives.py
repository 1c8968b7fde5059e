"""The study's TCGA-11 grid under three objectives, side by side, as markdown tables (docs/study-tcga11.md).

    .venv/bin/python docs/study_objectives.py --paper PATH... --elbo PATH... [--calibrated PATH...]

Each PATH is a sweep directory (every result.json below it is read) or a results.csv that vaebench-aggregate
wrote, so the committed tables (docs/study-tcga11-rerun/*/results.csv) and new sweeps of the same grid can
be read together: --paper (vaebench -m +experiment=study_tcga11 ...), --elbo (+experiment=study_tcga11_elbo:
sigma^2 = 1/2), --calibrated (+experiment=study_tcga11_calibrated: the default objective). Every number quoted
in part 1 of the study doc comes from here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from vaebench.aggregate.collect import read_runs
from vaebench.results import DIVERGED

CELL = ["model", "optimizer", "lr", "latent_dim"]
MODELS = ["vae", "iwae", "infovae", "logcosh"]
OBJECTIVES = ["paper", "elbo", "calibrated"]


def load(paths: list[Path], objective: str) -> pd.DataFrame:
    """The runs of one objective, read as vaebench-aggregate reads them (one row per configuration)."""
    df = read_runs(paths)[1]
    df["collapsed"] = df["collapsed"].eq(True)  # null (failed runs) is not collapsed
    df["objective"] = objective
    return df


def table(df: pd.DataFrame, fmt: str = "{:.3g}") -> str:
    df = df.reset_index()
    cells = [[fmt.format(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def learned(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (objective, model), g in runs.groupby(["objective", "model"], sort=False):
        ok = g[g.status == "ok"]
        z20 = ok[ok.latent_dim == 20]
        best20 = z20.loc[z20.recon_vs_mean.idxmin()] if len(z20) else None
        rows.append({
            "objective": objective, "model": model, "runs": len(g), "ok": len(ok),
            "diverged": int((g.status == DIVERGED).sum()),
            "collapsed": f"{int(ok.collapsed.sum())} of {len(ok)}",
            "beat the mean by >= 5 %": int((ok.recon_vs_mean <= 0.95).sum()),
            "best MSE / mean": ok.recon_vs_mean.min(),
            "median active units": ok.active_units.median(),
            "median units with 90 % of the KL": ok.kl_units_90.median() if "kl_units_90" in ok else float("nan"),
            "latent 20: best MSE / PCA-20": z20.recon_vs_pca.min(),
            "its ARI (untrained, PCA)": "" if best20 is None else
            f"{best20.latent_ari:.2f} ({best20.latent_ari_untrained:.2f}, {best20.latent_ari_pca:.2f})",
            "median epochs": ok.epochs_run.median(),
        })
    return pd.DataFrame(rows).set_index(["objective", "model"])


def done_when(elbo: pd.DataFrame) -> pd.DataFrame:
    ok = elbo[(elbo.status == "ok") & (elbo.latent_dim == 20)]
    good = ok[(ok.recon_vs_mean <= 0.5) & (ok.active_units >= 10) & (ok.latent_ari > ok.latent_ari_untrained)]
    return pd.DataFrame({"latent-20 runs": ok.groupby("model").size(),
                         "MSE <= 0.5x mean, >= 10 active units, ARI above untrained": good.groupby("model").size()}
                        ).reindex(MODELS).fillna(0).astype(int)


def calibrated_bar(runs: pd.DataFrame) -> pd.DataFrame:
    """The issue's bar for the default objective: the best latent-20 run of each model against PCA-20 and the
    mean predictor, with its held-out likelihood beside probabilistic PCA's."""
    ok = runs[(runs.status == "ok") & (runs.latent_dim == 20)]
    rows = []
    for model, g in ok.groupby("model", sort=False):
        best = g.loc[g.recon_vs_mean.idxmin()]
        rows.append({"model": model, "latent-20 runs": len(g),
                     "best run": f"{best.optimizer} lr {best.lr:g} seed {best.seed}",
                     "MSE / mean": best.recon_vs_mean, "MSE / PCA-20": best.recon_vs_pca,
                     "nll_is (nats/gene)": best.val_nll_is, "PPCA-20 nll": best.baseline_ppca_nll,
                     "units with 90 % of KL": best.kl_units_90, "ARI (PCA)": f"{best.latent_ari:.2f} "
                                                                              f"({best.latent_ari_pca:.2f})",
                     "epochs (best)": f"{int(best.epochs_run)} ({int(best.best_epoch)})"})
    return pd.DataFrame(rows).set_index("model")


def latent_size(runs: pd.DataFrame) -> pd.DataFrame:
    """The latent-size verdict: Adam and RMSprop at lr 1e-3 and 1e-2, seed 0 (every objective ran those cells),
    per latent size: the median MSE / mean predictor, the best run's, the median MSE / PCA-k (PCA with as many
    components), and for the calibrated objective the median held-out likelihood beside PPCA-k's."""
    ok = runs[(runs.status == "ok") & runs.optimizer.isin(["adam", "rmsprop"]) & runs.lr.isin([1e-3, 1e-2])
              & (runs.seed == 0)]
    rows = []
    for (objective, z), g in ok.groupby(["objective", "latent_dim"], sort=False):
        rows.append({"objective": objective, "latent": z, "runs": len(g),
                     "median MSE / mean": g.recon_vs_mean.median(), "best MSE / mean": g.recon_vs_mean.min(),
                     "median MSE / PCA-k": g.recon_vs_pca.median(),
                     "median units with 90 % of KL": g.kl_units_90.median(),
                     "median active units": g.active_units.median(),
                     "median nll_is": g.val_nll_is.median(), "PPCA-k nll": g.baseline_ppca_nll.median(),
                     "median epochs": g.epochs_run.median()})
    return pd.DataFrame(rows).set_index(["objective", "latent"]).sort_index(
        level=[0, 1], key=lambda c: c.map(OBJECTIVES.index) if c.name == "objective" else c)


def claims(runs: pd.DataFrame) -> None:
    ok = runs[runs.status == "ok"]
    cells = ok.groupby(["objective", *CELL]).recon_vs_mean.mean().rename("ratio").reset_index()

    print("\n### Failures (diverged runs) by optimizer and learning rate, all models and latent sizes\n")
    print(table(runs.assign(diverged=runs.status == DIVERGED).pivot_table(
        index=["objective", "optimizer"], columns="lr", values="diverged", aggfunc="sum", fill_value=0)))

    print("\n### Best cell per optimizer (MSE / mean predictor; mean over seeds where a cell has several)\n")
    best = cells.groupby(["objective", "model", "optimizer"]).ratio.min().unstack("optimizer")
    print(table(best))

    print("\n### Adam vs RMSprop vs SGD, cell by cell (cells where all three succeeded)\n")
    pivot = cells.pivot_table(index=["objective", "model", "lr", "latent_dim"], columns="optimizer", values="ratio")
    pivot = pivot.dropna()
    wins = pd.DataFrame({"cells": pivot.groupby(["objective", "model"]).size(),
                         "RMSprop beats Adam": (pivot.rmsprop < pivot.adam).groupby(["objective", "model"]).sum(),
                         "SGD beats both": ((pivot.sgd < pivot.adam) & (pivot.sgd < pivot.rmsprop))
                         .groupby(["objective", "model"]).sum()})
    print(table(wins))

    print("\n### Best learning rate per model and optimizer (lowest mean MSE / mean over latent sizes)\n")
    by_lr = cells.groupby(["objective", "model", "optimizer", "lr"]).ratio.mean().reset_index()
    best_lr = by_lr.loc[by_lr.groupby(["objective", "model", "optimizer"]).ratio.idxmin()]
    print(table(best_lr.pivot_table(index=["objective", "model"], columns="optimizer", values="lr"), fmt="{:g}"))

    print("\n### Latent size: mean MSE / mean predictor of the successful Adam and RMSprop runs, and epochs\n")
    adaptive = ok[ok.optimizer.isin(["adam", "rmsprop"])]
    rows = []
    for (objective, model), g in adaptive.groupby(["objective", "model"], sort=False):
        row = {"objective": objective, "model": model}
        for z, gz in g.groupby("latent_dim"):
            row[f"latent {z}"] = gz.recon_vs_mean.mean()
        row["rho(latent, epochs)"] = spearmanr(g.latent_dim, g.epochs_run).statistic
        rows.append(row)
    print(table(pd.DataFrame(rows).set_index(["objective", "model"])))

    print("\n### Best configuration by reconstruction and by latent ARI\n")
    rows = []
    for (objective, model), g in ok.groupby(["objective", "model"], sort=False):
        by_mse, by_ari = g.loc[g.recon_vs_mean.idxmin()], g.loc[g.latent_ari.idxmax()]
        rows.append({"objective": objective, "model": model,
                     "best by MSE": f"{by_mse.optimizer} lr {by_mse.lr:g} z {by_mse.latent_dim}: "
                                    f"ARI {by_mse.latent_ari:.2f}",
                     "best by ARI": f"{by_ari.optimizer} lr {by_ari.lr:g} z {by_ari.latent_dim}: "
                                    f"ARI {by_ari.latent_ari:.2f}, MSE/mean {by_ari.recon_vs_mean:.2f}",
                     "untrained ARI (median)": g.latent_ari_untrained.median(),
                     "rho(MSE, ARI)": spearmanr(g.recon_vs_mean, g.latent_ari).statistic})
    print(table(pd.DataFrame(rows).set_index(["objective", "model"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", nargs="+", type=Path, required=True)
    parser.add_argument("--elbo", nargs="+", type=Path, required=True)
    parser.add_argument("--calibrated", nargs="+", type=Path, default=[])
    args = parser.parse_args()
    parts = [load(args.paper, "paper"), load(args.elbo, "elbo")]
    if args.calibrated:
        parts.append(load(args.calibrated, "calibrated"))
    runs = pd.concat(parts, ignore_index=True)
    for column in ("kl_units_90", "val_nll_is", "baseline_ppca_nll"):  # fields that older results lack
        if column not in runs:
            runs[column] = float("nan")
    order = {name: i for i, name in enumerate(OBJECTIVES + MODELS)}
    runs = runs.sort_values(["objective", "model"], key=lambda c: c.map(order))
    print(f"{len(runs)} runs: " + ", ".join(f"{o} {n}" for o, n in runs.groupby("objective", sort=False).size().items()))
    base = runs.groupby("objective").baseline_mean_mse.agg(["min", "max"])
    print(f"mean-predictor MSE on the fixed split: {base['min'].min():.5f} (every objective, every run)\n")
    print("## Did the models learn?\n")
    print(table(learned(runs)))
    print("\n## The issue's bar, under the ELBO: runs at latent 20 that learned\n")
    print(table(done_when(runs[runs.objective == "elbo"])))
    if args.calibrated:
        print("\n## The default objective: the best latent-20 run of each model\n")
        calibrated = runs[(runs.objective == "calibrated") & (runs.status == "ok")]
        print(table(calibrated_bar(calibrated)))
        variance = calibrated[calibrated.collapsed.eq(False)].decoder_variance
        print(f"\nThe learned decoder variance (mean over genes) of the {len(variance)} runs that learned: median "
              f"{variance.median():.2g}, {variance.min():.2g} to {variance.max():.2g}.")
        print("\n### Collapsed runs of the default objective, by optimizer and learning rate (of the successful runs)\n")
        collapsed = calibrated.groupby(["optimizer", "lr"]).collapsed.agg(
            lambda c: f"{int(c.sum())} of {len(c)}").unstack("lr").fillna("none (all diverged)")
        print(table(collapsed))
    print("\n## Latent size (Adam and RMSprop, lr 1e-3 and 1e-2, seed 0)\n")
    print(table(latent_size(runs)))
    print("\n## The study's claims under each objective")
    claims(runs)


if __name__ == "__main__":
    main()
