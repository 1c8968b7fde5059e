"""A job claims its output directory before it runs, so that two sweeps into one directory never train the
same job twice: the second waits for the first, then finds its result and skips it.

The claim is an exclusive flock on a file in the job's directory: the kernel releases it when the process
ends, however it ends (kill -9 included), so a dead sweep never leaves a stale claim behind.
"""

from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

CLAIM_FILE = ".vaebench-claim"


@contextmanager
def claimed(job_dir: Path) -> Iterator[None]:
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / CLAIM_FILE, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is running the job in %s: waiting for it", job_dir)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
