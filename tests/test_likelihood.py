"""The calibrated decoder and the held-out likelihoods (docs/losses.md section 10) against float64
references written as plain loops, numerical integrals of the densities, and exact special cases."""

from __future__ import annotations

import math

import pytest
import torch

from test_losses import L, close, make_batch, ref_kl_rows
from vaebench.baselines import units_carrying
from vaebench.config import TrainerConfig
from vaebench.errors import UserError
from vaebench.likelihood import importance_sampled_nll, no_likelihood_reason, ppca_nll
from vaebench.models import IWAE, VAE, InfoVAE, LogCoshVAE
from vaebench.models.base import log_cb_normaliser
from vaebench.models.logcosh import log_normaliser

F64 = torch.float64


def calibrated(cls, variance="gene", f=6, d=3, **kw):
    model = cls(f, d, hidden_dims=[4], loss_mode="elbo", decoder_variance=variance, **kw).double()
    with torch.no_grad():  # a known, uneven variance per gene: floor + exp(start + shift + gene)
        model.variance.start.copy_(torch.linspace(-5, -2, len(model.variance.start), dtype=F64))
        model.variance.shift.fill_(0.3)
        if model.variance.gene is not None:
            model.variance.gene.copy_(torch.linspace(0.2, -0.4, f, dtype=F64))
    return model


def ref_variance(model):
    v = model.variance
    gene = L(v.gene) if v.gene is not None else [0.0] * model.n_features
    start = L(v.start) * (model.n_features if len(v.start) == 1 else 1)
    return [v.floor + math.exp(s + float(v.shift.detach()) + g) for s, g in zip(start, gene)]


def ref_gaussian_nll(rec_row, x_row, var):
    return math.fsum((r - x) ** 2 / (2 * v) + 0.5 * math.log(v) + 0.5 * math.log(2 * math.pi)
                     for r, x, v in zip(rec_row, x_row, var))


