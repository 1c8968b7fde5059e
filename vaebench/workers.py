"""Worker processes that outlive one of them dying: the pool behind a sweep's parallel jobs (vaebench.launcher).

joblib's loky pool, which Hydra's joblib launcher uses, treats a worker that dies (`kill -9`, the kernel's
out-of-memory killer) as the end of the whole pool: every job in flight and every queued one fails with
TerminatedWorkerError, and the sweep aborts with a traceback. Here each worker is a process of its own with a
pipe to the main process, which hands it one job at a time and watches both the pipe and the process: when a
worker dies, only the job it held is lost (`on_death` turns it into that job's outcome), a fresh worker takes
its place, and the other workers train on. Like loky's, workers are started with `spawn` (a fork of a
process that has started torch's threads can deadlock) and keep their state across the jobs they run (the
data set on the device, the GPU slot).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Optional, Sequence

import cloudpickle  # the task function is one Hydra wrapped: pickled by value, as loky does


@dataclass(frozen=True)
class Died:
    """How a worker ended while it held a job: its exit status, negative for the signal that killed it."""

    exitcode: Optional[int]

    @property
    def signal(self) -> Optional[int]:
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "unknown"
            oom = ", as the kernel's out-of-memory killer sends" if self.signal == signal.SIGKILL else ""
            return f"worker died: signal {self.signal} ({name}{oom})"
        return f"worker died: exit status {self.exitcode}"


def _serve(conn: Connection, payload: bytes) -> None:
    """A worker's life: run fn on each item the main process sends, send back ("ok", value) or ("raised", e)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process alone stops the sweep (cli)
    fn = cloudpickle.loads(payload)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the main process is gone
            return
        if not message:  # the main process has no further job
            return
        try:
            answer = ("ok", fn(*cloudpickle.loads(message)))
        except BaseException as e:  # noqa: BLE001 - the main process decides what an exception means
            answer = ("raised", e)
        try:  # by value where plain pickle refuses (Hydra's structured configs in a JobReturn), as loky does
            message = cloudpickle.dumps(answer)
        except Exception as e:  # noqa: BLE001 - an answer that does not pickle at all
            message = cloudpickle.dumps(("raised", RuntimeError(f"a job's outcome could not be sent back: "
                                                                f"{type(e).__name__}: {e}")))
        conn.send_bytes(message)


class _Worker:
    def __init__(self, context: Any, payload: bytes):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, payload), name="vaebench-worker")
        self.process.start()
        child.close()

    def stop(self, kill: bool) -> None:
        if not kill:
            try:
                self.conn.send_bytes(b"")
            except OSError:
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_all(fn: Callable[..., Any], items: Sequence[tuple], n_workers: int,
            on_death: Callable[[int, Died], Any]) -> list[Any]:
    """fn(*item) for every item, on n_workers worker processes; the outcomes in the items' order. A worker that
    dies while it holds item i makes on_death(i, how) item i's outcome, and a new worker replaces it. An
    exception fn raises ends the whole run (the other workers are stopped) and is raised here."""
    context = multiprocessing.get_context("spawn")
    payload = cloudpickle.dumps(fn)
    outcomes: list[Any] = [None] * len(items)
    pending = deque(range(len(items)))
    started: list[_Worker] = []  # every worker, to stop them all whatever happens

    def new_worker() -> _Worker:
        started.append(_Worker(context, payload))
        return started[-1]

    busy: dict[_Worker, int] = {}
    failed = True  # until every item has its outcome: the workers are then stopped, not asked to finish
    try:
        idle = [new_worker() for _ in range(min(n_workers, len(items)))]
        while pending or busy:
            while idle and pending:
                worker, i = idle.pop(), pending.popleft()
                message = cloudpickle.dumps(items[i])
                try:
                    worker.conn.send_bytes(message)
                except OSError:  # it died while idle: nothing of it is lost but the process
                    worker.stop(kill=True)
                    pending.appendleft(i)
                    idle.append(new_worker())
                    continue
                busy[worker] = i
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                i = busy.pop(worker)
                try:
                    kind, value = cloudpickle.loads(worker.conn.recv_bytes())
                except (EOFError, OSError):  # died with the job: its pipe closed without an answer
                    worker.process.join()
                    outcomes[i] = on_death(i, Died(worker.process.exitcode))
                    worker.stop(kill=True)
                    if pending:
                        idle.append(new_worker())
                    continue
                if kind == "raised":
                    raise value
                outcomes[i] = value
                idle.append(worker)
        failed = False
        return outcomes
    finally:
        for worker in started:
            worker.stop(kill=failed)
