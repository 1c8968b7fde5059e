"""A guard around each job of `vaebench -m`'s default launcher (Hydra's joblib launcher, see
conf/hydra/launcher/parallel.yaml).

Hydra creates a job's directory, opens its run.log and saves its .hydra/ config before our task runs; an
OSError there (a read-only or blocked job directory) used to abort the whole sweep with a traceback, and
the jobs not yet started never ran. With `install()` (cli.main calls it) it costs that job one line on
stderr, and the sweep exits 2 at the end, after every other job has run.

Hydra accepts launchers only from its hydra_plugins package, so rather than a launcher of our own this
replaces the launcher's per-job function (pickled by name, so workers import ours) and counts what
comes back.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher._core import execute_job as hydra_execute_job, launch as hydra_launch

from vaebench import cluster

NOT_WRITTEN = "vaebench: output not writable"  # a job's return value when it could not write its output
unwritable_jobs = 0  # in the main process: jobs of the last launch that could not write their output


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


def launch(*args: Any, **kwargs: Any) -> Sequence[JobReturn]:
    global unwritable_jobs
    runs = hydra_launch(*args, **kwargs)
    unwritable_jobs += sum(r.status == JobStatus.COMPLETED and r.return_value == NOT_WRITTEN for r in runs)
    return runs


def install() -> None:
    _core.execute_job, _core.launch = execute_job, launch
    cluster.install()
