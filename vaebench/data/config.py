"""Schemas of the data/ config group (conf/data/*.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from vaebench.errors import UserError

MAX_SEED = 2**32 - 1  # seeds go to numpy, torch and scikit-learn, whose random_state stops here (config.MAX_SEED)


@dataclass
class DataConfig:
    name: str = "synthetic"
    cache_dir: Optional[str] = None  # null = $VAEBENCH_CACHE, $XDG_CACHE_HOME/vaebench or ~/.cache/vaebench
    split_seed: Optional[int] = None  # seed of the train/validation split; null = the run's seed
    test_fraction: float = 0.0  # rows held out from training and selection (data/split.py); 0 = no test rows

    def __post_init__(self) -> None:
        if self.split_seed is not None and not 0 <= self.split_seed <= MAX_SEED:
            raise UserError(f"config key 'data.split_seed': must be in 0 ... {MAX_SEED} (2**32 - 1, as seed) or null, "
                            f"got {self.split_seed}")
        if not 0 <= self.test_fraction < 1:
            raise UserError(f"config key 'data.test_fraction': must be in [0, 1), got {self.test_fraction}")


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
        super().__post_init__()
        for key, value, low in (("n_samples", self.n_samples, 4), ("n_genes", self.n_genes, 1),
                                ("n_types", self.n_types, 1), ("rank", self.rank, 1)):
            if value < low:
                raise UserError(f"config key 'data.{key}': must be >= {low}, got {value}")
        if self.noise < 0:
            raise UserError(f"config key 'data.noise': must be >= 0, got {self.noise}")


class Mad(Enum):
    median = "median"  # median absolute deviation from the median
    mean = "mean"  # mean absolute deviation from the mean: pandas < 2's DataFrame.mad, which tybalt used


class Scaling(Enum):
    zeroone = "zeroone"  # per-gene min-max to [0, 1]; a constant gene becomes 0
    none = "none"  # the file is already in [0, 1]


class ScalerFit(Enum):
    all = "all"  # min and max over every sample (tybalt)
    train = "train"  # over the run's training split only; other values are clipped to [0, 1]


class NanPolicy(Enum):
    error = "error"
    zero = "zero"  # tybalt's fillna(0)


@dataclass
class FileDataConfig(DataConfig):
    """A matrix read from a file; the preparation steps run in the order of the fields below."""

    path: Optional[str] = None  # required; checked below for a message that says how to give it
    label_column: Optional[str] = None  # a column of labels_path when given, else of the data file itself
    labels_path: Optional[str] = None  # side table: sample id in the first column, labels in label_column
    nan_policy: NanPolicy = NanPolicy.error
    log1p: bool = False
    n_genes: Optional[int] = None  # keep this many genes, largest MAD first; null = all, in file order
    mad: Mad = Mad.median
    scaling: Scaling = Scaling.zeroone
    scaler_fit: ScalerFit = ScalerFit.all

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path and not getattr(self, "url", None):  # a public data set is fetched from its url
            raise UserError(f"config key 'data.path': data={self.name} needs the file to read: data.path=FILE")
        if self.n_genes is not None and self.n_genes < 1:
            raise UserError(f"config key 'data.n_genes': must be >= 1 or null, got {self.n_genes}")


@dataclass
class TableDataConfig(FileDataConfig):
    name: str = "table"  # samples x genes: .csv/.tsv (gzip or not), .parquet, .npy


@dataclass
class XenaDataConfig(FileDataConfig):
    name: str = "xena"  # genes x samples, UCSC Xena's HiSeqV2 layout
    n_genes: Optional[int] = 5000
    sample_id_length: Optional[int] = None  # cut sample ids to this many characters (tybalt: 15)
    sort_samples: bool = False  # order samples by id (tybalt)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_id_length is not None and self.sample_id_length < 1:
            raise UserError(f"config key 'data.sample_id_length': must be >= 1 or null, got {self.sample_id_length}")


@dataclass
class H5adDataConfig(FileDataConfig):
    name: str = "h5ad"  # AnnData: obs = samples, var = genes
    n_genes: Optional[int] = 5000
    layer: Optional[str] = None  # null = X, else one of adata.layers


@dataclass
class PublicDataConfig(XenaDataConfig):
    """A public Xena matrix fetched by name (vaebench/data/public.py); data.path = a copy fetched by hand."""
    name: str = "public"
    url: str = ""  # the matrix
    sha256: Optional[str] = None  # published checksum; null = recorded on first download, checked after
    labels_url: Optional[str] = None  # side table of labels, sample ids in its first column
    labels_sha256: Optional[str] = None
    cohort: Optional[str] = None  # data=tcga_cohort: the TCGA study abbreviation the urls are built from

    def __post_init__(self) -> None:
        if not self.url and not self.path:
            raise UserError(f"config key 'data.url': data={self.name} needs the url to fetch (or data.path=FILE)")
        super().__post_init__()
        self.sha256 = sha256_value("data.sha256", self.sha256)
        self.labels_sha256 = sha256_value("data.labels_sha256", self.labels_sha256)


SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_value(key: str, value: Optional[str]) -> Optional[str]:
    """A SHA-256 as 64 hex digits (lower case; a 'sha256:' prefix, as pooch writes it, is dropped), or null."""
    if value is None:
        return None
    digest = str(value).strip().lower().removeprefix("sha256:")
    if not SHA256.fullmatch(digest):
        raise UserError(f"config key '{key}': a SHA-256 is 64 hexadecimal digits, got {str(value)[:80]!r} "
                        f"({len(str(value))} characters); copy it from the publisher, or null to record it on first download")
    return digest


# conf/data/tybalt.yaml is xena with tybalt's settings: same schema, same loader.
DATA_SCHEMAS = {"synthetic": SyntheticDataConfig, "table": TableDataConfig, "xena": XenaDataConfig,
                "tybalt": XenaDataConfig, "h5ad": H5adDataConfig, "tcga_pancan": PublicDataConfig,
                "tcga_cohort": PublicDataConfig}
