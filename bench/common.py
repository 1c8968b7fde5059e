"""What every bench section shares: the sizes and targets, the table, running `vaebench`, and the state the
sections pass along (Context: the matrix and its split, the table, the raw timings)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
N_SAMPLES, N_GENES, BATCH = 11000, 5000, 1000
LATENTS = (10, 100, 200)
MODELS = ("vae", "iwae", "infovae", "logcosh")
TARGETS = {"vae@100": 1.15, "epoch": 1.25, "cached_load": 0.5, "fixed": 3.0}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_config(*overrides: str):
    """The typed config vaebench would run with these command-line overrides."""
    from hydra import compose, initialize_config_dir

    from vaebench.cli import conf_dir
    from vaebench.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


def has_trainer_key(key: str) -> bool:
    from vaebench.config import TrainerConfig

    return key in TrainerConfig.__dataclass_fields__


def vaebench_exe(command: str = "vaebench") -> str:
    """An installed command of this environment: vaebench, vaebench-aggregate, vaebench-embed."""
    return str(Path(sys.executable).with_name(command))


def run_cli(args: list[str], env: Optional[dict] = None, timeout: float = 1200) -> float:
    """Run the installed `vaebench` as a user would; return its wall time (process start to exit)."""
    started = time.perf_counter()
    proc = subprocess.run([vaebench_exe(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench: vaebench {' '.join(args)} failed with exit status {proc.returncode}")
    return wall


class Table:
    """The one table the bench prints: a row per figure, with its reference and target where it has them."""

    COLUMNS = [("section", "section"), ("what", "measurement"), ("value", "median"), ("reference", "reference"),
               ("ratio", "ratio"), ("cpu", "CPU-time ratio, 1 thread"), ("target", "target"), ("met", "met"),
               ("note", "note")]

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, section: str, what: str, value: str, reference: str = "", ratio: Optional[float] = None,
            target: str = "", met: Optional[str | bool] = None, note: str = "", cpu: Optional[float] = None) -> None:
        if isinstance(met, bool):
            met = "yes" if met else "**no**"
        self.rows.append({"section": section, "what": what, "value": value, "reference": reference,
                          "ratio": "" if ratio is None else f"{ratio:.2f}x", "target": target, "met": met or "",
                          "cpu": "" if cpu is None else f"{cpu:.2f}x", "note": note})
        r = self.rows[-1]
        print(f"  {section:7s} {what:52s} {value:>9s} {r['ratio']:>6s} {r['cpu']:>6s}  {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(h for _, h in self.COLUMNS) + " |", "|" + "---|" * len(self.COLUMNS)]
        lines += ["| " + " | ".join(str(r[k]) for k, _ in self.COLUMNS) + " |" for r in self.rows]
        return "\n".join(lines)


def secs(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"



@dataclass
class Context:
    """What the sections share: the command's arguments, the bench's temporary dir, the table and the raw
    timings they add to, and (after load) the matrix and the run's split."""
    args: argparse.Namespace
    tmp: Path
    table: Table = field(default_factory=Table)
    raw: dict[str, Any] = field(default_factory=dict)
    x: Optional[Tensor] = None
    train_idx: Any = None
    val_idx: Any = None
    shape: tuple[int, ...] = (N_SAMPLES, N_GENES)  # the built-in matrix's samples and genes (and labels)
    batch: int = BATCH

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    @property
    def data_overrides(self) -> list[str]:
        types = [f"data.n_types={self.shape[2]}"] if len(self.shape) > 2 else []
        return [f"data.n_samples={self.shape[0]}", f"data.n_genes={self.shape[1]}", *types,
                f"data.cache_dir={self.cache}", f"trainer.batch_size={self.batch}"]


def load(ctx: Context) -> None:
    """The matrix as a tensor and the run's split, as vaebench.task does (from the cache)."""
    from vaebench.data import load_dataset
    from vaebench.data.split import split_indices

    cfg = compose_config(*ctx.data_overrides)
    data = load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
    ctx.x = torch.tensor(np.asarray(data.x))
    ctx.train_idx, ctx.val_idx = split_indices(len(ctx.x), data.labels, cfg.trainer.val_fraction, cfg.seed)