@pytest.mark.parametrize("variance", ["gene", "shared"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_calibrated_vae_elbo_matches_reference(variance, beta):
    out, x = make_batch(seed=31)
    model = calibrated(VAE, variance)
    got = model.loss(out, x, beta)
    var = ref_variance(model)
    xs, rec = L(x), L(out.recon)
    kl = ref_kl_rows(out.mu, out.log_var)
    nll = [ref_gaussian_nll(rec[b], xs[b], var) for b in range(len(xs))]
    f = len(xs[0])
    assert close(got["loss"], math.fsum(n + beta * k for n, k in zip(nll, kl)) / len(nll) / f)
    assert close(got["recon"], math.fsum(nll) / len(nll) / f)
    mse = math.fsum((r - v) ** 2 for rr, xr in zip(rec, xs) for r, v in zip(rr, xr)) / x.numel()
    assert close(got["recon_mse"], mse)  # the plain MSE, whatever the variance


def test_calibrated_iwae_and_infovae_use_the_calibrated_nll():
    out, x = make_batch(s=3, seed=32)
    iwae = calibrated(IWAE, num_samples=3)
    var = ref_variance(iwae)
    xs, rec = L(x), L(out.recon)
    # recon = the mean over rows and samples of the per-row nll, per gene
    nlls = [ref_gaussian_nll(rec[b][j], xs[b], var) for b in range(len(xs)) for j in range(3)]
    assert close(iwae.loss(out, x, 1.0)["recon"], math.fsum(nlls) / len(nlls) / len(xs[0]))
    out, x = make_batch(seed=33)
    info = calibrated(InfoVAE)
    var = ref_variance(info)
    nlls = [ref_gaussian_nll(r, v, var) for r, v in zip(L(out.recon), L(x))]
    assert close(info.loss(out, x, 1.0, prior=torch.zeros_like(out.z))["recon"], math.fsum(nlls) / len(nlls) / 6)


def test_shared_variance_is_optimal_at_the_mean_squared_error():
    # Rybkin et al.'s optimal sigma: for a fixed x_hat, d nll / d sigma^2 = 0 at sigma^2 = MSE.
    out, x = make_batch(seed=34)
    model = calibrated(VAE, "shared")
    mse = float(((out.recon - x) ** 2).mean())
    with torch.no_grad():
        model.variance.shift.zero_()
        model.variance.start.fill_(math.log(mse - model.variance.floor))
    model.loss(out, x, 0.0)["loss"].backward()
    assert abs(float(model.variance.shift.grad)) < 1e-12
    assert float(model.variance().detach()) == pytest.approx(mse)


def test_learned_variance_starts_at_the_training_variance_and_respects_its_floor():
    model = VAE(4, 2, hidden_dims=[3], loss_mode="elbo", decoder_variance="gene", min_decoder_variance=1e-3)
    x = torch.tensor([[0.0, 0.5, 0.2, 0.3], [1.0, 0.5, 0.4, 0.3], [0.5, 0.5, 0.9, 0.3]])
    model.start_variance(x)
    want = x.double().var(0).clamp_min(2e-3)  # a constant gene starts at twice the floor, never below it
    assert model.variance().tolist() == pytest.approx(want.tolist(), rel=1e-5)
    with torch.no_grad():
        model.variance.shift.fill_(-100.0)
    assert model.variance().min().item() == pytest.approx(1e-3)


def test_fixed_variance_adds_no_parameter_and_keeps_the_network_weights():
    torch.manual_seed(0)
    fixed = VAE(8, 3, loss_mode="elbo", decoder_variance="fixed")
    torch.manual_seed(0)
    learned = VAE(8, 3, loss_mode="elbo", decoder_variance="gene")
    assert fixed.variance is None and learned.variance is not None
    extra = set(learned.state_dict()) - set(fixed.state_dict())
    assert extra == {"variance.start", "variance.shift", "variance.gene"}
    assert all(torch.equal(fixed.state_dict()[k], learned.state_dict()[k]) for k in fixed.state_dict())


def test_bad_decoder_variance_settings_are_refused():
    with pytest.raises(UserError, match="model.decoder_variance"):
        VAE(4, 2, loss_mode="elbo", decoder_variance="per_gene")
    with pytest.raises(UserError, match="model.min_decoder_variance"):
        VAE(4, 2, loss_mode="elbo", min_decoder_variance=0.0)


# ---- densities integrate to one ------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.02, 0.3, 0.4999, 0.5, 0.5004, 0.9, 0.999])
def test_continuous_bernoulli_density_integrates_to_one(lam):
    x = torch.linspace(0, 1, 200001, dtype=F64)
    lam_t = torch.full_like(x, lam)
    density = torch.exp(x * math.log(lam) + (1 - x) * math.log1p(-lam) + log_cb_normaliser(lam_t))
    assert float(torch.trapezoid(density, x)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("variance", ["gene", "fixed"])
@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_logcosh_density_integrates_to_one(alpha, variance):
    # One gene: exp(log_likelihood) over the error t must integrate to one, with the learned scale or scale 1.
    model = LogCoshVAE(1, 2, hidden_dims=[2], loss_mode="elbo", alpha=alpha, decoder_variance=variance).double()
    if model.variance is not None:
        with torch.no_grad():
            model.variance.start.fill_(math.log(0.09))  # scale ~0.3
    t = torch.linspace(-60, 60, 1200001, dtype=F64)
    with torch.no_grad():
        density = torch.exp(model.log_likelihood(t.unsqueeze(1), torch.zeros(len(t), 1, dtype=F64)))
    assert float(torch.trapezoid(density, t)) == pytest.approx(1.0, rel=1e-5)
    assert log_normaliser(alpha) == pytest.approx(math.log(math.gamma(1 / (2 * alpha)) * math.gamma(0.5)
                                                           / math.gamma(1 / (2 * alpha) + 0.5) / alpha))


def test_logcosh_fixed_scale_keeps_the_old_elbo():
    out, x = make_batch(seed=35)
    model = LogCoshVAE(6, 3, hidden_dims=[4], loss_mode="elbo", decoder_variance="fixed")
    a = model.config.alpha
    rows = [math.fsum(math.log(math.cosh(a * (r - v))) / a for r, v in zip(rr, xr)) for rr, xr in zip(L(out.recon), L(x))]
    assert close(model.loss(out, x, 0.0)["loss"], math.fsum(rows) / len(rows) / 6)


# ---- importance-sampled likelihood ---------------------------------------------------------------

def ref_is_nll(model, x, samples, seed):
    """The estimator as a float64 loop over rows and draws, with the same draws (one pass: few rows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a reference needs no graph (float() of a graph's scalar warns)
        return _ref_is_nll(model, x, samples, g)


def _ref_is_nll(model, x, samples, g):
    mu, log_var = (t.double() for t in model.encode(x))
    eps = torch.randn((len(x), samples, mu.shape[1]), generator=g, dtype=torch.float32).double()
    model64 = model.double()
    total = 0.0
    for b in range(len(x)):
        log_w = []
        for k in range(samples):
            z = mu[b] + eps[b, k] * torch.exp(0.5 * log_var[b])
            recon = model64.decode(z.unsqueeze(0))[0]
            log_px = float(model64.log_likelihood(recon.unsqueeze(0), x[b].double().unsqueeze(0))[0])
            log_pz = math.fsum(-0.5 * (v * v + math.log(2 * math.pi)) for v in z.tolist())
            log_q = math.fsum(-0.5 * ((zv - m) ** 2 / math.exp(lv) + lv + math.log(2 * math.pi))
                              for zv, m, lv in zip(z.tolist(), mu[b].tolist(), log_var[b].tolist()))
            log_w.append(log_px + log_pz - log_q)
        top = max(log_w)
        total += top + math.log(math.fsum(math.exp(v - top) for v in log_w)) - math.log(samples)
    return -total / (len(x) * x.shape[1])


@pytest.mark.parametrize("cls,likelihood,variance", [(VAE, "gaussian", "gene"), (VAE, "gaussian", "fixed"),
                                                     (VAE, "bernoulli", "fixed"), (IWAE, "gaussian", "shared"),
                                                     (LogCoshVAE, "gaussian", "gene")])
def test_importance_sampled_nll_matches_a_float64_reference(cls, likelihood, variance):
    torch.manual_seed(3)
    model = cls(7, 3, hidden_dims=[5], loss_mode="elbo", likelihood=likelihood, decoder_variance=variance)
    x = torch.rand(6, 7)
    model.start_variance(x)
    model.eval()
    got = importance_sampled_nll(model, x, samples=16, batch_size=6, seed=5)
    assert got == pytest.approx(ref_is_nll(model, x, 16, 5), rel=1e-4)


def test_importance_sampled_nll_is_exact_when_the_posterior_is_the_prior():
    # q(z|x) = p(z) and a decoder that ignores z: every weight log p(x|z) + log p(z) - log q(z|x) is log p(x).
    torch.manual_seed(4)
    model = VAE(5, 2, hidden_dims=[3], loss_mode="elbo", decoder_variance="gene")
    with torch.no_grad():
        for layer in (model.fc_mu, model.fc_log_var, model.decoder[-2]):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.rand(8, 5)
    model.start_variance(x)
    model.eval()
    half = torch.full((8, 5), 0.5)  # sigmoid(0)
    exact = -float(model.log_likelihood(half, x).detach().double().mean()) / 5
    for k in (1, 7):
        assert importance_sampled_nll(model, x, k, batch_size=3, seed=k) == pytest.approx(exact, rel=1e-6)


def test_importance_sampled_nll_leaves_the_run_random_stream_alone():
    model = VAE(5, 2, hidden_dims=[3], loss_mode="elbo", decoder_variance="gene")
    torch.manual_seed(9)
    x = torch.rand(4, 5)
    expected = torch.rand(3)
    torch.manual_seed(9)
    x = torch.rand(4, 5)
    importance_sampled_nll(model, x, 4, 4, seed=1)  # its draws come from a generator of its own
    assert torch.equal(torch.rand(3), expected)


def test_objectives_without_a_likelihood_say_why():
    assert "loss_mode=paper" in no_likelihood_reason(VAE(4, 2, loss_mode="paper"))
    assert no_likelihood_reason(VAE(4, 2, loss_mode="elbo")) is None


# ---- probabilistic PCA ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_train,f,k", [(60, 8, 3), (5, 8, 2)])  # the second has fewer rows than genes
def test_ppca_nll_matches_the_dense_gaussian(n_train, f, k):
    g = torch.Generator().manual_seed(n_train)
    train = torch.rand(n_train, 3, generator=g, dtype=F64) @ torch.rand(3, f, generator=g, dtype=F64) \
        + 0.1 * torch.rand(n_train, f, generator=g, dtype=F64)
    held_out = torch.rand(7, f, generator=g, dtype=F64)
    mean = train.mean(0)
    cov = (train - mean).T @ (train - mean) / n_train
    lam, u = torch.linalg.eigh(cov)
    lam, u = lam.flip(0), u.flip(1)  # descending
    sigma2 = float(lam[k:].clamp_min(0).sum()) / (f - k)  # the zero eigenvalues count in the mean
    w = u[:, :k] @ torch.diag((lam[:k] - sigma2).sqrt())
    c = w @ w.T + sigma2 * torch.eye(f, dtype=F64)
    dense = torch.distributions.MultivariateNormal(mean, covariance_matrix=c).log_prob(held_out)
    got = ppca_nll(mean, u[:, :k], lam[:k], float(torch.trace(cov)), held_out)
    assert got == pytest.approx(-float(dense.mean()) / f, rel=1e-9)


# ---- units that carry information, the automatic batch size --------------------------------------

def test_units_carrying_ninety_percent_of_the_kl():
    assert units_carrying(torch.tensor([5.0, 1.0, 3.0, 1.0])) == 3  # 5 + 3 + 1 = 9 of 10
    # a dim that carries most and many that carry a little: 3 + 7 x 0.12 = 3.84 >= 0.9 x 4.2, 3 + 6 x 0.12 is not
    assert units_carrying(torch.tensor([3.0] + [0.12] * 10, dtype=F64)) == 8
    assert units_carrying(torch.zeros(4)) == 0
    assert units_carrying(torch.tensor([1.7])) == 1
    assert units_carrying(torch.full((20,), 0.0067)) == 0  # 0.13 nats spread over 20 dims: nothing carried


@pytest.mark.parametrize("n_train,want", [(1084, 108), (9900, 990), (50000, 1000), (15, 2), (3, 2)])
def test_auto_batch_gives_about_ten_steps_an_epoch(n_train, want):
    assert TrainerConfig(batch_size="auto").batch_for(n_train) == want
    assert TrainerConfig(batch_size=64).batch_for(n_train) == 64


def test_bad_batch_size_is_refused_in_one_line():
    with pytest.raises(UserError, match="trainer.batch_size.*auto or a whole number"):
        TrainerConfig(batch_size="big")
    with pytest.raises(UserError, match="trainer.batch_size"):
        TrainerConfig(batch_size=1)
