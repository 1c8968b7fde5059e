"""Shared fixtures: a composed, shrunk config (tiny synthetic data, 2 epochs, CPU) and a CLI runner."""

from __future__ import annotations

import copy
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vaebench.cli import conf_dir
from vaebench.config import register_configs
from vaebench.sweep import compose_jobs

REPO = Path(__file__).resolve().parents[1]
# trainer.threads=1: at these shapes a second torch thread only waits for the first (an in-process run cost
# 3 s of CPU with 2 threads, 0.6 s with 1, and far more wall time with two xdist workers on 2 cores). Not part of a
# run's identity (results.NOT_IDENTITY): the same config_hash and the same numbers as with any thread count.
TINY = ["data.n_samples=240", "data.n_genes=40", "trainer.max_epochs=2", "trainer.batch_size=64", "device=cpu",
        "trainer.threads=1"]
# For the processes of tests that check the process (launcher, resume, signals, locks, tracking), not the scores: the
# latent scores import scikit-learn (~1.3 s of CPU), a quarter of such a process. The scores are tested in-process
# (test_latent.py, test_sweep_costs.py, test_objective.py) and through the command (test_cli.py's single run).
UNSCORED = [*TINY, "trainer.latent_metrics=False"]  # False: as Hydra writes it back in a sweep job's directory name
_composed: dict[tuple[str, ...], DictConfig] = {}
_by_options: dict[tuple[str, ...], DictConfig] = {}  # Hydra's compositions, by their group options
GROUPS = frozenset(p.name for p in Path(conf_dir()).iterdir() if p.is_dir())  # model, optimizer, data, ...


@pytest.hookimpl(trylast=True)  # after -m 'not slow' deselects: the shares are of the tests that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long(seconds)` (their rough time on an idle 2-core machine: they start vaebench processes) are
    dealt out, longest first, to the heads of the xdist workers' first shares, so that each worker starts on its
    part of them and the run ends on short tests. make test uses --dist worksteal: worker k first gets the k-th of
    n equal slices of this order, then workers steal from the end of each other's queues. A module's tests are
    then not together: a fixture a long test shares with others is session-scoped, or it is made twice."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    long = sorted((i for i in items if i.get_closest_marker("long")), key=lambda i: i.get_closest_marker("long").args[0],
                  reverse=True)
    short = [i for i in items if not i.get_closest_marker("long")]
    order: list[pytest.Item] = []
    for k in range(workers):
        share = (len(items) - len(order)) // (workers - k)  # worksteal's first split: the rest over the rest
        dealt = long[k::workers]
        order += dealt + short[:share - len(dealt)]
        short = short[share - len(dealt):]
    items[:] = order + short


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test, everything alive is left out of later garbage collections (gc.freeze), as a sweep worker
    does before its first job (vaebench.task.freeze_long_lived). Each in-process run ends with a full collection
    (vaebench.device.release_memory), and the collector's own passes walk every tracked object: with the compiled
    configs, figures and modules that hundreds of tests leave alive, that was up to ~0.35 s each time, a fifth of the
    CPU of test_train, test_faults, test_aggregate and test_artifacts together. The price: cyclic garbage of earlier
    tests is never collected (+60 MB of peak memory over those four files)."""
    gc.freeze()


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory) -> Path:
    """Every test (and every CLI it starts) uses a fresh data cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["VAEBENCH_CACHE"] = str(cache)
    return cache


def make_config(*overrides: str) -> DictConfig:
    """The tests' tiny config with these overrides (see composed)."""
    return composed(*TINY, *overrides)


def composed(*overrides: str) -> DictConfig:
    """The config Hydra composes from these overrides, each caller its own deep copy (a test that changes its config
    changes no other test's). Composed as a sweep's check composes its jobs (vaebench.sweep.compose_jobs): Hydra once
    per set of group options in this process, each change of a setting applied to a copy; the suite asks for ~150
    override sets, at ~0.16 s of CPU each when Hydra composed every one."""
    key = tuple(overrides)
    if key not in _composed:
        (_composed[key],) = compose_jobs([key], compose_with_hydra, GROUPS, _by_options)
    return copy.deepcopy(_composed[key])


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def poisoned(where: Path, *names: str) -> dict[str, str]:
    """An environment in which importing each of `names` fails, naming it."""
    for name in names:
        (where / name).mkdir(parents=True)
        (where / name / "__init__.py").write_text(f"raise ImportError('{name} imported at start-up')\n")
    return {**os.environ, "PYTHONPATH": str(where), "HYDRA_FULL_ERROR": "0"}


def run_cli(*args: str, cwd: Path, timeout: float = 240, entry: str = "vaebench",
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (cwd decides where outputs/ lands); env: the whole environment
    (default: this one)."""
    exe = Path(sys.executable).with_name(entry)
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**(env or os.environ), "HYDRA_FULL_ERROR": "0"})
