"""`vaebench-aggregate PATH...`: every result.json below the paths -> results.csv, the study's dot-plots
(one figure per model, one overview) and report.md, the sensitivity of each model in numbers.

Small pure steps, each testable on its own, one module per job:
- collect: scan (find and read), tabulate (one row per run, de-duplicated), cells (one row per model x
  optimizer x lr x latent size: what a dot shows);
- stats: sensitivity (the factorial ANOVA, vaebench.anova) / failure_rates / robustness / seed_spread / factor_effects / recon_vs_latent;
- plots: plot_model / plot_overview;  report: write_report;  pipeline: the steps in order;  cli: the command's
  arguments (argparse only: --help and a bad argument answer at once).
Every number in report.md is recomputable from results.csv: see "How the numbers are computed" in the report.
The names below are re-exported on first use; the formatter `fmt` is `vaebench.aggregate.fmt.fmt` (the package's
`fmt` is its module).
"""

import importlib
from typing import Any

from vaebench.aggregate.cli import FORMATS, PROG, main, parse_args
from vaebench.results import LATENT_SCORES

# The steps and their names, imported on first use (pandas, seaborn, SciPy, statsmodels: ~1.7 s), so that
# `vaebench-aggregate --help` and a bad argument need none of them.
_LAZY = {name: module for module, names in {
    "pipeline": ["aggregate", "default_metric"],
    "collect": ["AXES", "CELL", "Experiments", "Scan", "cells", "experiments", "levels", "numeric_fields",
                "other_settings_that_vary", "read_table", "runs_context", "scan", "successful", "tabulate"],
    "fmt": ["config_text", "fmt_lr", "fmt_spread"],  # fmt itself: vaebench.aggregate.fmt.fmt (the module's name)
    "plots": ["COLLAPSED_LABEL", "FAILURE_LABELS", "FAILURE_MARKERS", "plot_model", "plot_overview", "plt"],
    "report": ["md_table", "rho_lines", "rho_meaning", "rho_table", "summary", "write_report"],
    "stats": ["best_config", "factor_effects", "failure_rates", "has_baselines", "latent_against_references",
              "learning", "no_design", "recon_vs_latent", "robustness", "seed_spread", "sensitivity", "spearman",
              "within_best", "worse"],
}.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vaebench.aggregate.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = sorted(["FORMATS", "LATENT_SCORES", "PROG", "main", "parse_args", *_LAZY])
