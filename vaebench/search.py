"""What a job returns to Hydra's sweeper: the value an optimizing sweeper (`hydra/sweeper=optuna`) minimises.

A successful run returns its val_recon_mse. A run that failed (diverged, oom, error) has no value, and must not
look like one: it returns a `FailedRun`, whose float() raises with the run's status, so that hydra-optuna-sweeper
tells Optuna the trial FAILED ("Failed experiment: ... Got 'diverged in epoch 3: ...'"), instead of a bare None
("Return value must be float-castable. Got 'None'"). The grid sweeper ignores return values.
"""

from __future__ import annotations

from typing import Any, Union

from vaebench.results import F


class FailedRun:
    """A failed run's return value: its status in words; not a number (float() raises ValueError)."""

    def __init__(self, text: str):
        self.text = text

    def __float__(self) -> float:
        raise ValueError(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"FailedRun({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FailedRun) and other.text == self.text


def objective_value(result: dict[str, Any]) -> Union[float, FailedRun]:
    """The value a sweeper minimises for one finished job (a skipped, already finished job as well)."""
    value = result.get(F.val_recon_mse)
    if result.get(F.status) == "ok" and value is not None:
        return float(value)
    status = result.get(F.status) or "error"
    where = f" in epoch {result[F.failed_epoch]}" if result.get(F.failed_epoch) else ""
    error = result.get(F.error)
    why = error.splitlines()[0][:200] if error else ("no val_recon_mse" if status == "ok" else "")
    return FailedRun(f"{status}{where}" + (f": {why}" if why else "") + " (the trial failed; see its result.json)")
