"""Sweeps on SLURM (`hydra/launcher=slurm` or `slurm_cpu`, Hydra's Submitit launcher): two repairs to Submitit,
installed by `launcher.install()` when the cluster extra is present.

- Job states without accounting. Submitit asks `sacct` for the state of its jobs. Many small clusters run without
  accounting storage, where sacct refuses ("Slurm accounting storage is disabled"): Submitit then logs a warning on
  every poll and never learns that a job ended without a result (cancelled with scancel, killed by the time limit,
  lost with its node), so the sweep waited for it forever. `QueueWatcher` asks `squeue` when sacct fails. squeue
  knows every job slurmctld still holds (finished ones for MinJobAge, 300 s by default); a job of ours it no
  longer lists has ended.
- A resume submits only the unfinished jobs. Each job whose directory already holds a finished result for its
  configuration (as the job itself would check it on its node) is skipped here, with its progress line, instead
  of being queued, started and skipped there (7-17 s each on a real cluster).
- A progress line per collected job, as the joblib launcher's workers print: the jobs' own lines go to their
  SLURM logs.
- One job without a result no longer stops the sweep's collection. Hydra's launcher collects results in order and
  raised at the first job that had none, so the jobs after it were never collected and the command ended with a
  traceback. Here each such job costs one line naming it, its SLURM job id and state; the others are collected,
  the summary follows, and the command exits 2. Rerunning the same command resumes: only that job runs again.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger("vaebench.cluster")

NO_RESULT = "vaebench: cluster job ended without a result"  # a job's return value when its cluster job had none
GONE = "GONE"  # the state of a job squeue no longer lists (cancelled before it ran, or purged after MinJobAge)
unfinished_jobs = 0  # in the main process: jobs of the last launch that ended without a result
total_jobs = 0  # in the main process: jobs of the last launch (for the progress lines' counter)
collected = 0  # in the main process: progress lines printed for collected jobs


def run(command: list[str]) -> subprocess.CompletedProcess:
    """A SLURM command's output; a command that is not installed fails like one that refuses."""
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        return subprocess.CompletedProcess(command, 127, "", str(e))


@functools.cache
def queue_watcher() -> type:
    """The watcher class, made on first use: it derives from Submitit's, so this module imports without it."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class QueueWatcher(SlurmInfoWatcher):
        """Submitit's sacct watcher, with squeue when sacct fails (see the module's docstring)."""

        def update(self) -> None:
            command = self._make_command()  # sacct for the jobs not known to be finished; None when none are
            if command is None:
                return
            self._num_calls += 1
            sacct = run(command)
            if sacct.returncode == 0:
                self._info_dict.update(self.read_info(sacct.stdout))
            else:
                self._info_dict.update(self.from_squeue())
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:  # as Submitit's own update does
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

        def from_squeue(self) -> dict[str, dict[str, str]]:
            # Our own jobs, one line per array task, finished ones included. Not `--jobs`: an id slurmctld has
            # already forgotten makes squeue fail for all of them.
            queue = run(["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"])
            if queue.returncode != 0:
                log.warning("neither sacct nor squeue answered (%s): the sweep's job states are unknown until "
                            "they do", (queue.stderr or "").strip() or f"exit status {queue.returncode}")
                return {}
            info = self.read_info("JobID|State|NodeList\n" + queue.stdout)
            for job_id in self._registered - self._finished:
                info.setdefault(job_id, {"State": GONE})
            return info

    return QueueWatcher


class Collected:
    """A submitted job whose results() names a job that ended without a result instead of raising."""

    def __init__(self, job: Any, overrides: Sequence[str]) -> None:
        self.job, self.overrides = job, list(overrides)

    def results(self) -> list[JobReturn]:
        from submitit.core.utils import UncompletedJobError

        global unfinished_jobs
        try:
            returned = self.job.results()
        except UncompletedJobError:
            unfinished_jobs += 1
            state = self.job.state
            how = "left the queue (cancelled before it ran?)" if state == GONE else f"ended {state}"
            print(f"vaebench: error: job {' '.join(self.overrides)} (SLURM job {self.job.job_id}) {how} without a "
                  "result; the other jobs ran: rerun the same command to resume it", file=sys.stderr, flush=True)
            return [JobReturn(overrides=self.overrides, status=JobStatus.COMPLETED, _return_value=NO_RESULT)]
        progress_line(returned)
        return returned


def progress_line(returned: Sequence[JobReturn]) -> None:
    """Print a collected job's line, from the result.json it wrote (nothing for a job without one)."""
    from vaebench.results import describe, read_result

    global collected
    for job in returned:
        try:
            out_dir = job.hydra_cfg.hydra.runtime.output_dir
        except Exception:  # noqa: BLE001 - a job that failed before Hydra set it up
            continue
        result = read_result(Path(out_dir)) if out_dir else None
        if result is not None:
            collected += 1
            print(f"[{collected}/{total_jobs or '?'}] {describe(result)}", flush=True)


