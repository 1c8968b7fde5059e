"""What a run shows and records as it goes: metrics.csv, one row per epoch, run.log, and a progress bar."""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path
from typing import Optional


class Stopwatch:
    """Seconds each part of a job took, as laps: each lap is the time since the one before, so the parts add up
    to the job's time in vaebench.task.run. result.json keeps them (`timing`); run.log's last line adds the
    result's own write. BENCHMARKS.md's efficiency rows put a sweep's time outside its epochs down to them."""

    def __init__(self, **paid: float):
        self.seconds: dict[str, float] = {k: round(v, 3) for k, v in paid.items()}
        self.last = time.perf_counter()

    def lap(self, part: str, **within: float) -> None:
        """Add the time since the last lap to `part`, less the parts `within` it that were measured inside (the
        epochs of training, the scores of scoring), which are added under their own names."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        for name, inside in within.items():
            self._add(name, inside)
            seconds -= inside
        self._add(part, max(seconds, 0.0))  # the parts within come rounded to the millisecond: never below 0

    def _add(self, part: str, seconds: float) -> None:
        self.seconds[part] = round(self.seconds.get(part, 0.0) + seconds, 3)


class MetricsWriter:
    """metrics.csv, one row per epoch, flushed as it goes so a killed run keeps its history."""

    def __init__(self, path: Path):
        self.path, self.file, self.writer = path, None, None
        self.rows: list[dict[str, float]] = []
        self.failed: Optional[OSError] = None  # the write that failed (a full disk): the run goes on without the file

    def __call__(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.failed:
            return
        try:
            if self.writer is None:
                self.file = open(self.path, "w", newline="")
                self.writer = csv.DictWriter(self.file, fieldnames=list(row))
                self.writer.writeheader()
            self.writer.writerow(row)
            self.file.flush()
        except OSError as e:  # training is not the file's to stop; task.run reports it once the result is written
            self.failed = e if e.filename else OSError(e.errno, e.strerror, str(self.path))

    def close(self) -> None:
        if self.file:
            try:
                self.file.close()
            except OSError as e:  # the last buffered bytes could not be written
                self.failed = self.failed or OSError(e.errno, e.strerror, str(self.path))


class ProgressBar:
    """A one-line bar redrawn after each epoch, for a single run on a terminal."""

    def __init__(self, max_epochs: int, stream=sys.stdout):
        self.max_epochs, self.stream = max_epochs, stream

    def __call__(self, row: dict[str, float]) -> None:
        done = int(30 * row["epoch"] / self.max_epochs)
        self.stream.write(f"\repoch {row['epoch']:>3}/{self.max_epochs} [{'#' * done}{'.' * (30 - done)}] "
                          f"val_recon_mse={row['val_recon_mse']:.5g} ({row['seconds']:.1f} s/epoch) ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


class RunLog(logging.FileHandler):
    """run.log (conf/config.yaml, hydra.job_logging): a write that fails, on a full disk, costs one line on
    stderr, once, where logging's own handler printed a traceback ("--- Logging error ---") for every record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        e = sys.exc_info()[1]
        why = (e.strerror or str(e)) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
        try:
            print(f"vaebench: warning: cannot write {self.baseFilename} ({why}); its later lines are lost, the run "
                  "goes on", file=sys.stderr, flush=True)
        except OSError:
            pass
