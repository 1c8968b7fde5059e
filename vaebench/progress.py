"""What a run shows and records as it goes: metrics.csv, one row per epoch, and a progress bar."""

from __future__ import annotations

import csv
import sys
from pathlib import Path


class MetricsWriter:
    """metrics.csv, one row per epoch, flushed as it goes so a killed run keeps its history."""

    def __init__(self, path: Path):
        self.path, self.file, self.writer = path, None, None
        self.rows: list[dict[str, float]] = []

    def __call__(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.writer is None:
            self.file = open(self.path, "w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


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