class Finished:
    """A job a resume does not submit: its finished result is already there (results() as a submitted job's)."""

    def __init__(self, overrides: Sequence[str], result: dict[str, Any]) -> None:
        self.overrides, self.result = list(overrides), result

    def results(self) -> list[JobReturn]:
        return [JobReturn(overrides=self.overrides, status=JobStatus.COMPLETED,
                          _return_value=self.result.get("val_recon_mse"))]


def node_kind(device: str, launcher_cfg: Any) -> str:
    """Where a job of the launcher trains, cpu or cuda, as the job's own resume check on its node will see it:
    device=auto trains on CUDA where the launcher asks for GPUs (the submitting machine may have none)."""
    if device.startswith(("cpu", "cuda")):
        return device.split(":")[0]
    return "cuda" if launcher_cfg.get("gpus_per_node") else "cpu"


def finished_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> dict[int, dict[str, Any]]:
    """The jobs (by position) whose directory holds a finished result for their configuration: a resume skips
    them without submitting them. A job without a result.json is not composed (the quick answer for a new sweep)."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from omegaconf import open_dict, read_write

    from vaebench.results import RESULT_FILE
    from vaebench.sweep import job_dirname
    from vaebench.resume import identity, kept_result

    config = launcher.config
    naming = config.hydra.job.config.override_dirname
    sweep_dir = Path(str(config.hydra.sweep.dir))
    found: dict[int, dict[str, Any]] = {}
    for k, overrides in enumerate(job_overrides):
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        name = get_overrides_dirname(parsed, list(naming.exclude_keys), naming.item_sep, naming.kv_sep)
        if not (sweep_dir / job_dirname(name) / RESULT_FILE).is_file():
            continue
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        out_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        typed, _, cfg_hash = identity(task_cfg, node_kind(str(task_cfg.device), config.hydra.launcher))
        done = kept_result(typed, cfg_hash, out_dir, multirun=True)
        if done is not None:
            found[k] = done
    return found


def install() -> None:
    """Patch Submitit itself: Hydra re-executes its plugin modules when it scans them, which would undo a patch
    of its launcher class, but it leaves Submitit alone. The launcher hands map_array the jobs' overrides as
    its first list of arguments (hydra_submitit_launcher's launch), which is how each job is named."""
    try:
        import submitit
        from submitit.slurm.slurm import SlurmJob
    except ImportError:  # no cluster extra: nothing to repair
        return
    if getattr(submitit.AutoExecutor.map_array, "vaebench", False):  # installed already
        return
    SlurmJob.watcher = queue_watcher()(delay_s=600)  # the class attribute every SlurmJob polls through
    map_array = submitit.AutoExecutor.map_array

    def collected_map_array(executor: Any, fn: Any, *iterable: Any) -> list[Any]:
        if type(fn).__module__ != "hydra_plugins.hydra_submitit_launcher.submitit_launcher":
            return map_array(executor, fn, *iterable)  # not a sweep's jobs
        global total_jobs, collected
        from vaebench import sweep

        overrides = list(iterable[0])
        done = finished_jobs(fn, overrides)
        total_jobs, collected = len(overrides), len(done)  # the collected jobs' lines count on from the skipped
        sweep_dir = Path(str(fn.config.hydra.sweep.dir))
        for k, result in done.items():  # recorded as the job would have, skipped on its node
            print(sweep.report_job(sweep_dir, {**result, "skipped": True}), flush=True)
        todo = [k for k in range(len(overrides)) if k not in done]
        if done:
            log.info("%d of %d jobs already finished: submitting %d", len(done), len(overrides), len(todo))
        jobs = map_array(executor, fn, *[[column[k] for k in todo] for column in iterable]) if todo else []
        submitted = dict(zip(todo, jobs))
        return [Finished(overrides[k], done[k]) if k in done else Collected(submitted[k], overrides[k])
                for k in range(len(overrides))]

    collected_map_array.vaebench = True
    submitit.AutoExecutor.map_array = collected_map_array
