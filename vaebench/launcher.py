"""A guard around each job of `vaebench -m`'s default launcher (Hydra's joblib launcher, see
conf/hydra/launcher/parallel.yaml).

Hydra creates a job's directory, opens its run.log and saves its .hydra/ config before our task runs; an
OSError there (a read-only or blocked job directory) used to abort the whole sweep with a traceback, and
the jobs not yet started never ran. With `install()` (cli.main calls it) it costs that job one line on
stderr, and the sweep exits 2 at the end, after every other job has run.

A worker process that dies (`kill -9`, the kernel's out-of-memory killer) used to end the whole sweep: joblib's
pool fails every job in flight and queued with TerminatedWorkerError. The jobs now run on vaebench.workers'
pool instead: the dead worker's job gets a result.json (status `error`, "worker died: signal 9 ...", so a
rerun runs it again) and a line naming it, a fresh worker takes the dead one's place, the other jobs go on,
and the command exits 1 at the end. hydra.launcher.n_jobs=1 runs the jobs in the main process, as joblib does.

Hydra accepts launchers only from its hydra_plugins package, so rather than a launcher of our own this
replaces the joblib launcher's `launch` and per-job function and counts what comes back.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher._core import execute_job as hydra_execute_job, launch as hydra_launch

from vaebench import cluster

NOT_WRITTEN = "vaebench: output not writable"  # a job's return value when it could not write its output
WORKER_DIED = "vaebench: worker died"  # a job's return value when its worker process died under it
unwritable_jobs = 0  # in the main process: jobs of the last launch that could not write their output
dead_jobs: list[str] = []  # in the main process: one line per job whose worker died (cli prints them, exits 1)


def os_error(e: BaseException) -> Optional[OSError]:
    """The OSError behind e: logging's dictConfig wraps the one of opening run.log in a ValueError."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def cannot_write(job: str, e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    return (f"vaebench: error: job {job}: cannot write its output ({e.strerror or e}{where}); the other jobs "
            f"run: fix it and rerun the same command to resume")


def execute_job(idx: int, overrides: Sequence[str], *args: Any) -> JobReturn:
    # Ctrl-C on a terminal reaches every process of its group: the main process alone stops the sweep
    # (and these workers, see cli.stop_on_signals), so a worker prints no traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return hydra_execute_job(idx, overrides, *args)
    except Exception as e:  # noqa: BLE001 - only an OSError is ours to report; anything else propagates
        cause = os_error(e)
        if cause is None:
            raise
        print(cannot_write(" ".join(overrides) or "#%d" % idx, cause), file=sys.stderr, flush=True)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=NOT_WRITTEN)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    global unwritable_jobs
    n_jobs = workers_wanted(launcher.joblib.get("n_jobs"), len(job_overrides))
    if n_jobs <= 1:  # in this process, one job after another (joblib's n_jobs=1)
        runs = hydra_launch(launcher, job_overrides, initial_job_idx)
    else:
        runs = launch_on_workers(launcher, job_overrides, initial_job_idx, n_jobs)
    unwritable_jobs += sum(r.status == JobStatus.COMPLETED and r.return_value == NOT_WRITTEN for r in runs)
    return runs


def workers_wanted(n_jobs: Any, jobs: int) -> int:
    """joblib's n_jobs as a number of processes: -1 = one per CPU, -2 = all but one, ...; at most one per job."""
    n = int(n_jobs or 1)
    if n < 0:
        from vaebench.machine import available_cpus

        n = max(1, available_cpus() + 1 + n)
    return max(1, min(n, jobs))


def launch_on_workers(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                      n_jobs: int) -> list[JobReturn]:
    """What Hydra's joblib launch does, on vaebench.workers' pool: a worker that dies costs its job only."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, setup_globals

    from vaebench.workers import run_all

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    state = Singleton.get_state()
    items = [(initial_job_idx + i, list(overrides), launcher.hydra_context, launcher.config, launcher.task_function,
              state) for i, overrides in enumerate(job_overrides)]

    def died(i: int, how: Any) -> JobReturn:
        return dead_job(launcher, initial_job_idx + i, list(job_overrides[i]), str(how))

    return run_all(execute_job, items, n_jobs, died)


def dead_job(launcher: Any, idx: int, overrides: list[str], how: str) -> JobReturn:
    """The outcome of a job whose worker died under it: its result.json (status error, so a rerun runs it again),
    its progress line, and the line naming it at the end (cli exits 1)."""
    global dead_jobs
    from vaebench import sweep

    job = " ".join(overrides) or "#%d" % idx
    dead_jobs.append(f"vaebench: error: job {job}: {how}; its result says so (status error) and the other jobs "
                     f"ran: rerun the same command to resume it")
    try:
        out_dir, result = dead_result(launcher, overrides, how)
        print(sweep.report_job(Path(str(launcher.config.hydra.sweep.dir)), result), flush=True)
    except Exception as e:  # noqa: BLE001 - the line at the end still names the job
        print(f"vaebench: warning: job {job}: could not record that its worker died ({type(e).__name__}: {e})",
              file=sys.stderr, flush=True)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=WORKER_DIED)


def dead_result(launcher: Any, overrides: list[str], how: str) -> tuple[Path, dict[str, Any]]:
    """Write the dead job's result.json, unless the job wrote its own before its worker died."""
    import copy

    from omegaconf import open_dict, read_write

    from vaebench.results import METRICS_FILE, Result, finished_result, write_result
    from vaebench.resume import identity

    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    out_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    task_cfg = copy.deepcopy(sweep_config)  # the job's own config, as Hydra's run_job hands it to the task
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    typed, resolved, cfg_hash = identity(task_cfg)
    kept = finished_result(out_dir, cfg_hash)
    if kept is not None:  # the job had written its result (or an earlier run's, resume=false): nothing is lost
        return out_dir, kept
    try:
        epochs = max(0, len((out_dir / METRICS_FILE).read_text().splitlines()) - 1)
    except OSError:
        epochs = 0
    result = Result(status="error", stop_reason="error", error=how, model=typed.model.name,
                    optimizer=typed.optimizer.name, lr=typed.lr, latent_dim=typed.latent_dim, seed=typed.seed,
                    epochs_run=epochs, failed_epoch=epochs + 1, config_hash=cfg_hash, config=resolved,
                    host=socket.gethostname())
    write_result(out_dir, result)
    return out_dir, result.to_dict()


def install() -> None:
    _core.execute_job, _core.launch = execute_job, launch
    cluster.install()
