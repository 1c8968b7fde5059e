"""The result contract between a run and everything that reads it (resume, aggregate).

One `result.json` per run in the run's output dir, written atomically (temp file + rename), so a run
killed at any moment leaves either no result or a whole one. Strict JSON: non-finite numbers become null.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

SCHEMA = 1
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.csv"
STATUSES = ("ok", "nan", "oom", "error")
FINISHED = ("ok", "nan", "oom")  # a rerun would end the same way; `error` runs are retried on resume

# Keys that do not change what a run computes, left out of its identity.
_NOT_IDENTITY = ("resume", "trainer.threads")


def config_hash(config: dict[str, Any]) -> str:
    """Identity of a run's configuration (resolved, as plain containers)."""
    ident = json.loads(json.dumps(config, default=str))
    for dotted in _NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = ident
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULT_FILE
    write_atomic(path, json.dumps(_finite({"schema": SCHEMA, **result}), indent=2, allow_nan=False) + "\n")
    return path


def read_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's result, or None when it is missing, partial or not ours."""
    try:
        result = json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("status") not in STATUSES:
        return None
    return result


def finished_result(run_dir: Path, cfg_hash: str) -> Optional[dict[str, Any]]:
    """The result a resumed sweep may keep: same configuration, and an ending a rerun would repeat."""
    result = read_result(run_dir)
    if result and result.get("config_hash") == cfg_hash and result["status"] in FINISHED:
        return result
    return None


def describe(result: dict[str, Any], status: Optional[str] = None) -> str:
    """One line for a finished run: what it was, how it ended, what it cost."""
    mse = result.get("val_recon_mse")
    mse_text = "" if mse is None else f" val_mse={mse:.4g}"
    return (f"{result['model']} {result['optimizer']} lr={result['lr']:g} latent={result['latent_dim']} "
            f"seed={result['seed']} -> {status or result['status']}{mse_text} epochs={result.get('epochs_run')} "
            f"({result.get('wall_time_s') or 0:.1f} s)")
