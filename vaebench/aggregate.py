"""`vaebench-aggregate PATH...`: every result.json below the paths -> results.csv, the study's dot-plots
(one figure per model, one overview) and report.md, the sensitivity of each model in numbers.

Small pure steps, each testable on its own: scan (find and read), tabulate (one row per run, de-duplicated),
cells (one row per model x optimizer x lr x latent size: what a dot shows), eta_squared / failure_rates /
robustness / seed_spread / factor_effects / recon_vs_latent (the report's numbers), plot_model / plot_overview,
write_report.
Every number in report.md is recomputable from results.csv: see "How the numbers are computed" in the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: sweeps run on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from vaebench.errors import UserError  # noqa: E402
from vaebench.results import (BOUNDED_SCORES, FAILED, FINISHED, HIGHER_IS_BETTER, LATENT_SCORES,  # noqa: E402
                               METRICS_FILE, NULLABLE_NUMBERS, REQUIRED, RESULT_FILE, read_result)

PROG = "vaebench-aggregate"
AXES = ("optimizer", "lr", "latent_dim")  # the study's grid; one figure panel per optimizer
CELL = ("model", *AXES)  # one dot
MODEL_ORDER = ("vae", "iwae", "infovae", "logcosh")  # the study's order; others follow alphabetically
OPTIMIZER_ORDER = ("adam", "rmsprop", "sgd")
LEAD_COLUMNS = ("model", "optimizer", "lr", "latent_dim", "seed", "status", "val_recon_mse", "epochs_run",
                "converged", "stop_reason", "failed_epoch", "error")
NOT_METRICS = ("schema", "lr", "latent_dim", "seed")  # numeric, but axes or bookkeeping
FORMATS = ("png", "svg", "pdf")
WITHIN = 0.10  # robustness: a configuration within 10 % of the best one
# Failures are drawn in black shapes, never in colour, so they cannot be read as a metric value.
FAILURE_MARKERS = {"nan": dict(marker="X", facecolor="black", edgecolor="black"),
                   "oom": dict(marker="s", facecolor="none", edgecolor="black"),
                   "error": dict(marker="^", facecolor="dimgrey", edgecolor="black")}
FAILURE_LABELS = {"nan": "nan: loss or weights became NaN/Inf", "oom": "oom: out of memory",
                  "error": "error: any other exception"}
CMAP = "viridis"  # perceptually uniform and colour-blind safe
# Bounded scores, and ARI and silhouette can be <= 0 (worse than chance): never on a log scale, not even when a
# sweep's values happen to be positive, so that every sweep's figure and numbers read the same way.
LINEAR = BOUNDED_SCORES
RECON = "val_recon_mse"  # the reconstruction loss that the latent scores are compared with: it compares across models
STRONG, MODERATE = 0.7, 0.4  # |Spearman rho| from which a relation is called strong / moderate (conventional cut-offs)


# ---------------------------------------------------------------------------------------------- find / read

@dataclass
class Scan:
    """What was found below the paths: readable results, and every file or run dir that gave none."""
    results: list[dict[str, Any]] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)  # result.json that cannot be used
    partial: list[Path] = field(default_factory=list)  # an interrupted atomic write: temp file, no result
    missing: list[Path] = field(default_factory=list)  # a run dir without result: still running, or killed


def scan(paths: Sequence[Path]) -> Scan:
    """Find every result.json below the paths (any depth) and read it; never fails on a bad file."""
    found = Scan()
    for result_file, state in _walk(paths):
        if state == "partial":
            found.partial.append(result_file.parent)
        elif state == "missing":
            found.missing.append(result_file.parent)
        else:
            result = read_result(result_file.parent)
            lacking = [k for k in REQUIRED if result is not None and result.get(k) is None]
            if result is None:
                found.corrupt.append((result_file, "not a whole vaebench result (bad JSON or unknown status)"))
            elif lacking:
                found.corrupt.append((result_file, f"lacks {', '.join(lacking)}"))
            else:
                stat = result_file.stat()
                found.results.append({**result, "run_dir": str(result_file.parent),
                                      "_mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc)
                                      .isoformat(timespec="seconds")})
    return found


def _walk(paths: Sequence[Path]):
    """(result.json path, state) for every run dir: state 'result', 'partial' or 'missing'."""
    seen: set[Path] = set()  # overlapping PATHs (outputs/ and outputs/demo) must not count a run twice

    def first_time(result_file: Path) -> bool:
        key = result_file.resolve()
        fresh = key not in seen
        seen.add(key)
        return fresh

    for root in paths:
        if root.is_file():
            if first_time(root):
                yield root, "result"
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != ".hydra")
            here = Path(dirpath)
            if RESULT_FILE in filenames:
                state = "result"
            elif any(f.startswith(f".{RESULT_FILE}.") and f.endswith(".tmp") for f in filenames):
                state = "partial"
            elif METRICS_FILE in filenames or os.path.isfile(here / ".hydra" / "config.yaml"):
                state = "missing"  # Hydra made the job's dir; the job has not ended
            else:
                continue
            if first_time(here / RESULT_FILE):
                yield here / RESULT_FILE, state

# ---------------------------------------------------------------------------------------------- tabulate

def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, into)
    elif isinstance(value, list):
        into[prefix] = json.dumps(value)  # one cell per setting; lists (hidden_dims, betas) stay readable
    else:
        into[prefix] = value


def tabulate(results: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """One row per run (config flattened into config.* columns), de-duplicated; and how many were dropped."""
    rows = []
    for r in results:
        row: dict[str, Any] = {}
        _flatten("", r, row)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df, 0
    if "config_hash" not in df:
        df["config_hash"] = None
    # A resumed sweep written to another dir leaves several results for one configuration. Keep one per
    # config_hash: a finished one (ok/nan/oom) before an `error` (resume retries errors, so an error is
    # superseded by any finished run), and among those the newest, by finished_at (file mtime if absent).
    # A result without config_hash (not written by vaebench.task) is its own identity: its run dir.
    identity = df["config_hash"].fillna(df["run_dir"])
    finished = df["status"].isin(FINISHED)
    when = df["finished_at"].fillna(df["_mtime"]) if "finished_at" in df else df["_mtime"]
    order = pd.DataFrame({"identity": identity, "finished": finished, "when": when, "i": range(len(df))})
    keep = order.sort_values(["finished", "when", "i"]).drop_duplicates("identity", keep="last")["i"]
    df = df.iloc[sorted(keep)].drop(columns="_mtime")
    dropped = len(rows) - len(df)
    for col in NULLABLE_NUMBERS:  # all null (failed_epoch when nothing failed) is still a numeric field
        if col in df:
            df[col] = pd.to_numeric(df[col])
    df["lr"] = df["lr"].astype(float)
    df["latent_dim"] = df["latent_dim"].astype(int)
    df["seed"] = df["seed"].astype(int)
    df = _sort(df)
    lead = [c for c in LEAD_COLUMNS if c in df]
    rest = [c for c in df.columns if c not in lead and c != "run_dir" and not c.startswith("config.")]
    config = [c for c in df.columns if c.startswith("config.")]
    return df[lead + rest + config + ["run_dir"]].reset_index(drop=True), dropped


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    rank_model = {m: i for i, m in enumerate(_ordered(df["model"], MODEL_ORDER))}
    rank_opt = {o: i for i, o in enumerate(_ordered(df["optimizer"], OPTIMIZER_ORDER))}
    keys = pd.DataFrame({"m": df["model"].map(rank_model), "o": df["optimizer"].map(rank_opt),
                         "lr": df["lr"], "z": df["latent_dim"], "s": df["seed"]})
    return df.loc[keys.sort_values(["m", "o", "lr", "z", "s"], kind="stable").index]


def numeric_fields(df: pd.DataFrame) -> list[str]:
    """Result fields usable as --metric: top-level numbers (not config.*, not the grid's axes)."""
    return [c for c in df.columns if "." not in c and c not in NOT_METRICS and c != "run_dir"
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def other_settings_that_vary(df: pd.DataFrame) -> list[str]:
    """config.* keys that differ within one model and optimizer besides lr, latent_dim and seed: runs of
    different experiments (another data set, max_epochs, ...) would be averaged into one dot."""
    skip = {"config.lr", "config.latent_dim", "config.seed", "config.resume", "config.trainer.threads",
            "config.device"}
    config = [c for c in df.columns if c.startswith("config.") and c not in skip]
    varying = set()
    for _, group in df.groupby(["model", "optimizer"]):
        varying.update(c for c in config if group[c].astype(str).nunique() > 1)
    return sorted(varying)


# ---------------------------------------------------------------------------------------------- cells

def successful(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Runs that ended `ok` with a finite value of the metric: the runs the sensitivity numbers use."""
    return df[(df["status"] == "ok") & np.isfinite(df[metric].astype(float))]


def cells(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """What each dot shows, one row per model x optimizer x lr x latent_dim: the mean and spread of the
    metric over the seeds that succeeded, their mean epochs, whether any hit the epoch limit, and the
    count of each failure. Cells whose every run failed are rows too (mean NaN, `failure` set)."""
    runs = df[list(CELL) + ["status", "seed", metric, "epochs_run"]].copy()
    runs["ok"] = (runs["status"] == "ok") & np.isfinite(runs[metric].astype(float))
    runs["value"] = runs[metric].where(runs["ok"]).astype(float)
    runs["epochs"] = runs["epochs_run"].where(runs["ok"]).astype(float)
    converged = df["converged"] if "converged" in df else pd.Series(True, index=df.index)
    runs["hit_limit"] = runs["ok"] & (converged != True)  # noqa: E712 - NaN (field absent) is not True
    for status in FAILED:
        runs[status] = runs["status"] == status
    grouped = runs.groupby(list(CELL), sort=False)
    out = grouped.agg(runs=("status", "size"), n_ok=("ok", "sum"), mean=("value", "mean"), sd=("value", "std"),
                      epochs=("epochs", "mean"), hit_limit=("hit_limit", "any"),
                      **{f"n_{s}": (s, "sum") for s in FAILED}).reset_index()
    out["n_failed"] = out[[f"n_{s}" for s in FAILED]].sum(axis=1)
    out["spread"] = out["sd"] / out["mean"].abs()  # seed-to-seed sd relative to the mean; NaN for one seed
    # The failure a cell is marked with: the most frequent one (ties: nan before oom before error).
    counts = out[[f"n_{s}" for s in FAILED]].to_numpy()
    out["failure"] = [FAILED[int(np.argmax(c))] if c.sum() else None for c in counts]
    return out


def levels(df: pd.DataFrame) -> dict[str, list]:
    """The category order on each axis, shared by every figure so that panels line up."""
    return {"model": _ordered(df["model"], MODEL_ORDER), "optimizer": _ordered(df["optimizer"], OPTIMIZER_ORDER),
            "lr": sorted(df["lr"].unique()), "latent_dim": sorted(df["latent_dim"].unique())}


# ---------------------------------------------------------------------------------------------- numbers

def is_log_scale(values: pd.Series, metric: str) -> bool:
    """ln(metric) only when every value is positive (losses can be negative) and the metric is not a score
    that can be <= 0; else the metric itself."""
    return metric not in LINEAR and len(values) > 0 and bool((values > 0).all())


def analysed(values: pd.Series, metric: str) -> pd.Series:
    values = values.astype(float)
    return np.log(values) if is_log_scale(values, metric) else values


def eta_squared(ok: pd.DataFrame, metric: str, factors: Sequence[str]) -> dict[str, float]:
    """Main-effects variance decomposition: for each factor, the share of the total sum of squares of
    y = ln(metric) that lies between its levels, SS_between / SS_total, with SS_between = sum over levels
    of n_level * (mean_level - mean)^2. On a balanced grid the shares and the rest (interactions and
    noise) add up to 1."""
    y = analysed(ok[metric], metric)
    total = float(((y - y.mean()) ** 2).sum())
    shares = {}
    for f in factors:
        by = y.groupby(ok[f])
        between = float((by.size() * (by.mean() - y.mean()) ** 2).sum())
        shares[f] = between / total if total > 0 else math.nan
    return shares


def is_balanced(ok: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Every combination of the factors' levels holds the same number of successful runs."""
    full = math.prod(ok[f].nunique() for f in factors)
    sizes = ok.groupby(list(factors)).size()
    return len(sizes) == full and sizes.nunique() == 1


def failure_rates(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per level of `by`: runs, each ending, and the share that did not end `ok`."""
    table = pd.crosstab(runs[by], runs["status"]).reindex(columns=["ok", *FAILED], fill_value=0)
    table.insert(0, "runs", table.sum(axis=1))
    table["failure rate"] = 1 - table["ok"] / table["runs"]
    return table


def worse(metric: str) -> int:
    """+1 when a larger value of the metric is worse (losses), -1 when it is better (latent scores)."""
    return -1 if metric in HIGHER_IS_BETTER else 1


def best_config(model_cells: pd.DataFrame, metric: str) -> Optional[pd.Series]:
    """The cell with the best mean metric among cells where every run (every seed) succeeded."""
    clean = model_cells[model_cells["n_ok"] == model_cells["runs"]]
    return None if clean.empty else clean.loc[(worse(metric) * clean["mean"]).idxmin()]


def within_best(model_cells: pd.DataFrame, best: float, metric: str) -> pd.Series:
    """Cells that count as robust: every run succeeded and the mean is within 10 % of the best."""
    s = worse(metric)
    return (model_cells["n_ok"] == model_cells["runs"]) & (s * model_cells["mean"] <= s * best + WITHIN * abs(best))


def robustness(model_cells: pd.DataFrame, best: float, optimizers: Sequence[str], metric: str) -> pd.DataFrame:
    rows = []
    for opt in optimizers:
        c = model_cells[model_cells["optimizer"] == opt]
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
    present = [m for m in LATENT_SCORES if m in df]
    if RECON not in df or not present:
        return pd.DataFrame(rows, columns=columns)
    for model in levels(df)["model"]:
        runs = df[(df["model"] == model) & (df["status"] == "ok")]
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


# ---------------------------------------------------------------------------------------------- figures

def fmt_lr(lr: float) -> str:
    """1e-05 -> '1e-5', 0.003 -> '3e-3': the study's labels, shorter than Python's."""
    exponent = math.floor(round(math.log10(lr), 9))
    mantissa = round(lr / 10 ** exponent, 6)
    return f"{mantissa:g}e{exponent}"


def direction(metric: str) -> str:
    return "lower is better" if worse(metric) > 0 else "higher is better"


def fmt_spread(cell: pd.Series, relative: bool) -> str:
    """A cell's seed-to-seed sd: relative to its mean where the metric is on a log scale (a loss); the sd
    itself on a linear scale, where a mean near 0 (an ARI of a poor latent space) makes a ratio meaningless."""
    if not relative:
        return f"±{cell['sd']:.2g}"
    ratio = cell["spread"]
    return f"±{ratio:.1%}" if ratio < 0.095 else f"±{ratio:.0%}"  # seeds often agree to within 1 %


class PlainLogFormatter(LogFormatter):
    """Colour bar labels as 0.07, not 7 x 10^-2; which ticks get a label is still LogFormatter's choice."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


def fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


@dataclass
class Scales:
    """One colour scale and one size scale per figure, so that every panel of it reads the same."""
    norm: Normalize
    log: bool
    cmap: str
    epochs_lo: float
    epochs_hi: float
    small: float = 25.0  # marker area in points^2
    large: float = 320.0

    def size(self, epochs):
        if self.epochs_hi <= self.epochs_lo:
            return np.full(np.shape(epochs), (self.small + self.large) / 2)
        t = (np.asarray(epochs, dtype=float) - self.epochs_lo) / (self.epochs_hi - self.epochs_lo)
        # The legend's reference sizes are whole epochs and can round to just outside a range of seed means
        # (2.5 -> 2): clipped, so that no area goes negative.
        return self.small + np.clip(t, 0, 1) * (self.large - self.small)


def scales_for(figure_cells: pd.DataFrame, metric: str) -> Scales:
    values = figure_cells["mean"].dropna()
    log = is_log_scale(values, metric)
    lo, hi = (values.min(), values.max()) if len(values) else (1.0, 1.0)
    if lo == hi:  # a single value still needs a scale that contains it
        lo, hi = (lo / 1.1, hi * 1.1) if log else (lo - 1, hi + 1)
    epochs = figure_cells["epochs"].dropna()
    cmap = CMAP if worse(metric) > 0 else f"{CMAP}_r"  # dark is always the good end
    return Scales(norm=LogNorm(lo, hi) if log else Normalize(lo, hi), log=log, cmap=cmap,
                  epochs_lo=epochs.min() if len(epochs) else 0, epochs_hi=epochs.max() if len(epochs) else 0)


def draw_panel(ax, panel_cells: pd.DataFrame, lvl: dict[str, list], scales: Scales) -> None:
    """One optimizer of one model: x = latent size, y = learning rate, both as ordered categories."""
    x_of = {v: i for i, v in enumerate(lvl["latent_dim"])}
    y_of = {v: i for i, v in enumerate(lvl["lr"])}
    c = panel_cells.assign(x=panel_cells["latent_dim"].map(x_of), y=panel_cells["lr"].map(y_of))
    dots = c[c["n_ok"] > 0]
    if len(dots):
        ax.scatter(dots["x"], dots["y"], c=dots["mean"], cmap=scales.cmap, norm=scales.norm,
                   s=scales.size(dots["epochs"]),
                   edgecolors=np.where(dots["hit_limit"], "black", "white"),
                   linewidths=np.where(dots["hit_limit"], 2.0, 0.5), zorder=3, label="ok")
    for status, style in FAILURE_MARKERS.items():
        alone = c[(c["n_ok"] == 0) & (c["failure"] == status)]  # every run of the cell failed
        mixed = c[(c["n_ok"] > 0) & (c[f"n_{status}"] > 0)]  # some seeds failed: a small mark beside the dot
        if len(alone):
            ax.scatter(alone["x"], alone["y"], s=110, linewidths=1.5, zorder=4, label=status,
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
        if len(mixed):
            ax.scatter(mixed["x"] + 0.3, mixed["y"] + 0.3, s=30, linewidths=1, zorder=4, label=f"{status} (some seeds)",
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
    for _, cell in c[c["n_ok"] >= 2].iterrows():  # several seeds: the spread under the mean's dot
        ax.annotate(fmt_spread(cell, scales.log), (cell["x"], cell["y"]), xytext=(0, -11), textcoords="offset points",
                    ha="center", va="top", fontsize=6.5, color="0.25", zorder=5)
    ax.set_xticks(range(len(lvl["latent_dim"])), [str(v) for v in lvl["latent_dim"]])
    ax.set_yticks(range(len(lvl["lr"])), [fmt_lr(v) for v in lvl["lr"]])
    ax.set_xlim(-0.6, len(lvl["latent_dim"]) - 0.4)
    ax.set_ylim(-0.6, len(lvl["lr"]) - 0.4)


def legend_handles(figure_cells: pd.DataFrame, scales: Scales) -> list:
    """Size legend (epochs), then only the markings that occur in this figure."""
    handles = []
    epochs = figure_cells["epochs"].dropna()
    if len(epochs):
        for e in sorted({int(round(v)) for v in np.linspace(epochs.min(), epochs.max(), 3)}):
            handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="0.6", markeredgecolor="white",
                                  markersize=math.sqrt(float(scales.size(e))), label=f"{e} epochs"))
    if figure_cells["hit_limit"].any():
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="0.6", markeredgecolor="black",
                              markeredgewidth=2, markersize=10, label="hit epoch limit, not converged"))
    for status, style in FAILURE_MARKERS.items():
        if (figure_cells[f"n_{status}"] > 0).any():
            handles.append(Line2D([], [], ls="", marker=style["marker"], markerfacecolor=style["facecolor"],
                                  markeredgecolor=style["edgecolor"], markersize=9, label=FAILURE_LABELS[status]))
    if ((figure_cells["n_ok"] > 0) & (figure_cells["n_failed"] > 0)).any():
        handles.append(Line2D([], [], ls="", label="small mark beside a dot:\nsome seeds failed"))
    if (figure_cells["n_ok"] >= 2).any():
        handles.append(Line2D([], [], ls="", label="±: seed-to-seed sd" + (" / mean" if scales.log else "")))
    return handles


def _grid_figure(figure_cells: pd.DataFrame, lvl: dict[str, list], rows: list[str], metric: str, title: str):
    """Rows of models x columns of optimizers, one colour scale, one size scale, legends on the right."""
    scales = scales_for(figure_cells, metric)
    ncols = len(lvl["optimizer"])
    panel_w = max(2.2, 0.6 + 0.55 * len(lvl["latent_dim"]))  # inches; room for the title of a narrow grid
    panel_h = max(2.2, 0.6 + 0.45 * len(lvl["lr"]))  # room for the colour bar's label
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(rows), ncols, squeeze=False, sharex=True, sharey=True, layout="constrained",
                                 figsize=(1.0 + panel_w * ncols + 3.4, 0.9 + panel_h * len(rows)))
        for i, model in enumerate(rows):
            for j, opt in enumerate(lvl["optimizer"]):
                ax = axes[i][j]
                panel = figure_cells[(figure_cells["model"] == model) & (figure_cells["optimizer"] == opt)]
                draw_panel(ax, panel, lvl, scales)
                failed = int(panel["n_failed"].sum())
                ax.set_title(f"{model} · {opt}" + (f" ({failed} failed)" if failed else ""), fontsize=10)
                if i == len(rows) - 1:
                    ax.set_xlabel("latent size")
                if j == 0:
                    ax.set_ylabel("learning rate")
        mappable = plt.cm.ScalarMappable(norm=scales.norm, cmap=scales.cmap)
        bar = fig.colorbar(mappable, ax=axes, shrink=0.9 if len(rows) > 1 else 1.0, pad=0.02)
        # Two lines: one is longer than a one-row figure is tall.
        bar.set_label(f"mean {metric}\n({scale_text(figure_cells['mean'].dropna(), metric, scales.log)})")
        if scales.log:
            bar.ax.yaxis.set_major_formatter(PlainLogFormatter())
            bar.ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        fig.legend(handles=legend_handles(figure_cells, scales), loc="outside right center", fontsize=8,
                   frameon=False, labelspacing=1.2, borderpad=0.2)
        # A narrow grid (one optimizer, two latent sizes) is narrower than the title: wrapped, not clipped.
        fig.suptitle("\n".join(textwrap.wrap(title, width=int(fig.get_figwidth() * 10))), fontsize=11)
    return fig


def scale_text(values: pd.Series, metric: str, log: bool) -> str:
    """Which colour scale, and why not log when it is not: a reader must not take a linear bar for a log one."""
    if log:
        return "log scale"
    if metric in LINEAR:
        return "linear scale: a score that can be ≤ 0"
    return "linear scale: values ≤ 0"


def plot_model(model_cells: pd.DataFrame, lvl: dict[str, list], model: str, metric: str):
    """The study's figure for one model: one panel per optimizer."""
    return _grid_figure(model_cells, lvl, [model], metric,
                        f"{model}: colour = {metric} ({direction(metric)}), size = epochs to converge")


def plot_overview(all_cells: pd.DataFrame, lvl: dict[str, list], metric: str):
    """Every model on one colour scale, so that models compare at a glance."""
    return _grid_figure(all_cells, lvl, lvl["model"], metric,
                        f"all models: colour = {metric} ({direction(metric)}, one scale), size = epochs to converge")


def save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for f in formats:
        path = out / f"{stem}.{f}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------- report

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


def config_text(cell: pd.Series) -> str:
    return f"{cell['optimizer']}, lr {fmt_lr(cell['lr'])}, latent {int(cell['latent_dim'])}"


def factors_for(ok: pd.DataFrame) -> list[str]:
    return list(AXES) + (["seed"] if ok["seed"].nunique() > 1 else [])


def summary(df: pd.DataFrame, all_cells: pd.DataFrame, metric: str, lvl: dict[str, list]) -> pd.DataFrame:
    """One row per model: the table the command prints and the report opens with."""
    rows = []
    for model in lvl["model"]:
        runs = df[df["model"] == model]
        ok = successful(runs, metric)
        eta = eta_squared(ok, metric, factors_for(ok)) if len(ok) else {}
        best = best_config(all_cells[all_cells["model"] == model], metric)
        rows.append({"model": model, "runs": len(runs), "ok": int((runs["status"] == "ok").sum()),
                     "failed": int(runs["status"].isin(FAILED).sum()),
                     "not converged": int(((runs["status"] == "ok") & (runs.get("converged") != True)).sum()),  # noqa: E712
                     **{f"η² {f}": eta.get(f, math.nan) for f in ("optimizer", "lr", "latent_dim", "seed")},
                     "best configuration": config_text(best) if best is not None else "—",
                     f"best {metric}": best["mean"] if best is not None else math.nan})
    return pd.DataFrame(rows)


def rho_table(corr: pd.DataFrame) -> pd.DataFrame:
    """(model, over) x latent score: rho and its n, the configuration means' row first where there is one."""
    text = [f"{fmt(r.rho, 2)} (n {r.n})" for r in corr.itertuples()]
    table = corr.assign(text=text).pivot(index=["model", "over"], columns="latent metric", values="text")
    rows = list(dict.fromkeys(zip(corr["model"], corr["over"])))
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
                  figure: Optional[str], corr: pd.DataFrame) -> list[str]:
    runs = df[df["model"] == model]
    ok = successful(runs, metric)
    y_name = f"ln({metric})" if is_log_scale(ok[metric], metric) else metric
    lines = [f"## {model}", ""]
    if figure:
        lines += [figure_link(f"{model}: dot-plot", figure), ""]

    lines += [f"### What explains the variation of {y_name}", ""]
    if len(ok) < 2:
        lines += ["Fewer than two successful runs: nothing to decompose.", ""]
    else:
        factors = factors_for(ok)
        eta = eta_squared(ok, metric, factors)
        table = pd.DataFrame({"factor": factors, "levels": [ok[f].nunique() for f in factors],
                              "η²": [eta[f] for f in factors]})
        rest = 1 - sum(v for v in eta.values() if np.isfinite(v))
        table.loc[len(table)] = ["rest (interactions, noise)", "", rest]
        balanced = is_balanced(ok, factors)
        lines += [f"Over {len(ok)} successful runs."
                  + ("" if balanced else " The successful runs do not fill the grid evenly (failed or missing "
                     "runs), so the factors overlap and the shares need not add up to 1; the rest is only a "
                     "rough guide."), "", md_table(table), ""]

    lines += ["### Failures", ""]
    lines += ["Per optimizer:", "", md_table(failure_rates(runs, "optimizer"), index=True), ""]
    by_lr = failure_rates(runs, "lr")
    by_lr.index = [fmt_lr(v) for v in by_lr.index]
    by_lr.index.name = "lr"
    lines += ["Per learning rate:", "", md_table(by_lr, index=True), ""]
    hit = runs[(runs["status"] == "ok") & (runs.get("converged") != True)]  # noqa: E712
    lines += [f"{len(hit)} of {int((runs['status'] == 'ok').sum())} successful runs hit the epoch limit "
              "without converging.", ""]

    lines += ["### Best configuration and robustness", ""]
    best = best_config(model_cells, metric)
    if best is None:
        lines += ["No configuration in which every run succeeded.", ""]
    else:
        seeds = int(best["n_ok"])
        bound = best["mean"] + worse(metric) * WITHIN * abs(best["mean"])
        lines += [f"Best: **{config_text(best)}**, {metric} = {fmt(best['mean'])}"
                  + (f" (mean of {seeds} seeds, {fmt_spread(best, y_name != metric)})" if seeds > 1 else "")
                  + f", {fmt(best['epochs'], 3)} epochs.", "",
                  f"Configurations within 10 % of the best ({metric} {'<=' if worse(metric) > 0 else '>='} "
                  f"{fmt(bound)}) with every run successful, per optimizer:", "",
                  md_table(robustness(model_cells, best["mean"], lvl["optimizer"], metric)), ""]

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
    lines += rho_lines(corr[corr["model"] == model])
    return lines


