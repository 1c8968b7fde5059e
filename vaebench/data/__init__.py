"""Every data source ends as one `Dataset`: a float32 samples x genes matrix in [0, 1] plus its names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Dataset:
    x: np.ndarray  # float32 [n_samples, n_genes], values in [0, 1]
    sample_ids: list[str]
    gene_names: list[str]
    labels: Optional[list[str]]  # one per sample (e.g. cancer type), or None
    fingerprint: str  # identifies source + preparation; equal fingerprints mean equal matrices
    preprocessing: dict[str, Any] = field(default_factory=dict)  # recorded in each result.json

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape


def load_dataset(data_cfg: Any) -> Dataset:
    """The data set a `data/` config names, from the on-disk cache when it is there."""
    from vaebench.data import synthetic

    loaders = {"synthetic": synthetic.load}
    return loaders[data_cfg.name](data_cfg)
