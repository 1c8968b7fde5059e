"""The study's claims (paper.txt sections 5 and 7) against a sweep's results.csv, as markdown tables.

    vaebench-aggregate outputs/study-tcga11                       # writes outputs/study-tcga11/aggregate/results.csv
    .venv/bin/python docs/study_claims.py outputs/study-tcga11/aggregate/results.csv

Every number in docs/study-tcga11.md comes from this script or from the aggregate's report.md.
"""

from __future__ import annotations

import sys

import pandas as pd
from scipy.stats import spearmanr

from vaebench.aggregate.collect import read_table

CELL = ["model", "optimizer", "lr", "latent_dim"]


def table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    df = df.reset_index()
    cells = [[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(path: str) -> None:
    runs = read_table(path)  # tables written before issue 16 say "nan" for a diverged run: read as "diverged"
    ok = runs[runs.status == "ok"]
    # A cell counts only when every seed of it succeeded, as in the aggregate's report.
    complete = runs.groupby(CELL).status.transform(lambda s: (s == "ok").all())
    cells = runs[complete].groupby(CELL).val_recon_mse.mean().rename("mse").reset_index()

    print("## Runs by status\n")
    print(table(runs.pivot_table(index=["model", "optimizer"], columns="status", values="seed", aggfunc="count",
                                 fill_value=0)))
    failed = runs[runs.status != "ok"]
    if len(failed):
        print("\n### Where runs failed (count of runs, over seeds and latent sizes)\n")
        print(table(failed.pivot_table(index=["model", "optimizer", "lr"], columns="status", values="seed",
                                       aggfunc="count", fill_value=0)))
        print("\n### Failed runs by latent size (all models, optimizers and learning rates)\n")
        print(table(failed.pivot_table(index="optimizer", columns="latent_dim", values="seed", aggfunc="count",
                                       fill_value=0)))
    big = runs[(runs.model == "infovae") & (runs.latent_dim == 200)]
    print(f"\nInfoVAE at latent 200: {len(big)} runs, {(big.status == 'oom').sum()} out of memory, peak memory "
          f"{big.peak_memory_mb.max():.0f} MB at most ({big.peak_memory_kind.iloc[0]}).")

    print("\n## Best learning rate (claims: 0.001 in section 5, 0.01 in section 7)\n")
    print("Mean validation MSE over the latent sizes and seeds whose runs all succeeded, per learning rate "
          "(blank: no such cell); the best is marked *.\n")
    by_lr = cells.groupby(["model", "optimizer", "lr"]).mse.mean().unstack("lr")
    marked = by_lr.astype(object)
    for idx, row in by_lr.iterrows():
        marked.loc[idx] = ["" if pd.isna(v) else f"{v:.4g}*" if v == row.min() else f"{v:.4g}" for v in row]
    print(table(marked))
    best_cell = cells.loc[cells.groupby(["model", "optimizer"]).mse.idxmin()].set_index(["model", "optimizer"])
    print("\nBest cell (learning rate and latent size) per model and optimizer:\n")
    print(table(best_cell))

    print("\n## Optimizers (claims: Adam and RMSprop beat SGD; RMSprop slightly better than Adam; "
          "Adam/RMSprop less sensitive)\n")
    spread = cells.groupby(["model", "optimizer"]).mse.agg(best="min", median="median", worst="max")
    spread["worst/best"] = spread["worst"] / spread["best"]
    print(table(spread))
    pivot = cells.pivot_table(index=["model", "lr", "latent_dim"], columns="optimizer", values="mse")
    wins = pd.DataFrame({"rmsprop beats adam": (pivot.rmsprop < pivot.adam).groupby("model").sum(),
                         "adam beats rmsprop": (pivot.adam < pivot.rmsprop).groupby("model").sum(),
                         "sgd beats both": ((pivot.sgd < pivot.adam) & (pivot.sgd < pivot.rmsprop))
                         .groupby("model").sum()})
    print("\nCells (learning rate x latent size) where one optimizer has the lower mean MSE:\n")
    print(table(wins))

    print("\n## Latent size (claims: little effect on the loss; more epochs at larger sizes; "
          "lower sizes favoured)\n")
    rows = []
    for model, g in ok.groupby("model"):
        rho_epochs = spearmanr(g.latent_dim, g.epochs_run).statistic
        rho_mse = spearmanr(g.latent_dim, g.val_recon_mse).statistic
        by_size = g.groupby("latent_dim").val_recon_mse.mean()
        rows.append({"model": model, "rho(latent, epochs)": rho_epochs, "rho(latent, MSE)": rho_mse,
                     "best latent size (mean MSE)": int(by_size.idxmin()),
                     "mean epochs at 10": g[g.latent_dim == 10].epochs_run.mean(),
                     "mean epochs at 200": g[g.latent_dim == 200].epochs_run.mean()})
    print(table(pd.DataFrame(rows).set_index("model")))

    latent = [c for c in ("latent_ari", "latent_probe_balanced_accuracy") if c in ok and ok[c].notna().any()]
    if latent:
        print("\n## Latent space: the best configuration by reconstruction and by latent scores\n")
        means = runs[complete].groupby(CELL)[["val_recon_mse", *latent]].mean().reset_index()
        rows = []
        for model, g in means.groupby("model"):
            by_mse = g.loc[g.val_recon_mse.idxmin()]
            row = {"model": model, "best by MSE": f"{by_mse.optimizer} lr {by_mse.lr:g} z {by_mse.latent_dim}"}
            for c in latent:
                best = g.loc[g[c].idxmax()]
                row[f"best by {c}"] = f"{best.optimizer} lr {best.lr:g} z {best.latent_dim} ({best[c]:.3f})"
                row[f"{c} of the best-MSE cell"] = f"{by_mse[c]:.3f}"
            rows.append(row)
        print(table(pd.DataFrame(rows).set_index("model")))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: study_claims.py RESULTS_CSV")
    main(sys.argv[1])
