"""GPU checks: run with `make test-cuda` on a machine with CUDA; skipped with a reason elsewhere."""

from __future__ import annotations

import pytest
import torch

from conftest import make_config
from vaebench.task import run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_each_model_trains_on_the_gpu(model, tmp_path):
    result = run(make_config(f"model={model}", "device=auto"), tmp_path)
    assert result["status"] == "ok" and result["device"].startswith("cuda")
    assert result["peak_memory_kind"] == "cuda_max_allocated" and result["peak_memory_mb"] > 0


def test_same_seed_same_numbers_on_the_gpu(tmp_path):
    a = run(make_config("device=cuda", "seed=3"), tmp_path / "a")
    b = run(make_config("device=cuda", "seed=3"), tmp_path / "b")
    assert a["val_recon_mse"] == pytest.approx(b["val_recon_mse"], rel=1e-5)


def test_infovae_latent_200_batch_1000_fits_in_little_memory(tmp_path):
    # The study lost these runs to out-of-memory on a 4 GB GPU; the MMD is O(batch^2) here.
    result = run(make_config("model=infovae", "latent_dim=200", "trainer.batch_size=1000", "data.n_samples=2200",
                             "data.n_genes=5000", "trainer.max_epochs=1", "device=cuda"), tmp_path)
    assert result["status"] == "ok" and result["peak_memory_mb"] < 1024


def test_peak_memory_is_reset_between_jobs_of_one_process(tmp_path):
    big = run(make_config("model=infovae", "latent_dim=200", "trainer.batch_size=1000", "data.n_samples=2200",
                          "data.n_genes=2000", "device=cuda"), tmp_path / "big")
    small = run(make_config("data.n_samples=2200", "data.n_genes=2000", "trainer.batch_size=64", "device=cuda"),
                tmp_path / "small")
    assert small["peak_memory_mb"] < big["peak_memory_mb"]