METHOD = """## How the numbers are computed

From results.csv (one row per run, already de-duplicated), per model:

- Successful runs: `status == ok` and a finite {metric}. y = ln({metric}) when every successful value is positive,
  else {metric} itself; a latent score (which can be ≤ 0) is always y itself.
- η² of a factor (optimizer, lr, latent_dim, and seed when there are several): sum over the factor's levels of
  n_level × (mean y of the level − mean y)², divided by the sum over the runs of (y − mean y)².
- Failure rate: runs whose status is nan, oom or error, over all runs of that optimizer or learning rate.
- A configuration is optimizer × lr × latent_dim; its value is the mean {metric} over its successful seeds. The
  best configuration is the {extreme} such mean among configurations where every run succeeded. A configuration is
  within 10 % of it when every run succeeded and its mean is {bound}.
- Seed sd: sqrt(Σ (y − mean y of its configuration)² / Σ (runs of the configuration − 1)), over configurations with
  two or more successful seeds. Configuration sd: sample sd of the configurations' mean y. Effect of a factor:
  largest minus smallest mean y of its levels (over all successful runs of the level), then divided by the seed sd.
- ± in the figures: sample sd of {metric} over a configuration's successful seeds; on a log colour scale as a
  share of their mean (±x %), on a linear one as the sd itself.
"""
METHOD_RHO = """- Reconstruction against the latent space: `scipy.stats.spearmanr` of {recon} against each latent score, per
  model, over its `ok` runs where both are finite; with several seeds also over the configurations' means of
  both (the ρ the sentences use). p is two-sided and not corrected for the several scores. |ρ| ≥ {strong} is
  called strong, ≥ {moderate} moderate, below that weak. "Its rank": where the configuration (or run) with the
  lowest {recon} stands when ranked by the score, best first, ties sharing the better rank.
"""


