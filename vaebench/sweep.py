"""Sweeps: check every swept value before any job trains, and print progress as jobs finish.

Hydra's basic sweeper composes each job's config before launching, which catches unknown keys and wrong
types, but not ranges (latent_dim=0). `SweepCallback.on_multirun_start` runs in the main process first:
it expands the grid exactly as the basic sweeper will, validates each distinct swept value, and records
the job count. Each job then appends one line to the sweep's progress file as it ends (under a lock, so
the [k/N] counter is right across parallel workers) and `on_multirun_end` prints the summary.

Two invocations may share a sweep directory (the same command started twice): each tags its lines with its
own id, handed to its jobs through the environment (worker processes and cluster jobs inherit it), and
counts only its own, so no counter exceeds its total.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Collection, Optional, Sequence

from hydra import compose
from hydra.errors import HydraException
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vaebench.config import validate
from vaebench.errors import UserError
from vaebench.results import F, FINISHED, describe, read_result

log = logging.getLogger("vaebench.sweep")

SWEEP_FILE = ".vaebench-sweep.json"  # job count and start time of the latest invocation
PROGRESS_FILE = ".vaebench-progress.jsonl"  # one line per finished job, tagged with its invocation's id
current_dir: Optional[Path] = None  # in the main process: the sweep running now (for the interrupt message)
INVOCATION_ENV = "VAEBENCH_SWEEP"  # {"id": ..., "jobs": N} of the invocation a job belongs to
NOT_RUN = "not_run"  # a job handed to a worker whose device had failed: nothing written, a rerun runs it
failed_devices = 0  # in the main process: devices that failed for good in the last sweep (cli exits 1)


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


def compose_jobs(jobs: Sequence[Sequence[str]], compose_one: Callable[[list[str]], DictConfig],
                 groups: Collection[str], cache: Optional[dict[tuple[str, ...], DictConfig]] = None) -> list[DictConfig]:
    """Each job's config as Hydra composes it, for a fraction of the cost. compose_one(overrides) is Hydra's
    composition (~0.16 s of CPU); it runs once for each distinct set of group options (model=iwae, +experiment=demo,
    anything but a plain change of a setting), and a job's changes of settings (lr=1e-2, data.n_types=3) are applied
    to a copy as Hydra applies them after composing: its parser's value, OmegaConf.update with merge. A change that
    does not apply (an unknown key, a wrong type) has the whole job composed by Hydra, for Hydra's own error.
    groups: the top-level config group names (model, optimizer, ...); cache: kept across calls by the caller."""
    cache = {} if cache is None else cache
    parser = OverridesParser.create()
    configs = []
    for overrides in jobs:
        parsed = parser.parse_overrides(list(overrides))
        changes = [i for i, o in enumerate(parsed) if o.type is OverrideType.CHANGE and o.package is None
                   and "/" not in o.key_or_group and o.key_or_group not in groups]
        added = [o.key_or_group for o in parsed if o.type is not OverrideType.CHANGE
                 and o.key_or_group.split("/")[0] not in groups]  # +key=..., ~key: not group options
        if any(nested(parsed[i].key_or_group, key) for i in changes for key in added):
            changes = []  # a setting that another override adds or deletes: their order decides, so Hydra composes
        options = tuple(text for i, text in enumerate(overrides) if i not in changes)
        if options not in cache:
            cache[options] = compose_one(list(options))
        cfg = copy.deepcopy(cache[options])
        try:
            for i in changes:
                OmegaConf.update(cfg, parsed[i].key_or_group, parsed[i].value(), merge=True)
        except OmegaConfBaseException:
            cfg = compose_one(list(overrides))
        configs.append(cfg)
    return configs


def nested(a: str, b: str) -> bool:
    """Whether two dotted config keys are the same or one holds the other (model, model.hidden_dims)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_batch(sweeper: Sweeper, batch: Sequence[Sequence[str]]) -> None:
    """Hydra's check that every job of a batch composes, before the batch is launched (validate_batch_is_legal),
    composed as compose_jobs composes: Hydra's version composed each job in full in the main process before any
    job could start, ~0.16 s of CPU each (2.6 s for a 16-job grid). A job that does not compose still raises
    Hydra's own error."""
    master = sweeper.config
    compose_jobs(batch, lambda overrides: sweeper.hydra_context.config_loader.load_sweep_config(master, overrides),
                 config_groups(master))


def config_groups(config: DictConfig) -> set[str]:
    """The top-level config groups of a composed config (model, optimizer, hydra, ...), as compose_jobs needs them."""
    return {choice.split("/")[0] for choice in config.hydra.runtime.choices}


