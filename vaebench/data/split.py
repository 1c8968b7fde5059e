"""The train/validation(/test) split of a data set's rows: seeded, stratified by label when there are labels.

data.test_fraction > 0 first holds out test rows, then splits the rest into training and validation. The test
rows are drawn with data.split_seed (0 when null), never with the run's seed: every run of a sweep, whatever
its seed, holds out the same rows, so no run trains or selects on another run's test rows, and the best
configuration that vaebench-aggregate chooses on validation rows can be scored on rows no run has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def split_indices(n: int, labels: Optional[list[str]], val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split with round(val_fraction x n) validation rows (at least one, and at
    least one training row); stratified by label when labels exist.

    Each label gets its share rounded down, then the rows still missing go one each to the labels with the
    largest remainders (Hamilton's method). Rounding each label on its own would drop a row per small label:
    600 samples in 30 labels gave 2 validation rows instead of 60. A label never gives its last row to
    validation, so the probe and the scaler see every label in training.
    """
    rng = np.random.default_rng(seed)
    target = max(1, min(n - 1, int(round(val_fraction * n))))
    if labels is None:
        groups = [np.arange(n)]
    else:
        codes = np.unique(np.asarray(labels), return_inverse=True)[1]
        groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    members = [rng.permutation(g) for g in groups]
    sizes = np.array([len(g) for g in groups])
    share = val_fraction * sizes
    counts = np.minimum(np.floor(share).astype(int), np.maximum(sizes - 1, 0))
    room = np.maximum(sizes - 1, 0) - counts
    # Largest remainder first; ties broken by a seeded draw, not by label order.
    order = np.lexsort((rng.permutation(len(groups)), -(share - counts)))
    missing = target - counts.sum()
    for g in order:
        if missing <= 0:
            break
        if room[g] > 0:
            counts[g] += 1
            missing -= 1
    if missing > 0:  # only labels of one row left (every label a single sample): take those rows
        singles = [g for g in order if sizes[g] == 1 and counts[g] == 0][:missing]
        counts[singles] = 1
    val_idx = np.sort(np.concatenate([m[:c] for m, c in zip(members, counts)]).astype(np.int64))
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def split_seed(cfg) -> int:
    """The seed of a run's train/validation split (cfg: the typed Config): data.split_seed, or the run's seed
    when that is null."""
    return cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed


def holdout_seed(data_cfg) -> int:
    """The seed of the test rows (data_cfg: the typed data config): data.split_seed, or 0 when null; never the
    run's seed, so that every seed of a sweep holds out the same rows."""
    return 0 if data_cfg.split_seed is None else data_cfg.split_seed


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray  # empty unless data.test_fraction > 0


def split_rows(n: int, labels: Optional[list[str]], val_fraction: float, seed: int, test_fraction: float = 0.0,
               holdout_seed: int = 0) -> Split:
    """Training, validation and test rows. test_fraction 0: split_indices' split, unchanged, and no test row.
    Otherwise round(test_fraction x n) rows are held out first (seeded by holdout_seed, stratified like the
    validation rows), and the rest is split so that validation keeps about val_fraction of all n rows."""
    if test_fraction <= 0:
        train, val = split_indices(n, labels, val_fraction, seed)
        return Split(train, val, np.empty(0, dtype=np.int64))
    rest, test = split_indices(n, labels, test_fraction, holdout_seed)
    rest_labels = None if labels is None else [labels[i] for i in rest]
    train, val = split_indices(len(rest), rest_labels, val_fraction / (1 - test_fraction), seed)
    return Split(rest[train], rest[val], test)


def run_split(cfg, n: int, labels: Optional[list[str]]) -> Split:
    """The split a run trains, stops and is scored on (cfg: the typed Config)."""
    return split_rows(n, labels, cfg.trainer.val_fraction, split_seed(cfg), cfg.data.test_fraction,
                      holdout_seed(cfg.data))