def write_report(out: Path, scanned: Scan, df: pd.DataFrame, dropped: int, metric: str, paths: Sequence[Path],
                 figures: dict[str, Optional[str]], table: pd.DataFrame, varying: list[str],
                 corr: pd.DataFrame) -> Path:
    lvl = levels(df)
    all_cells = cells(df, metric)
    lines = ["# vaebench: hyper-parameter sensitivity", "",
             f"Metric: `{metric}` ({direction(metric)}). Read from {', '.join(f'`{p}`' for p in paths)}: "
             f"{len(scanned.results)} result files, {len(df)} runs after de-duplication"
             + (f" ({dropped} older or superseded results of the same configuration dropped)" if dropped else "")
             + ". All numbers below can be recomputed from `results.csv` (see the end).", ""]
    unreadable = len(scanned.corrupt) + len(scanned.partial) + len(scanned.missing)
    if unreadable:
        lines += [f"**Not counted:** {len(scanned.corrupt)} corrupt result files, {len(scanned.partial)} interrupted "
                  f"writes, {len(scanned.missing)} runs without a result yet (running or killed); listed at the end.",
                  ""]
    if varying:
        lines += [f"**Warning:** settings other than the grid differ between runs of one model and optimizer "
                  f"({', '.join(varying)}); such runs share a dot. Aggregate one experiment at a time, or filter "
                  "results.csv.", ""]
    lines += ["## Summary", "", md_table(table), ""]
    if not corr.empty:
        lines += [f"Does the best reconstruction give the best latent space? Spearman ρ between {RECON} and each "
                  "latent score (negative: they agree; details and what each means under each model):", "",
                  md_table(rho_table(corr), index=True), ""]
    if figures.get("overview"):
        lines += [figure_link("all models", figures["overview"]), ""]
    for model in lvl["model"]:
        lines += model_section(df, all_cells[all_cells["model"] == model], metric, model, lvl, figures.get(model),
                               corr)
    lower = worse(metric) > 0
    lines += [METHOD.format(metric=metric, extreme="lowest" if lower else "highest",
                            bound="at most best + 0.1 × |best|" if lower else "at least best − 0.1 × |best|")]
    if not corr.empty:
        lines[-1] += METHOD_RHO.format(recon=RECON, strong=STRONG, moderate=MODERATE)
    if unreadable:
        lines += ["## Not counted", ""]
        lines += [f"- corrupt: `{p}` ({why})" for p, why in scanned.corrupt]
        lines += [f"- interrupted write: `{p}`" for p in scanned.partial]
        lines += [f"- no result yet: `{p}`" for p in scanned.missing]
        lines += [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------- command

def aggregate(paths: Sequence[Path], out: Path, metric: str, formats: Sequence[str]) -> pd.DataFrame:
    """The whole command; UserError for what the user can fix. Returns the summary table it printed."""
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file or directory: {p}")
    scanned = scan(paths)
    for p, why in scanned.corrupt:
        print(f"{PROG}: skipped corrupt {p}: {why}", file=sys.stderr)
    if not scanned.results:
        raise UserError(f"no readable {RESULT_FILE} below {', '.join(map(str, paths))} "
                        f"({len(scanned.missing) + len(scanned.partial)} runs without a result yet, "
                        f"{len(scanned.corrupt)} corrupt)")
    df, dropped = tabulate(scanned.results)
    fields = numeric_fields(df)
    if metric not in fields:
        raise UserError(f"--metric {metric}: not a numeric result field; use one of {', '.join(fields)}")
    if successful(df, metric).empty:
        raise UserError(f"--metric {metric}: no successful run has a value for it")

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    lvl = levels(df)
    all_cells = cells(df, metric)
    embed = next((f for f in formats if f in ("png", "svg")), None)  # Markdown cannot show a PDF inline
    figures: dict[str, Optional[str]] = {}
    written = []
    for model in lvl["model"]:
        paths_out = save(plot_model(all_cells[all_cells["model"] == model], lvl, model, metric), out,
                         f"dotplot_{model}", formats)
        written += paths_out
        figures[model] = f"dotplot_{model}.{embed or formats[0]}"
    written += save(plot_overview(all_cells, lvl, metric), out, "overview", formats)
    figures["overview"] = f"overview.{embed or formats[0]}"
    table = summary(df, all_cells, metric, lvl)
    corr = recon_vs_latent(df)
    report = write_report(out, scanned, df, dropped, metric, paths, figures, table, other_settings_that_vary(df),
                          corr)

    print(md_table(table))
    if not corr.empty:
        print(f"\nSpearman rho, {RECON} against latent scores (negative: better reconstruction, better latent space):")
        print(md_table(rho_table(corr), index=True))
    print(f"\n{len(df)} runs ({dropped} duplicates dropped); not counted: {len(scanned.corrupt)} corrupt, "
          f"{len(scanned.partial)} interrupted, {len(scanned.missing)} without a result yet")
    print(f"wrote {out / 'results.csv'}, {report} and {len(written)} figures in {out}")
    return table


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every vaebench user error, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Collect every result.json below PATH... into results.csv, draw the "
                     "study's dot-plots (one figure per model and an overview) and write report.md, which says "
                     "how much each hyper-parameter matters per model.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched at any depth), or result.json files")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/aggregate)")
    parser.add_argument("--metric", default="val_recon_mse",
                        help="numeric result field to compare (default: val_recon_mse); lower is better, except "
                        "for the latent-space scores latent_ari, latent_nmi, latent_silhouette, "
                        "latent_probe_balanced_accuracy")
    parser.add_argument("--format", default="png", help="figure formats, comma-separated from png,svg,pdf "
                        "(default: png)")
    args = parser.parse_args(argv)
    args.formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        parser.error(f"--format {args.format}: use one or more of {','.join(FORMATS)}")
    first = args.paths[0]
    args.out = args.out or ((first if first.is_dir() else first.parent) / "aggregate")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        aggregate(args.paths, args.out, args.metric, args.formats)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
