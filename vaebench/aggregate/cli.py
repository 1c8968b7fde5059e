"""`vaebench-aggregate PATH...`: the command: arguments, the steps in order, what is printed, exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from vaebench.aggregate.collect import (EXPERIMENT, Scan, cells, experiments, levels, numeric_fields, read_runs,
                                        runs_context, successful)
from vaebench.aggregate.plots import plot_model, plot_overview, save
from vaebench.aggregate.report import md_table, rho_table, sensitivities, summary, write_index, write_report
from vaebench.aggregate.stats import RECON, has_baselines, learning, learning_total, recon_vs_latent
from vaebench.errors import UserError
from vaebench.results import F, RESULT_FILE

PROG = "vaebench-aggregate"
FORMATS = ("png", "svg", "pdf")


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
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file or directory: {p}")
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every vaebench user error, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Collect every result.json below PATH... into results.csv, draw the "
                     "study's dot-plots (one figure per model and an overview) and write report.md, which says "
                     "how much each hyper-parameter matters per model.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched at any depth), result.json files, or a results.csv an earlier "
                        "vaebench-aggregate wrote (its rows are taken as they are)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/aggregate)")
    parser.add_argument("--metric", help="numeric result field to compare (default: recon_vs_mean, the ratio to "
                        "the mean predictor, when every successful run recorded it, else val_recon_mse); lower is "
                        "better, except for the latent-space scores latent_ari, latent_nmi, latent_silhouette, "
                        "latent_probe_balanced_accuracy and active_units")
    parser.add_argument("--format", default="png", help="figure formats, comma-separated from png,svg,pdf "
                        "(default: png)")
    args = parser.parse_args(argv)
    args.formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        parser.error(f"--format {args.format}: use one or more of {','.join(FORMATS)}")
    first = args.paths[0]
    args.out = args.out or ((first if first.is_dir() else first.parent) / "aggregate")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; --out names a directory (created when missing)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        aggregate(args.paths, args.out, args.metric, args.formats)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a read-only or full output directory: one line, as for every output vaebench writes
        where = f": {e.filename}" if e.filename else ""
        print(f"{PROG}: error: cannot write the aggregate ({e.strerror or e}{where}); choose another --out",
              file=sys.stderr)
        sys.exit(2)

