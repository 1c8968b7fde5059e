"""Find and read every result.json below some paths (scan), one row per run (tabulate), and what each dot of
a dot-plot shows (cells): the steps before any statistic or figure."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from vaebench.results import (F, FAILED, FINISHED, IDENTITY, METRICS_FILE, NOT_IDENTITY, NULLABLE_NUMBERS,
                              OLD_STATUSES, REQUIRED, RESULT_FILE, read_result)

AXES = (F.optimizer, F.lr, F.latent_dim)  # the study's grid; one figure panel per optimizer
CELL = (F.model, *AXES)  # one dot
MODEL_ORDER = ("vae", "iwae", "infovae", "logcosh")  # the study's order; others follow alphabetically
OPTIMIZER_ORDER = ("adam", "rmsprop", "sgd")
LEAD_COLUMNS = (*IDENTITY, F.status, F.val_recon_mse, F.epochs_run, F.converged, F.stop_reason, F.failed_epoch,
                F.error)
NOT_METRICS = ("schema", F.lr, F.latent_dim, F.seed)  # numeric, but axes or bookkeeping
RUN_DIR = "run_dir"  # the column aggregate adds: where the result was read
EXPERIMENT = "experiment"  # results.csv's column, and the name of each experiment's directory, when there are several



@dataclass
class Scan:
    """What was found below the paths: readable results, and every file or run dir that gave none."""
    results: list[dict[str, Any]] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)  # result.json that cannot be used
    partial: list[Path] = field(default_factory=list)  # an interrupted atomic write: temp file, no result
    missing: list[Path] = field(default_factory=list)  # a run dir without result: still running, or killed
    table_rows: int = 0  # runs read from results.csv tables given as PATH (an earlier aggregate's)


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
                found.results.append({**result, RUN_DIR: str(result_file.parent),
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


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, into)
    elif isinstance(value, list):
        into[prefix] = json.dumps(value)  # one cell per setting; lists (hidden_dims, betas) stay readable
    else:
        into[prefix] = value


def tabulate(results: list[dict[str, Any]], tables: Sequence[pd.DataFrame] = ()) -> tuple[pd.DataFrame, int]:
    """One row per run (config flattened into config.* columns), from result files and from results.csv
    tables (read_table) alike, de-duplicated; and how many were dropped."""
    rows = []
    for r in results:
        row: dict[str, Any] = {}
        _flatten("", r, row)
        rows.append(row)
    frames = ([pd.DataFrame(rows)] if rows else []) + [t for t in tables if len(t)]
    if not frames:
        return pd.DataFrame(), 0
    df = pd.concat(frames, ignore_index=True)
    read = len(df)
    for column in (F.config_hash, RUN_DIR, "_mtime"):  # a table has no file times; an old one no run_dir
        if column not in df:
            df[column] = None
    # A resumed sweep written to another dir leaves several results for one configuration. Keep one per
    # config_hash: a finished one (ok/diverged/oom) before an `error` (resume retries errors, so an error is
    # superseded by any finished run), and among those the newest, by finished_at (file mtime if absent).
    # A result without config_hash (not written by vaebench.task) is its own identity: its run dir. The swept
    # values and the data fingerprint join the hash: results written before the fix of config_hash gave
    # vae/iwae and adam/sgd at their defaults one hash, and those are different runs.
    identity = df[F.config_hash].fillna(df[RUN_DIR]).astype(str)
    for key in (*IDENTITY, F.data_fingerprint):
        if key in df:
            identity = identity + "|" + df[key].astype(str)
    finished = df[F.status].isin(FINISHED)
    when = df[F.finished_at].fillna(df["_mtime"]) if F.finished_at in df else df["_mtime"]
    order = pd.DataFrame({"identity": identity, "finished": finished, "when": when, "i": range(len(df))})
    keep = order.sort_values(["finished", "when", "i"]).drop_duplicates("identity", keep="last")["i"]
    df = df.iloc[sorted(keep)].drop(columns="_mtime")
    dropped = read - len(df)
    for col in NULLABLE_NUMBERS:  # all null (failed_epoch when nothing failed) is still a numeric field
        if col in df:
            df[col] = pd.to_numeric(df[col])
    df[F.lr] = df[F.lr].astype(float)
    df[F.latent_dim] = df[F.latent_dim].astype(int)
    df[F.seed] = df[F.seed].astype(int)
    df = _sort(df)
    lead = [c for c in LEAD_COLUMNS if c in df]
    rest = [c for c in df.columns if c not in lead and c != RUN_DIR and not c.startswith("config.")]
    config = [c for c in df.columns if c.startswith("config.")]
    return df[lead + rest + config + [RUN_DIR]].reset_index(drop=True), dropped


def read_table(path: Path) -> pd.DataFrame:
    """A results.csv written by any version: statuses as this version names them. Tables written before
    issue 16 say "nan" for a diverged run, which pandas reads as a missing value unless told otherwise."""
    runs = pd.read_csv(path, dtype={F.status: str, F.stop_reason: str}, keep_default_na=False, na_values=[""],
                       float_precision="round_trip")  # the numbers as written, to the last bit
    for column in (F.status, F.stop_reason):
        if column in runs:
            runs[column] = runs[column].replace(OLD_STATUSES)
    return runs


def read_runs(paths: Sequence[Path]) -> tuple[Scan, pd.DataFrame, int]:
    """Every run below the paths, one row each: result.json files found at any depth, and the rows of any
    results.csv an earlier aggregate wrote (taken as they are, so a study re-reports from its table alone);
    a run given both ways counts once. Returns what was found, the table and how many duplicates were dropped."""
    tables = [p for p in paths if p.is_file() and p.suffix == ".csv"]
    found = scan([p for p in paths if p not in tables])
    frames = [read_table(p).drop(columns=EXPERIMENT, errors="ignore") for p in tables]  # recomputed from the runs
    found.table_rows = sum(len(t) for t in frames)
    df, dropped = tabulate(found.results, frames)
    return found, df, dropped


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    rank_model = {m: i for i, m in enumerate(_ordered(df[F.model], MODEL_ORDER))}
    rank_opt = {o: i for i, o in enumerate(_ordered(df[F.optimizer], OPTIMIZER_ORDER))}
    keys = pd.DataFrame({"m": df[F.model].map(rank_model), "o": df[F.optimizer].map(rank_opt),
                         "lr": df[F.lr], "z": df[F.latent_dim], "s": df[F.seed]})
    return df.loc[keys.sort_values(["m", "o", "lr", "z", "s"], kind="stable").index]


def numeric_fields(df: pd.DataFrame) -> list[str]:
    """Result fields usable as --metric: top-level numbers (not config.*, not the grid's axes)."""
    return [c for c in df.columns if "." not in c and c not in NOT_METRICS and c != RUN_DIR
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


@functools.cache
def base_defaults() -> dict[str, Any]:
    """config.* column -> the default of a key that every option of its group has (the base schemas'), as
    results.csv flattens it. A result written before the key existed ran with that default's behaviour
    (config_hash leaves such keys out for the same reason)."""
    from vaebench.config import LoggerConfig, TrainerConfig, schema_values
    from vaebench.data.config import DataConfig
    from vaebench.models.config import ModelConfig  # not models.base: the aggregate command never imports torch

    out: dict[str, Any] = {}
    for group, schema in (("trainer", TrainerConfig), ("data", DataConfig), ("model", ModelConfig),
                          ("logger", LoggerConfig)):
        values = schema_values(schema)
        values.pop("name", None)
        _flatten(f"config.{group}", values, out)
    return out


def _settings(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The columns as text, a config key missing from older results read as its default."""
    defaults = base_defaults()
    return pd.DataFrame({c: df[c].where(df[c].notna(), defaults[c]) if c in defaults and df[c].isna().any()
                         else df[c] for c in columns}, index=df.index).astype(str)


def other_settings_that_vary(df: pd.DataFrame) -> list[str]:
    """config.* keys that differ within one model and optimizer besides lr, latent_dim and seed: runs of
    different experiments (another data set, max_epochs, ...) would be averaged into one dot."""
    swept = {"config.lr", "config.latent_dim", "config.seed", "config.device"}  # device: the same run on cpu or cuda

    def computes(column: str) -> bool:  # keys outside a run's identity (results.NOT_IDENTITY) never split
        return not any(column == f"config.{k}" or column.startswith(f"config.{k}.") for k in NOT_IDENTITY)

    config = [c for c in df.columns if c.startswith("config.") and c not in swept and computes(c)]
    settings = _settings(df, config)
    varying = set()
    for _, group in settings.groupby([df[F.model], df[F.optimizer]]):
        varying.update(c for c in config if group[c].nunique() > 1 and not inert(group, c))
    return sorted(varying)


# A key that does nothing under another key's value: trainer.patience under the study's stopping rule,
# trainer.rel_tol under patience. Runs that differ only in such a key computed the same thing.
INERT = {"config.trainer.patience": ("config.trainer.stopping", "study"),
         "config.trainer.rel_tol": ("config.trainer.stopping", "patience")}


def inert(group: pd.DataFrame, column: str) -> bool:
    """Whether `column` does nothing in every run of the group (INERT)."""
    if column not in INERT:
        return False
    control, value = INERT[column]
    if control not in group:
        return False
    return bool(group[control].astype(str).str.removeprefix("Stopping.").eq(value).all())


@dataclass
class Experiments:
    """Runs that may share a table: same data and the same settings apart from the swept ones."""
    number: pd.Series  # per run (same index as the table): 1, 2, ... in table order
    differ_in: list[str]  # the columns whose values tell the experiments apart; empty for one experiment

    def describe(self, df: pd.DataFrame, n: int) -> str:
        first = df[self.number == n].iloc[0]
        return ", ".join(f"{c.removeprefix('config.')}={first[c]}" for c in self.differ_in)


def experiments(df: pd.DataFrame) -> Experiments:
    """Split runs of different data (data_fingerprint) or different non-swept settings: averaged into one dot
    they would make a mean and a spread of two different questions."""
    differ_in = other_settings_that_vary(df)
    if F.data_fingerprint in df and df[F.data_fingerprint].dropna().nunique() > 1:
        differ_in.insert(0, F.data_fingerprint)
    if not differ_in:
        return Experiments(pd.Series(1, index=df.index), [])
    key = _settings(df, differ_in).agg(" | ".join, axis=1)
    return Experiments(key.map({k: i + 1 for i, k in enumerate(dict.fromkeys(key))}), differ_in)



def successful(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Runs that ended `ok` with a finite value of the metric: the runs the sensitivity numbers use."""
    return df[(df[F.status] == "ok") & np.isfinite(df[metric].astype(float))]


def cells(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """What each dot shows, one row per model x optimizer x lr x latent_dim: the mean and spread of the
    metric over the seeds that succeeded, their mean epochs, whether any hit the epoch limit or was marked
    collapsed, and the count of each failure. Cells whose every run failed are rows too (mean NaN, `failure` set)."""
    runs = df[list(CELL) + [F.status, F.seed, metric, F.epochs_run]].copy()
    runs["ok"] = (runs[F.status] == "ok") & np.isfinite(runs[metric].astype(float))
    runs["value"] = runs[metric].where(runs["ok"]).astype(float)
    runs["epochs"] = runs[F.epochs_run].where(runs["ok"]).astype(float)
    converged = df[F.converged] if F.converged in df else pd.Series(True, index=df.index)
    runs["hit_limit"] = runs["ok"] & (converged != True)  # noqa: E712 - NaN (field absent) is not True
    collapsed = df[F.collapsed] if F.collapsed in df else pd.Series(False, index=df.index)
    runs["collapsed"] = runs["ok"] & collapsed.eq(True)  # null (older results, failed runs) is not collapsed
    for status in FAILED:
        runs[status] = runs[F.status] == status
    grouped = runs.groupby(list(CELL), sort=False)
    out = grouped.agg(runs=(F.status, "size"), n_ok=("ok", "sum"), mean=("value", "mean"), sd=("value", "std"),
                      epochs=("epochs", "mean"), hit_limit=("hit_limit", "any"),
                      n_collapsed=("collapsed", "sum"),
                      **{f"n_{s}": (s, "sum") for s in FAILED}).reset_index()
    out["n_failed"] = out[[f"n_{s}" for s in FAILED]].sum(axis=1)
    out["spread"] = out["sd"] / out["mean"].abs()  # seed-to-seed sd relative to the mean; NaN for one seed
    # The failure a cell is marked with: the most frequent one (ties: diverged before oom before error).
    counts = out[[f"n_{s}" for s in FAILED]].to_numpy()
    out["failure"] = [FAILED[int(np.argmax(c))] if c.sum() else None for c in counts]
    return out


def levels(df: pd.DataFrame) -> dict[str, list]:
    """The category order on each axis, shared by every figure so that panels line up."""
    return {"model": _ordered(df[F.model], MODEL_ORDER), "optimizer": _ordered(df[F.optimizer], OPTIMIZER_ORDER),
            "lr": sorted(df[F.lr].unique()), "latent_dim": sorted(df[F.latent_dim].unique())}



def _values(df: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-null values of a column as text, in table order; none when the column is absent."""
    if column not in df:
        return []
    return [str(v) for v in dict.fromkeys(df[column].dropna())]


def objective_text(df: pd.DataFrame) -> str:
    """The objective the runs trained under, named as the `objective` config group names it (calibrated,
    elbo_fixed, paper), from the loss mode and the decoder's variance their configs recorded."""
    modes = _values(df, "config.model.loss_mode") or _values(df, "loss_mode")
    if not modes:
        return ""
    variances = _values(df, "config.model.decoder_variance")
    likelihoods = [v for v in _values(df, "config.model.likelihood") if v != "gaussian"]
    names = []
    for mode in modes:
        if mode != "elbo":
            names.append(mode)
        elif likelihoods:
            names.append(f"elbo ({' / '.join(likelihoods)})")
        else:
            names += [{"gene": "calibrated", "shared": "calibrated (one shared variance)"}.get(v, "elbo_fixed")
                      for v in (variances or ["fixed"])]
    return "objective " + " / ".join(dict.fromkeys(names))


def data_text(df: pd.DataFrame) -> str:
    """The data set in a few words: its source, the file (or cohort) and the matrix's samples x genes."""
    names = _values(df, "config.data.name")
    if not names:
        return ""
    what = " / ".join(names)
    files = [Path(p).name for p in _values(df, "config.data.path")] or _values(df, "config.data.cohort")
    if files:
        what += " " + " / ".join(files)
    rows = sum(pd.to_numeric(df[c], errors="coerce").fillna(0) for c in (F.n_train, F.n_val, F.n_test) if c in df)
    genes = pd.to_numeric(df[F.n_features], errors="coerce") if F.n_features in df else None
    if genes is not None and isinstance(rows, pd.Series):
        shapes = [f"{int(r):,} x {int(g):,}" for r, g in dict.fromkeys(zip(rows, genes)) if r > 0 and np.isfinite(g)]
        if len(shapes) == 1:
            what += f" ({shapes[0]})"
    elif names == ["synthetic"]:
        n, g = _values(df, "config.data.n_samples"), _values(df, "config.data.n_genes")
        if len(n) == 1 and len(g) == 1:
            what += f" ({int(float(n[0])):,} x {int(float(g[0])):,})"
    return f"data {what}"


def runs_context(df: pd.DataFrame) -> str:
    """What a figure's title and a report's head say the runs were: objective and data set."""
    return ", ".join(t for t in (objective_text(df), data_text(df)) if t)
