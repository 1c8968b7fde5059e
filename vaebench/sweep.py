"""Sweeps: check every swept value before any job trains, and print progress as jobs finish.

Hydra's basic sweeper composes each job's config before launching, which catches unknown keys and wrong
types, but not ranges (latent_dim=0). `SweepCallback.on_multirun_start` runs in the main process first:
it expands the grid exactly as the basic sweeper will, validates each distinct swept value, and records
the job count. Each job then appends one line to the sweep's progress file as it ends (under a lock, so
the [k/N] counter is right across parallel workers) and `on_multirun_end` prints the summary.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from hydra import compose
from hydra.errors import HydraException
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from vaebench.config import validate
from vaebench.errors import UserError
from vaebench.results import describe

log = logging.getLogger("vaebench.sweep")

SWEEP_FILE = ".vaebench-sweep.json"  # job count and start time of the latest invocation
PROGRESS_FILE = ".vaebench-progress.jsonl"  # one line per finished job of that invocation


def job_dirname(override_dirname: str) -> str:
    """A job's directory name from its overrides: '/' in values (file paths) made flat, long names
    shortened with a hash of the whole (a file name may not exceed 255 bytes)."""
    name = override_dirname.replace("/", "_") or "defaults"
    if len(name.encode()) > 200:
        digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
        name = name.encode()[:180].decode(errors="ignore") + "~" + digest
    return name


def job_overrides(sweep_params: dict[str, Any], task_overrides: list[str]) -> Optional[list[list[str]]]:
    """Every job's overrides, as Hydra's basic sweeper will launch them; None for non-grid sweeps."""
    arguments = [f"{k}={v}" for k, v in (sweep_params or {}).items()] + list(task_overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # an optimizing sweeper's syntax (interval(...)): no fixed grid to expand
        return None


def distinct_value_jobs(jobs: list[list[str]]) -> list[list[str]]:
    """Jobs that together try every swept value once: the first job with one position changed at a time."""
    base = jobs[0]
    picked = {tuple(base)}
    for i in range(len(base)):
        for value in {job[i] for job in jobs}:
            picked.add(tuple(base[:i] + [value] + base[i + 1:]))
    return [list(job) for job in sorted(picked)]


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = job_overrides(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
        if jobs:
            try:
                for overrides in distinct_value_jobs(jobs):
                    validate(compose(config_name=kwargs.get("config_name") or "config", overrides=overrides))
            except (UserError, HydraException, OmegaConfBaseException) as e:
                # Hydra turns a callback's exception into a warning and goes on; a bad value must stop here.
                print("vaebench: error: " + ": ".join([line.strip() for line in str(e).splitlines() if line.strip()][:2]),
                      file=sys.stderr)
                raise SystemExit(2) from None
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PROGRESS_FILE).write_text("")
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({"jobs": len(jobs) if jobs else None,
                                                        "started": time.time()}))
        if jobs:
            log.info("sweep of %d jobs into %s", len(jobs), sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        lines = (sweep_dir / PROGRESS_FILE).read_text().splitlines()
        counts = Counter(json.loads(line)["status"] for line in lines)
        started = json.loads((sweep_dir / SWEEP_FILE).read_text())["started"]
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        message = f"sweep done: {len(lines)} jobs ({summary}) in {time.time() - started:.1f} s; results in {sweep_dir}"
        log.info(message)


def report_job(sweep_dir: Path, result: dict[str, Any]) -> str:
    """Record one finished job in the sweep's progress file and return its progress line."""
    status = "skipped" if result.get("skipped") else result["status"]
    entry = {"status": status, "config_hash": result["config_hash"], "seconds": result.get("wall_time_s")}
    try:
        total = json.loads((sweep_dir / SWEEP_FILE).read_text()).get("jobs")
    except (OSError, ValueError):
        total = None
    with open(sweep_dir / PROGRESS_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry) + "\n")
        f.flush()
        f.seek(0)
        done = sum(1 for _ in f)
        fcntl.flock(f, fcntl.LOCK_UN)
    counter = f"[{done}/{total}]" if total else f"[{done}]"
    return f"{counter} {describe(result, status)}"

