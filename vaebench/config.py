"""Typed schemas behind conf/: Hydra checks keys and types at composition, __post_init__ checks ranges.

Every YAML option in conf/<group>/ names its schema in its defaults list (/schema/<group>/<name>), so a
misspelt key or a wrong type stops before any training. `validate(cfg)` builds the dataclasses, which
runs the range checks below; the task and the sweeper both call it before a job trains.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vaebench.data.config import DATA_SCHEMAS
from vaebench.errors import UserError, auto_or, require
from vaebench.models import MODEL_CONFIGS


FLOAT32_MAX = 3.4028234663852886e38  # the models train in float32: a larger lr overflows in the optimizer
MAX_SEED = 2**32 - 1


@dataclass
class OptimizerConfig:
    name: str = MISSING
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        require(self.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optimizer.betas",
                f"needs two numbers in [0, 1), got {list(self.betas)}")


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.0


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0


class Stopping(Enum):
    study = "study"  # the study's rule: validation loss fell and validation recon moved < rel_tol (losses.md 7a)
    patience = "patience"  # no better validation loss for trainer.patience epochs; the best epoch is reported


class Fault(Enum):  # trainer.fault: raise this failure in the first step, to exercise a sweep's failure paths
    oom = "oom"
    error = "error"
    diverge = "diverge"  # the loss becomes NaN (not named "nan": Hydra would read that as a float)
    fatal = "fatal"  # a fatal device error (as CUDA's illegal memory access): the worker runs no further job


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    stopping: Stopping = Stopping.study
    rel_tol: float = 0.01  # stopping=study
    patience: int = 10  # stopping=patience
    batch_size: Any = 1000  # rows per step, or "auto" (batch_for); OmegaConf has no Union[str, int]
    scheduler_gamma: float = 0.95
    val_fraction: float = 0.1
    drop_last: bool = False
    threads: Optional[int] = None
    latent_metrics: bool = True  # score the latent space against the data's labels after training
    nll_samples: int = 64  # encoder draws per row of the held-out likelihood (val_nll_is); 0 = not estimated
    compile: bool = False  # torch.compile the step's forward and loss (opt-in; numbers within float tolerance)
    amp: bool = False  # bf16 autocast of the forward (opt-in; numbers move at bf16 precision)
    cuda_graphs: bool = False  # torch.compile mode reduce-overhead of the whole step, optimizer included (opt-in)
    fault: Optional[Fault] = None
    # Artifacts beside result.json (vaebench/artifacts.py); null = on for a single run, off in a sweep (-m).
    save_model: Optional[bool] = None  # model.pt: weights, model config, the data preparation (vaebench-embed)
    save_latent: Optional[bool] = None  # latent.csv (+ latent.h5ad for .h5ad input): every sample's mu, log-var

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "trainer.max_epochs", f"must be >= 1, got {self.max_epochs}")
        require(self.rel_tol >= 0, "trainer.rel_tol", f"must be >= 0, got {self.rel_tol}")
        require(self.patience >= 1, "trainer.patience", f"must be >= 1, got {self.patience}")
        self.batch_size = auto_or(self.batch_size, "trainer.batch_size", int, "a whole number >= 2")
        if self.batch_size != "auto":
            require(self.batch_size >= 2, "trainer.batch_size",
                    f"must be >= 2 (BatchNorm needs two rows), got {self.batch_size}")
        require(self.nll_samples >= 0, "trainer.nll_samples", f"must be >= 0, got {self.nll_samples}")
        require(0 < self.scheduler_gamma <= 1, "trainer.scheduler_gamma",
                f"must be in (0, 1], got {self.scheduler_gamma}")
        require(0 < self.val_fraction < 1, "trainer.val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        require(self.threads is None or self.threads >= 1, "trainer.threads",
                f"must be >= 1 or null, got {self.threads}")


    def batch_for(self, n_train: int) -> int:
        """Rows per step for n_train training rows. auto: a tenth of them, so every epoch takes about 10
        optimizer steps (the study's 1,000 of ~9,900 rows), at most 1,000 and at least 2 (BatchNorm)."""
        if self.batch_size != "auto":
            return self.batch_size
        return max(2, min(AUTO_BATCH_MAX, n_train // AUTO_STEPS))


AUTO_STEPS = 10  # trainer.batch_size=auto: optimizer steps per epoch
AUTO_BATCH_MAX = 1000  # ... with batches no larger than the study's


@dataclass
class LoggerConfig:
    name: str = "none"  # none | mlflow (conf/logger/)
    tracking_uri: Optional[str] = None  # mlflow: null = sqlite:///outputs/mlflow.db under the working directory
    experiment: Optional[str] = None  # mlflow: null = the sweep directory's name


@dataclass
class Config:
    model: Any = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    lr: float = 1e-3
    latent_dim: int = 20
    seed: int = 0
    device: str = "auto"
    jobs_per_gpu: Optional[int] = None  # GPU jobs sharing one GPU; null = as many as fit (vaebench.device)
    resume: bool = True

    def __post_init__(self) -> None:
        require(0 < self.lr <= FLOAT32_MAX, "lr", f"must be > 0 and fit a float32 (<= 3.4e38), got {self.lr}")
        require(self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        # numpy, torch and scikit-learn all take the seed; scikit-learn's random_state stops at 2**32 - 1.
        require(0 <= self.seed <= MAX_SEED, "seed", f"must be in 0 ... {MAX_SEED} (2**32 - 1), got {self.seed}")
        require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device",
                f"use auto, cpu, cuda or cuda:N, got {self.device!r}")
        test = self.data.test_fraction
        require(self.trainer.val_fraction + test < 1, "data.test_fraction",
                f"with trainer.val_fraction={self.trainer.val_fraction} it leaves no training rows "
                f"(their sum must be < 1), got {test}")
        require(self.jobs_per_gpu is None or self.jobs_per_gpu >= 1, "jobs_per_gpu",
                f"must be >= 1 or null, got {self.jobs_per_gpu}")


SCHEMAS = {
    "model": MODEL_CONFIGS,
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSpropConfig},
    "data": DATA_SCHEMAS,
    "trainer": {"default": TrainerConfig},
    "logger": {"none": LoggerConfig, "mlflow": LoggerConfig},
}


@functools.cache  # once per process: Hydra's store keeps them, and storing them again costs ~30 ms
def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


def schema_values(schema: type) -> dict[str, Any]:
    """A schema's defaults as plain values, nested as a config is (the caller's own copy)."""
    return copy.deepcopy(_schema_values(schema))


@functools.cache  # every job hashes its config (~3 times): building the five schemas each time cost ~30 ms
def _schema_values(schema: type) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True, throw_on_missing=False)


def schema_defaults(typed: Config) -> dict[str, Any]:
    """The defaults of the schemas a run's config was built from, nested as the config is (for config_hash:
    a key still at its default does not enter a run's identity)."""
    top = schema_values(Config)
    for group in ("model", "optimizer", "data", "trainer"):
        top[group] = schema_values(type(getattr(typed, group)))
        # The option chosen (which model, optimizer, data source) is always part of the identity: each
        # option's schema has its own name as default, so left to the rule above, sgd would hash as adam.
        top[group].pop("name", None)
    return top


def require_finite(node: Any, key: str = "") -> None:
    """No key may be inf or nan: a range check such as lr > 0 lets inf through, and the result would
    store it as null."""
    if isinstance(node, dict):
        for name, value in node.items():
            require_finite(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            require_finite(value, f"{key}[{i}]")
    elif isinstance(node, float):
        require(math.isfinite(node), key, f"must be a finite number, got {node}")


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys no schema defines: a `+key=value` override adds any key, so a misspelt one would be kept and ignored."""
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return []
    known = {f.name for f in dataclasses.fields(schema)}
    found = []
    for key in cfg.keys():
        if key not in known:
            found.append(f"{prefix}{key}")
        elif isinstance(cfg._get_node(key), DictConfig):
            found += unknown_keys(cfg._get_node(key), f"{prefix}{key}.")
    return found


def validate(cfg: DictConfig) -> Config:
    """The composed config as dataclasses, with every range check run; UserError names the bad key."""
    unknown = unknown_keys(cfg)
    if unknown:
        key = unknown[0]
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        close = difflib.get_close_matches(name, [f.name for f in dataclasses.fields(OmegaConf.get_type(node))], n=1)
        hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        raise UserError(f"config key '{key}': not a vaebench setting{hint}")
    try:
        require_finite(OmegaConf.to_container(cfg, resolve=True))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise UserError(f"config: {e}".splitlines()[0]) from None
