"""`vaebench-aggregate PATH...`: every result.json below the paths -> results.csv, the study's dot-plots
(one figure per model, one overview) and report.md, the sensitivity of each model in numbers.

Small pure steps, each testable on its own, one module per job:
- collect: scan (find and read), tabulate (one row per run, de-duplicated), cells (one row per model x
  optimizer x lr x latent size: what a dot shows);
- stats: sensitivity (the factorial ANOVA, vaebench.anova) / failure_rates / robustness / seed_spread / factor_effects / recon_vs_latent;
- plots: plot_model / plot_overview;  report: write_report;  cli: the command.
Every number in report.md is recomputable from results.csv: see "How the numbers are computed" in the report.
"""

from vaebench.aggregate.cli import FORMATS, PROG, aggregate, default_metric, main, parse_args
from vaebench.aggregate.collect import (AXES, CELL, Experiments, Scan, cells, experiments, levels, numeric_fields, other_settings_that_vary,
                                        read_table, runs_context, scan, successful, tabulate)
from vaebench.aggregate.fmt import config_text, fmt, fmt_lr, fmt_spread
from vaebench.aggregate.plots import COLLAPSED_LABEL, FAILURE_LABELS, FAILURE_MARKERS, plot_model, plot_overview, plt
from vaebench.aggregate.report import md_table, rho_lines, rho_meaning, rho_table, summary, write_report
from vaebench.aggregate.stats import (best_config, factor_effects, failure_rates,
                                      has_baselines, latent_against_references, learning, no_design,
                                      recon_vs_latent, robustness, seed_spread, sensitivity, spearman, within_best,
                                      worse)
from vaebench.results import LATENT_SCORES

__all__ = ["AXES", "CELL", "COLLAPSED_LABEL", "FAILURE_LABELS", "FAILURE_MARKERS", "FORMATS", "LATENT_SCORES", "PROG", "Scan",
           "aggregate", "best_config", "cells", "config_text", "default_metric", "Experiments", "experiments", "factor_effects",
           "failure_rates", "fmt", "fmt_lr", "fmt_spread", "has_baselines", "latent_against_references",
           "learning", "levels", "main", "md_table", "no_design",
           "numeric_fields", "other_settings_that_vary", "parse_args", "read_table", "runs_context", "plot_model", "plot_overview", "plt",
           "recon_vs_latent", "rho_lines", "rho_meaning", "rho_table", "robustness", "scan", "seed_spread", "sensitivity",
           "spearman", "successful", "summary", "tabulate", "within_best", "worse", "write_report"]