def one_line(error: BaseException) -> str:
    """A composition error in one line, with what Hydra spreads over several: the options it lists, one per
    line ("Available options in 'model':" then each), and the reason it keeps in the chained exception
    ("Error merging override lr=abc" is caused by "Value 'abc' ... could not be converted to Float")."""
    parts: list[str] = []
    listing = False  # inside Hydra's list of options: one option per line, joined with commas
    while error is not None:
        text = str(error).split("Config search path:")[0]  # Hydra's own search path: noise to a user
        for line in (line.strip() for line in text.splitlines()):
            # Hydra's "To append to your config use +key=value" would add a misspelt key (config.validate refuses it).
            if not line or line.startswith(("full_key:", "object_type=", "reference_type=", "To append to your config",
                                            "Set the environment variable HYDRA_FULL_ERROR")) or line in parts:
                listing = listing and not line
                continue
            if listing:
                parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            else:
                parts.append(line)
                listing = line.startswith("Available options")
        error = error.__cause__
    return "; ".join(parts)


def devices_seen_here(launcher: DictConfig) -> bool:
    """Whether the sweep's jobs run on this machine (joblib, Submitit local), so its GPUs are theirs. Not under
    SLURM: the jobs run on nodes whose GPUs the submitting machine (often a login node without one) cannot
    see; each job checks its own device."""
    return "slurm" not in str(launcher.get("_target_", "")).lower()


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vaebench import launcher

        launcher.install()  # before the launcher runs: its per-job guard (imports joblib: here, not at start-up)
        Sweeper.validate_batch_is_legal = check_batch  # the base class: Hydra re-imports its plugins' modules
        jobs = job_overrides(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
        if jobs:
            try:
                name = kwargs.get("config_name") or "config"
                typed = [validate(cfg) for cfg in compose_jobs(
                    distinct_value_jobs(jobs), lambda overrides: compose(config_name=name, overrides=overrides),
                    config_groups(config))]
                from vaebench.machine import device_type_without_torch

                # cuda:N past the GPUs: before any job. A device certain to be the CPU needs no check (nor torch).
                gpus = sorted({cfg.device for cfg in typed if device_type_without_torch(cfg.device) != "cpu"})
                if gpus and devices_seen_here(config.hydra.launcher):
                    from vaebench.device import check_device  # a sweep's check of cuda:N

                    for device in gpus:
                        check_device(device)
                from vaebench.precheck import checked_data, require_latent_size  # numpy and the data: when a sweep starts

                shapes: dict[tuple, tuple[int, int]] = {}
                for cfg in typed:  # each distinct data set and batch setting once: a bad file stops the sweep here
                    key = (repr(cfg.data), cfg.trainer.val_fraction, cfg.trainer.batch_size, cfg.trainer.drop_last)
                    if key not in shapes:
                        data, split = checked_data(cfg)
                        shapes[key] = (data.x.shape[1], len(split.train))
                    require_latent_size(cfg.latent_dim, *shapes[key])  # every swept latent_dim, not the first one
            except (UserError, HydraException, OmegaConfBaseException) as e:
                # Hydra turns a callback's exception into a warning and goes on; a bad value must stop here.
                from vaebench.hints import with_fix

                print(f"vaebench: error: {with_fix(one_line(e))}", file=sys.stderr)
                raise SystemExit(2) from None
        global current_dir
        sweep_dir = current_dir = Path(config.hydra.sweep.dir)
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):  # optuna resets its logger to INFO on import
            import optuna

            optuna.logging.set_verbosity(logging.WARNING)  # "A new study created in memory", in colour: noise here
        # An optimizing sweeper (Optuna) runs n_trials trials, whatever its choice(...) values expand to.
        trials = config.hydra.sweeper.get("n_trials")
        total = int(trials) if trials else (len(jobs) if jobs else None)
        invocation = {"id": uuid.uuid4().hex[:12], "jobs": total, "started": time.time()}
        os.environ[INVOCATION_ENV] = json.dumps(invocation)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / PROGRESS_FILE).touch()
            (sweep_dir / SWEEP_FILE).write_text(json.dumps(invocation))
        except OSError as e:  # Hydra's multirun.yaml, next, would fail with a traceback: nothing can run
            where = e.filename or sweep_dir
            print(f"vaebench: error: cannot write in the sweep directory {sweep_dir} ({e.strerror or e}: {where}); "
                  f"make it writable (or make room) and rerun the same command to resume, or choose another "
                  f"hydra.sweep.dir", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        if jobs and not trials:
            log.info("%s", announce(len(jobs), sweep_dir, bool(config.get("resume", True))))
        elif total:
            log.info("search: %d trials into %s (%s)", total,
                     sweep_dir, str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1] or "sweeper")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        invocation = this_invocation(sweep_dir)
        lines = [e for e in progress_entries(sweep_dir) if e.get("sweep") == invocation.get("id")]
        counts = Counter(e["status"] for e in lines) + job_counts(invocation.get("jobs"), len(lines))
        started = invocation.get("started") or time.time()
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        message = (f"sweep done: {sum(counts.values())} jobs ({summary}) in {time.time() - started:.1f} s; results "
                   f"in {sweep_dir}")
        log.info(message)
        # One line per device that failed for good, with the jobs its worker then left: the exit status is 1.
        failures: dict[str, int] = {}
        for e in lines:
            if e.get("device_failure"):
                failures[e["device_failure"]] = failures.get(e["device_failure"], 0) + (e["status"] == NOT_RUN)
        for failure, not_run in failures.items():
            print(f"vaebench: error: {failure}; its worker ran no further job ({not_run} not run): rerun the same "
                  f"command to resume them", file=sys.stderr, flush=True)
        global failed_devices
        failed_devices = len(failures)


