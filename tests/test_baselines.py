"""Baselines and collapse diagnostics: exact answers on hand-made matrices and encoders, and a collapsed
run marked in result.json and its progress line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_config
from vaebench import baselines
from vaebench.latent import posterior
from vaebench.models import VAE
from vaebench.results import describe
from vaebench.task import run


def rank_one_data():
    """Training rows on the line m + a v; validation rows off it by c w, with w orthogonal to v."""
    f = 6
    m = np.array([0.5, 0.4, 0.3, 0.6, 0.2, 0.5])
    v = np.array([1.0, -1.0, 0.0, 0.0, 0.0, 0.0]) / np.sqrt(2)
    w = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]) / np.sqrt(2)
    a = np.array([-0.2, -0.1, 0.0, 0.1, 0.2])  # mean 0: the training mean is m
    b = np.array([0.15, -0.05])
    c = np.array([0.1, -0.3])
    train = m + a[:, None] * v
    val = m + b[:, None] * v + c[:, None] * w
    x = torch.tensor(np.vstack([train, val]), dtype=torch.float64)
    return x, np.arange(5), np.arange(5, 7), (b, c, f)


def test_mean_predictor_and_pca_errors_are_exact():
    x, train_idx, val_idx, (b, c, f) = rank_one_data()
    # Mean predictor: each validation row is off the training mean by b v + c w (|v| = |w| = 1, v . w = 0).
    assert baselines.mean_predictor_mse(x, train_idx, val_idx) == pytest.approx(np.mean(b ** 2 + c ** 2) / f)
    # PCA with one component finds v exactly; what is left of each validation row is c w.
    pca = baselines.fit_pca(x, train_idx, 1)
    assert baselines.pca_mse(pca, x, val_idx) == pytest.approx(np.mean(c ** 2) / f, rel=1e-5)  # float32 inside
    assert baselines.fit_pca(x, train_idx, 5) is None  # k >= training rows: nothing to reduce
    assert baselines.pca_mse(None, x, val_idx) is None


def test_pca_matches_an_exact_svd_on_low_rank_data():
    # Rank 12 + a little noise, as expression programmes: the randomized SVD finds the same subspace.
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 12, generator=g) @ torch.rand(12, 80, generator=g) + 0.01 * torch.randn(300, 80, generator=g))
    train, val = np.arange(250), np.arange(250, 300)
    centred = x[train] - x[train].mean(0)
    _, s_exact, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    exact = baselines.PCA(mean=x[train].mean(0).double(), components=vh[:5].T, eigenvalues=s_exact[:5] ** 2 / 250,
                          total_variance=float((s_exact ** 2).sum()) / 250)
    fitted = baselines.fit_pca(x, train, 5)
    assert baselines.pca_mse(fitted, x, val) == pytest.approx(baselines.pca_mse(exact, x.double(), val), rel=1e-3)
    # probabilistic PCA's inputs: the top eigenvalues and the trace of the training covariance (divisor n)
    assert fitted.eigenvalues.tolist() == pytest.approx(exact.eigenvalues.tolist(), rel=1e-3)
    assert fitted.total_variance == pytest.approx(exact.total_variance, rel=1e-5)


def encoder_using(k: int, d: int = 4, f: int = 6) -> VAE:
    """A VAE whose posterior mean copies the first k inputs (scaled up) and ignores the rest."""
    model = VAE(f, d, hidden_dims=[f])
    with torch.no_grad():
        lin, bn = model.encoder[0][0], model.encoder[0][1]
        lin.weight.copy_(torch.eye(f))
        lin.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.weight.fill_(1.0)
        bn.bias.fill_(5.0)  # keeps every hidden unit above 0, past the ReLU
        model.fc_mu.weight.zero_()
        model.fc_mu.weight[:k, :k] = 3 * torch.eye(k)
        model.fc_mu.bias.fill_(0.7)
        model.fc_log_var.weight.zero_()
        model.fc_log_var.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("k", [0, 1, 3])
def test_active_units_count_the_dims_the_encoder_uses(k):
    x = torch.rand(50, 6, generator=torch.Generator().manual_seed(0))
    diag = baselines.posterior_diagnostics(*posterior(encoder_using(k), x, batch_size=16))
    assert diag["active_units"] == k
    # KL per dim with unit variance is mu^2 / 2, averaged over rows; an unused dim sits at mu = 0.7.
    assert diag["kl_per_dim"][-1] == pytest.approx(0.7 ** 2 / 2, abs=1e-6)
    assert diag["val_kl"] == pytest.approx(sum(diag["kl_per_dim"]), abs=1e-5)


def test_collapse_rule():
    assert baselines.collapse(0.5, 10) == (False, None)
    collapsed, why = baselines.collapse(0.99, 3)
    assert collapsed and "0.99x the per-gene-mean" in why
    collapsed, why = baselines.collapse(0.6, 0)
    assert collapsed and "no active latent unit" in why
    assert baselines.collapse(None, None) == (False, None)  # nothing measured, nothing claimed
    # with the dims that carry the KL: how many, or that none does
    assert baselines.collapse(0.99, 3, 5, 20)[1].endswith("90 % of the KL in 5 of 20 latent dims")
    assert "no latent dim carries information" in baselines.collapse(0.99, 0, 0, 20)[1]
    assert baselines.collapse(0.5, 10, 8, 20) == (False, None)  # a run that learned gets no reason


def test_a_collapsed_run_is_marked(tmp_path):
    # A KL weight that dwarfs the reconstruction: the optimum is q(z|x) = p(z), the decoder a constant.
    result = run(make_config("model.kld_weight=1000", "trainer.max_epochs=6", "lr=1e-2"), tmp_path)
    assert result["status"] == "ok" and result["collapsed"] is True
    assert result["recon_vs_mean"] >= 0.98 or result["active_units"] == 0
    assert result["baseline_mean_mse"] > 0 and result["recon_vs_mean"] == pytest.approx(
        result["val_recon_mse"] / result["baseline_mean_mse"])
    assert "COLLAPSED" in describe(result)  # the progress line of a sweep and the run's last log line


def test_baselines_are_paid_once_per_split(tmp_path, monkeypatch):
    calls = []
    real = baselines.fit_pca
    monkeypatch.setattr(baselines, "fit_pca", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    baselines._cache.clear()
    first = run(make_config("data.split_seed=3", "seed=1"), tmp_path / "a")
    second = run(make_config("data.split_seed=3", "seed=2", "model=iwae"), tmp_path / "b")
    assert calls == [first["latent_dim"]]  # the second run's split and size were already fitted
    assert first["baseline_pca_mse"] == second["baseline_pca_mse"]
    assert first["baseline_mean_mse"] == second["baseline_mean_mse"]
