"""Every data source ends as one `Dataset`: a float32 samples x genes matrix in [0, 1] plus its names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # annotations only: the data package's config is read at start-up, before numpy is needed
    import numpy as np


@dataclass
class Dataset:
    x: np.ndarray  # float32 [n_samples, n_genes], values in [0, 1]
    sample_ids: list[str]
    gene_names: list[str]
    labels: Optional[list[str]]  # one per sample (e.g. cancer type), or None
    fingerprint: str  # identifies source + preparation; equal fingerprints mean equal matrices
    preprocessing: dict[str, Any] = field(default_factory=dict)  # recorded in each result.json
    # Each gene's minimum and maximum that zero-one scaling used ({"low": array, "high": array}; None when the
    # values were used as read): a saved model scales a new matrix with the same numbers (vaebench-embed).
    scaler: Optional[dict[str, np.ndarray]] = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape


def load_dataset(data_cfg: Any, val_fraction: Optional[float] = None, seed: Optional[int] = None) -> Dataset:
    """The data set a `data/` config names, from the on-disk cache when it is there.

    val_fraction and seed are the run's (trainer.val_fraction, the split's seed): data.scaler_fit=train fits
    the scaler on the training rows of exactly the split that training uses (data.test_fraction included).
    """
    from omegaconf import DictConfig, OmegaConf

    from vaebench.data import prepare, synthetic

    if isinstance(data_cfg, DictConfig):  # the typed schema object, with its range checks run
        data_cfg = OmegaConf.to_object(data_cfg)
    if data_cfg.name == "synthetic":
        return synthetic.load(data_cfg)
    if data_cfg.name in ("tcga_pancan", "tcga_cohort"):  # fetched by name, then read as any Xena matrix
        from vaebench.data import cache, public

        data_cfg = public.local_config(data_cfg, cache.cache_root(data_cfg.cache_dir))
    return prepare.load(data_cfg, val_fraction, seed)
