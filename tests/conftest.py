"""Shared fixtures: a composed, shrunk config (tiny synthetic data, 2 epochs, CPU) and a CLI runner."""

from __future__ import annotations

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
TINY = ["data.n_samples=240", "data.n_genes=40", "trainer.max_epochs=2", "trainer.batch_size=64", "device=cpu"]


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory) -> Path:
    """Every test (and every CLI it starts) uses a fresh data cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["VAEBENCH_CACHE"] = str(cache)
    return cache


def make_config(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def run_cli(*args: str, cwd: Path, timeout: float = 240, entry: str = "vaebench") -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (cwd decides where outputs/ lands)."""
    exe = Path(sys.executable).with_name(entry)
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
