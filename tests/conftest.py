"""Shared fixtures: a composed, shrunk config (tiny synthetic data, 2 epochs, CPU) and a CLI runner."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vaebench.cli import conf_dir
from vaebench.config import register_configs

REPO = Path(__file__).resolve().parents[1]
# trainer.threads=1: at these shapes a second torch thread only waits for the first (an in-process run cost
# 3 s of CPU with 2 threads, 0.6 s with 1, and far more wall time with two xdist workers on 2 cores). Not part of a
# run's identity (results.NOT_IDENTITY): the same config_hash and the same numbers as with any thread count.
TINY = ["data.n_samples=240", "data.n_genes=40", "trainer.max_epochs=2", "trainer.batch_size=64", "device=cpu",
        "trainer.threads=1"]
_composed: dict[tuple[str, ...], DictConfig] = {}


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory) -> Path:
    """Every test (and every CLI it starts) uses a fresh data cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["VAEBENCH_CACHE"] = str(cache)
    return cache


def make_config(*overrides: str) -> DictConfig:
    """The composed config; each set of overrides is composed once per process (0.2 s of Hydra each time) and every
    caller gets its own deep copy, so a test that changes its config changes no other test's."""
    key = tuple(overrides)
    if key not in _composed:
        register_configs()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            _composed[key] = compose(config_name="config", overrides=[*TINY, *overrides])
    return copy.deepcopy(_composed[key])


def run_cli(*args: str, cwd: Path, timeout: float = 240, entry: str = "vaebench") -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (cwd decides where outputs/ lands)."""
    exe = Path(sys.executable).with_name(entry)
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