def job_counts(total: Optional[int], recorded: int) -> Counter:
    """The jobs of this invocation that left no line in the progress file, by why: each said so in its own line
    (an output it could not write, a cluster job that ended without a result); the rest finished, but the
    progress file could not take their line (a full disk)."""
    from vaebench import cluster

    launcher = sys.modules.get("vaebench.launcher")  # imported only by a joblib sweep
    counts = Counter({"not written": launcher.unwritable_jobs if launcher else 0, "no result": cluster.unfinished_jobs})
    if total and recorded + sum(counts.values()) < total:
        counts["unrecorded (the progress file could not be written)"] = total - recorded - sum(counts.values())
    return +counts  # the zero counts dropped


def announce(n_jobs: int, sweep_dir: Path, resume: bool) -> str:
    """The one line a sweep starts with (the launcher's own list of every job is kept off the console,
    see hydra.hydra_logging in conf/config.yaml): how many jobs, and how many a resume may skip."""
    line = f"sweep: {n_jobs} jobs into {sweep_dir}"
    done = sum(1 for d in (sweep_dir.iterdir() if sweep_dir.is_dir() else ()) if d.is_dir()
               and (r := read_result(d)) is not None and r[F.status] in FINISHED)
    if resume and done:
        line += f", {done} already finished there (skipped if their configuration is unchanged; resume=false reruns them)"
    return line


def this_invocation(sweep_dir: Path) -> dict[str, Any]:
    """The invocation this process belongs to: from the environment, else the sweep's latest."""
    try:
        return json.loads(os.environ.get(INVOCATION_ENV) or (sweep_dir / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}


def progress_entries(sweep_dir: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (sweep_dir / PROGRESS_FILE).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def report_job(sweep_dir: Path, result: dict[str, Any], device_failure: Optional[str] = None) -> str:
    """Record one finished job in the sweep's progress file and return its progress line. device_failure: the
    words naming the device this job broke for good (vaebench.device.broken)."""
    status = "skipped" if result.get("skipped") else result[F.status]
    entry = {"status": status, "config_hash": result[F.config_hash], "seconds": result.get(F.wall_time_s)}
    return f"{_record(sweep_dir, entry, device_failure)} {describe(result, status)}"


def report_not_run(sweep_dir: Path, job: str, device_failure: str) -> str:
    """Record a job its worker could not run (its device had failed) and return its progress line."""
    return f"{_record(sweep_dir, {'status': NOT_RUN}, device_failure)} {job or 'defaults'} -> not run (this worker's device failed)"


def _record(sweep_dir: Path, entry: dict[str, Any], device_failure: Optional[str]) -> str:
    """Append entry to the progress file, tagged with this invocation; the [k/N] counter after it."""
    invocation = this_invocation(sweep_dir)
    entry["sweep"] = invocation.get("id")
    if device_failure:
        entry["device_failure"] = device_failure
    total = invocation.get("jobs")
    try:
        with open(sweep_dir / PROGRESS_FILE, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(entry) + "\n")
            f.flush()
            f.seek(0)
            tag = json.dumps({"sweep": entry["sweep"]})[1:-1]  # '"sweep": "<id>"', as json.dumps wrote it above
            done: Any = sum(1 for line in f if tag in line)
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # a read-only sweep directory (a resumed, finished sweep): no counter, still a line
        done = "?"
    return f"[{done}/{total}]" if total else f"[{done}]"

