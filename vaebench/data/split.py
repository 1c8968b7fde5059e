"""The train/validation split of a data set's rows: seeded, stratified by label when there are labels."""

from __future__ import annotations

from typing import Optional

import numpy as np


def split_indices(n: int, labels: Optional[list[str]], val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; stratified by label when labels exist, so each type is in both."""
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        codes = np.unique(np.asarray(labels), return_inverse=True)[1]
        groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    val = []
    for members in groups:
        members = rng.permutation(members)
        val.append(members[: int(round(val_fraction * len(members)))])
    val_idx = np.sort(np.concatenate(val))
    if len(val_idx) == 0 or len(val_idx) == n:  # tiny strata can round every group to 0
        val_idx = np.sort(rng.permutation(n)[: max(1, min(n - 1, int(round(val_fraction * n))))])
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx
