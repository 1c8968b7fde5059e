"""A job claims its output directory before it runs, so that two sweeps into one directory never train the
same job twice: the second waits for the first, then finds its result and skips it.

The claim is an exclusive flock on a file in the job's directory: the kernel releases it when the process
ends, however it ends (kill -9 included), so a dead sweep never leaves a stale claim behind.

The same kind of lock gives each sweep worker its own GPU slot for its life (gpu_slot, below).
"""

from __future__ import annotations

import fcntl
import logging
import os
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


# ---- GPU slots: one per worker process, for the process's life ----------------------------------------------
#
# joblib hands a job to whichever worker is free, so choosing the GPU by job number put two workers on one GPU
# as soon as job lengths differed. Instead each worker takes a slot the first time it trains on a GPU and keeps
# it: a slot is an exclusive, non-blocking flock on a file in the sweep directory, held while the process lives
# (the kernel drops it when the process ends, however it ends). GPU k has `per_gpu` slots; a worker tries every
# GPU's first slot, then every GPU's second, ..., so k workers spread over k GPUs before any doubles up. The
# files are named by host and physical GPU, so processes on several hosts (a cluster) sharing the directory only
# compete for their own host's GPUs.

SLOTS_DIR = ".vaebench-gpu-slots"


class GpuSlot:
    """The slot this process holds: `index` into the GPUs it was chosen among; `overflow` when every slot
    was taken (more workers than GPUs x jobs per GPU): the process then shares a GPU beyond the slots."""

    def __init__(self, lock_dir: Path, gpus: tuple[str, ...], per_gpu: int, index: int, slot: int | None,
                 handle=None):
        self.lock_dir, self.gpus, self.per_gpu, self.index, self.slot, self.handle = (
            lock_dir, gpus, per_gpu, index, slot, handle)

    @property
    def overflow(self) -> bool:
        return self.slot is None

    def shared(self) -> bool:
        """Whether another process holds a slot of this GPU now (or this one is an overflow)."""
        if self.overflow:
            return True
        for k in range(self.per_gpu):
            if k != self.slot and _held(self.lock_dir / _slot_file(self.gpus[self.index], k)):
                return True
        return _held(self.lock_dir / _slot_file(self.gpus[self.index], None), fcntl.LOCK_EX)


def _slot_file(gpu: str, k: int | None) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)
    return f"{name}.slot{k}" if k is not None else f"{name}.overflow"


def _held(path: Path, probe: int = fcntl.LOCK_SH) -> bool:
    """True when some process holds a lock on path that `probe` conflicts with: a shared probe sees a slot's
    exclusive holder, an exclusive one the overflow file's shared holders. The probe lasts an instant: a worker
    claiming that very slot then moves on to its next free slot, no worse than a busy slot."""
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, probe | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


_held_slot: GpuSlot | None = None


def gpu_slot(lock_dir: Path, gpus: list[str], per_gpu: int) -> GpuSlot:
    """This process's slot among `gpus` (names unique across the hosts sharing lock_dir), claimed on the first
    call and kept; a later call with other GPUs or another directory gives up the old slot for a new one."""
    global _held_slot
    lock_dir, key = Path(lock_dir), tuple(gpus)
    if _held_slot is not None:
        if (_held_slot.lock_dir, _held_slot.gpus, _held_slot.per_gpu) == (lock_dir, key, per_gpu):
            return _held_slot
        release_gpu_slot()
    lock_dir.mkdir(parents=True, exist_ok=True)
    for k in range(per_gpu):
        for index, gpu in enumerate(key):
            f = open(lock_dir / _slot_file(gpu, k), "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            _held_slot = GpuSlot(lock_dir, key, per_gpu, index, k, f)
            return _held_slot
    # Every slot is taken: share a GPU rather than wait (a worker may wait for a slot until the end of the
    # sweep, as workers live that long). A shared lock on the GPU's overflow file lets slot holders see it.
    index = os.getpid() % len(key)
    f = open(lock_dir / _slot_file(key[index], None), "a")
    fcntl.flock(f, fcntl.LOCK_SH)
    log.warning("every GPU slot in %s is taken (%d GPUs x %d jobs per GPU): this worker shares %s beyond them; "
                "lower hydra.launcher.n_jobs or raise jobs_per_gpu", lock_dir, len(key), per_gpu, key[index])
    _held_slot = GpuSlot(lock_dir, key, per_gpu, index, None, f)
    return _held_slot


def release_gpu_slot() -> None:
    global _held_slot
    if _held_slot is not None and _held_slot.handle is not None:
        _held_slot.handle.close()  # closing the file drops its flock
    _held_slot = None


def gpu_slot_shared() -> bool:
    """Whether this process's GPU is shared with another process holding a slot of it now."""
    return _held_slot is not None and _held_slot.shared()
