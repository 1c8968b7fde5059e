"""Start-up (issue 22): `vaebench --help`, `--cfg job`, a config error and a resumed, finished sweep never import
torch (3-4 s of every typo before), nor numpy or joblib where they are not needed. Checked with a torch that
cannot be imported: each command must behave as usual without it."""

from __future__ import annotations

import json

import pytest

from conftest import UNSCORED, poisoned, run_cli


@pytest.fixture
def no_torch(tmp_path) -> dict[str, str]:
    """Composing and checking a configuration needs neither torch nor numpy nor joblib."""
    return poisoned(tmp_path / "poisoned", "torch", "numpy", "joblib")


def test_help_cfg_and_a_typo_import_no_torch(tmp_path, no_torch):
    helped = run_cli("--help", cwd=tmp_path, env=no_torch)
    assert helped.returncode == 0 and "data.rank=12" in helped.stdout, helped.stderr[-2000:]
    shown = run_cli("--cfg", "job", "model=iwae", cwd=tmp_path, env=no_torch)
    assert shown.returncode == 0 and "num_samples: 5" in shown.stdout, shown.stderr[-2000:]
    typo = run_cli("latnt_dim=5", cwd=tmp_path, env=no_torch)
    assert typo.returncode == 2 and typo.stderr.strip().endswith("did you mean latent_dim?"), typo.stderr[-2000:]
    out_of_range = run_cli("latent_dim=0", cwd=tmp_path, env=no_torch)
    assert out_of_range.returncode == 2 and "'latent_dim'" in out_of_range.stderr, out_of_range.stderr[-2000:]


@pytest.mark.long(9)
def test_a_finished_sweep_resumes_without_torch(tmp_path):
    no_torch = poisoned(tmp_path / "poisoned", "torch")  # numpy reads the cached data
    grid = ["-m", "seed=0,1", *UNSCORED, "hydra.sweep.dir=sweep"]
    first = run_cli(*grid, "hydra.launcher.n_jobs=1", cwd=tmp_path)  # in this process: one import of torch
    assert first.returncode == 0, first.stderr[-2000:]
    results = sorted((tmp_path / "sweep").rglob("result.json"))
    assert len(results) == 2
    before = [p.read_text() for p in results]
    # Rerun as a user reruns it, with the default launcher: its worker count (one per core) is counted without
    # torch, and each job finds its result without it, in the main process or in a worker.
    again = run_cli(*grid, cwd=tmp_path, env=no_torch)  # every job finished: read, never trained
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("-> skipped") == 2 and "[2/2]" in again.stdout, again.stdout
    assert [p.read_text() for p in results] == before
    assert all(json.loads(t)["status"] == "ok" for t in before)


def test_aggregate_and_embed_answer_help_and_a_missing_path_without_the_data_libraries(tmp_path):
    """`vaebench-aggregate --help` and a path that is not there answer before pandas, seaborn, SciPy, statsmodels
    (and torch) load, `vaebench-embed --help` before torch: 2 to 2.5 s each before, a few hundredths now."""
    env = poisoned(tmp_path / "poisoned", "torch", "numpy", "pandas", "matplotlib", "seaborn", "scipy", "statsmodels")
    helped = run_cli("--help", cwd=tmp_path, entry="vaebench-aggregate", env=env)
    assert helped.returncode == 0 and "--metric" in helped.stdout, helped.stderr[-2000:]
    missing = run_cli(str(tmp_path / "nowhere"), cwd=tmp_path, entry="vaebench-aggregate", env=env)
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert missing.stderr == f"vaebench-aggregate: error: no such file or directory: {tmp_path / 'nowhere'}\n"
    embed = run_cli("--help", cwd=tmp_path, entry="vaebench-embed", env=env)
    assert embed.returncode == 0 and "MATRIX" in embed.stdout, embed.stderr[-2000:]
