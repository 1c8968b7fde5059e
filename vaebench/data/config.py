"""Schemas of the data/ config group (conf/data/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vaebench.errors import UserError


@dataclass
class DataConfig:
    name: str = "synthetic"
    cache_dir: Optional[str] = None  # null = $VAEBENCH_CACHE, $XDG_CACHE_HOME/vaebench or ~/.cache/vaebench


@dataclass
class SyntheticDataConfig(DataConfig):
    name: str = "synthetic"
    n_samples: int = 11000
    n_genes: int = 5000
    n_types: int = 30
    rank: int = 12
    noise: float = 0.35
    seed: int = 0

    def __post_init__(self) -> None:
        for key, value, low in (("n_samples", self.n_samples, 4), ("n_genes", self.n_genes, 1),
                                ("n_types", self.n_types, 1), ("rank", self.rank, 1)):
            if value < low:
                raise UserError(f"config key 'data.{key}': must be >= {low}, got {value}")
        if self.noise < 0:
            raise UserError(f"config key 'data.noise': must be >= 0, got {self.noise}")


DATA_SCHEMAS = {"synthetic": SyntheticDataConfig}
