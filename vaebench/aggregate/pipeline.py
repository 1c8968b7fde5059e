"""`vaebench-aggregate`'s steps in order (read, tabulate, figures, report, the tables it prints), behind its
arguments (vaebench.aggregate.cli): pandas, seaborn, SciPy and statsmodels load only when there is work to do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from vaebench.aggregate.cli import PROG, require_paths
from vaebench.aggregate.collect import (EXPERIMENT, Scan, cells, experiments, levels, numeric_fields, read_runs,
                                        runs_context, successful)
from vaebench.aggregate.plots import plot_model, plot_overview, save
from vaebench.aggregate.report import md_table, rho_table, sensitivities, summary, write_index, write_report
from vaebench.aggregate.stats import RECON, has_baselines, learning, learning_total, recon_vs_latent
from vaebench.errors import UserError
from vaebench.results import F, RESULT_FILE


def default_metric(df: pd.DataFrame) -> str:
    """recon_vs_mean when every successful run recorded it (one scale that means the same on every data set:
    1 = the mean predictor), else val_recon_mse (results of schema 1, or a mix)."""
    if F.val_recon_mse not in df or F.recon_vs_mean not in df:
        return F.val_recon_mse
    ok = df[(df[F.status] == "ok") & np.isfinite(df[F.val_recon_mse].astype(float))]
    if len(ok) and np.isfinite(ok[F.recon_vs_mean].astype(float)).all():
        return F.recon_vs_mean
    return F.val_recon_mse


def aggregate(paths: Sequence[Path], out: Path, metric: Optional[str], formats: Sequence[str]) -> pd.DataFrame:
    """The whole command; UserError for what the user can fix. Returns the summary table it printed (with an
    `experiment` column when the runs were of several). metric None: default_metric."""
    require_paths(paths)
    scanned, df, dropped = read_runs(paths)
    for p, why in scanned.corrupt:
        print(f"{PROG}: skipped corrupt {p}: {why}", file=sys.stderr)
    if df.empty:
        raise UserError(f"no readable {RESULT_FILE} below {', '.join(map(str, paths))} "
                        f"({len(scanned.missing) + len(scanned.partial)} runs without a result yet, "
                        f"{len(scanned.corrupt)} corrupt)")
    if metric is None:
        metric = default_metric(df)
        print(f"metric: {metric} (the default for these results; --metric to choose another)")
    fields = numeric_fields(df)
    if metric not in fields:
        raise UserError(f"--metric {metric}: not a numeric result field; use one of {', '.join(fields)}")
    any_ok = bool((df[F.status] == "ok").any())
    if any_ok and successful(df, metric).empty:  # every run failed is a result, a metric no run has a mistake
        raise UserError(f"--metric {metric}: no successful run has a value for it")

    out.mkdir(parents=True, exist_ok=True)
    split = experiments(df)
    if split.differ_in:
        df.insert(0, EXPERIMENT, split.number)
    df.to_csv(out / "results.csv", index=False)
    if not any_ok:
        print(f"every run failed ({len(df)} runs): no {metric} to compare; the report and figures show the failures")
    if not split.differ_in:
        table, report, written = report_one(scanned, df, dropped, metric, paths, out, formats)
    else:
        count = int(split.number.max())
        print(f"{len(df)} runs of {count} experiments, which differ in {', '.join(split.differ_in)}: never averaged "
              "together, one report each")
        tables, reports, written = [], {}, []
        for n in range(1, count + 1):
            where, what = out / f"{EXPERIMENT}-{n}", f"Experiment {n} of {count}: {split.describe(df, n)}"
            runs = df[split.number == n]
            print(f"\n{what} ({len(runs)} runs), in {where}")
            where.mkdir(exist_ok=True)
            runs.to_csv(where / "results.csv", index=False)  # the report's numbers recompute from its own table
            sub_table, _, figures = report_one(scanned, runs, dropped, metric, paths, where, formats, what)
            tables.append(sub_table.assign(**{EXPERIMENT: n}))
            reports[n] = f"{where.name}/report.md"
            written += figures
        table = pd.concat(tables, ignore_index=True)
        report = write_index(out, scanned, df, dropped, paths, split, reports)
    print(f"\n{len(df)} runs ({dropped} duplicates dropped); not counted: {len(scanned.corrupt)} corrupt, "
          f"{len(scanned.partial)} interrupted, {len(scanned.missing)} without a result yet")
    print(f"wrote {out / 'results.csv'}, {report} and {len(written)} figures in {out}")
    return table


def report_one(scanned: Scan, df: pd.DataFrame, dropped: int, metric: str, paths: Sequence[Path], out: Path,
               formats: Sequence[str], experiment: Optional[str] = None) -> tuple[pd.DataFrame, Path, list[Path]]:
    """Figures and report.md of the runs of one experiment, and the tables printed."""
    lvl = levels(df)
    all_cells = cells(df, metric)
    embed = next((f for f in formats if f in ("png", "svg")), None)  # Markdown cannot show a PDF inline
    figures: dict[str, Optional[str]] = {}
    written = []
    context = runs_context(df)  # every title says which objective and data set it shows
    for model in lvl[F.model]:
        written += save(plot_model(all_cells[all_cells[F.model] == model], lvl, model, metric, context), out,
                        f"dotplot_{model}", formats)
        figures[model] = f"dotplot_{model}.{embed or formats[0]}"
    if len(lvl[F.model]) > 1:  # with one model the overview would repeat its figure
        written += save(plot_overview(all_cells, lvl, metric, context), out, "overview", formats)
        figures["overview"] = f"overview.{embed or formats[0]}"
    anovas = sensitivities(df, metric, lvl[F.model])
    table = summary(df, all_cells, metric, lvl, anovas)
    corr = recon_vs_latent(df)
    report = write_report(out, scanned, df, dropped, metric, paths, figures, table, corr, experiment, anovas)

    if has_baselines(df):
        print(f"Did the models learn? ({F.recon_vs_mean}: 1 = the mean predictor; details in report.md)")
        print(learning_total(df))
        print(md_table(learning(df)) + "\n")
    print(md_table(table))
    if not corr.empty:
        print(f"\nSpearman rho, {RECON} against latent scores (negative: better reconstruction, better latent space):")
        print(md_table(rho_table(corr), index=True))
    return table, report, written
