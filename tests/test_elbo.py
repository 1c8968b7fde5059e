"""The per-sample ELBO objective (model.loss_mode=elbo, docs/losses.md section 10) of all four models
against float64 references written as plain loops, and its invariants."""

from __future__ import annotations

import math

import pytest
import torch

from test_losses import L, close, log_normal, make_batch, make_prior, ref_kl_rows, ref_mmd_term
from vaebench.models import IWAE, VAE, InfoVAE, LogCoshVAE


def elbo_model(cls, likelihood="gaussian", **kw):
    return cls(6, 3, hidden_dims=[4], loss_mode="elbo", likelihood=likelihood, **kw)


def ref_nll(rec_row, x_row, likelihood):
    """-log p(x | x_hat) of one row, summed over genes, constants dropped."""
    if likelihood == "gaussian":
        return math.fsum((r - v) ** 2 for r, v in zip(rec_row, x_row))
    eps = 1e-6
    rec_row = [min(max(r, eps), 1 - eps) for r in rec_row]
    return -math.fsum(v * math.log(r) + (1 - v) * math.log(1 - r) for r, v in zip(rec_row, x_row))


def ref_vae_elbo(out, x, beta, likelihood):
    xs, recon = L(x), L(out.recon)
    f = len(xs[0])
    kl = ref_kl_rows(out.mu, out.log_var)
    per_row = [ref_nll(recon[b], xs[b], likelihood) + beta * kl[b] for b in range(len(xs))]
    nll = [ref_nll(recon[b], xs[b], likelihood) for b in range(len(xs))]
    return {"loss": math.fsum(per_row) / len(per_row) / f, "recon": math.fsum(nll) / len(nll) / f,
            "kld": math.fsum(kl) / len(kl)}


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 4.0])
def test_vae_elbo_matches_reference(likelihood, beta):
    out, x = make_batch(seed=21)
    got = elbo_model(VAE, likelihood).loss(out, x, beta)
    ref = ref_vae_elbo(out, x, beta, likelihood)
    for key in ("loss", "recon", "kld"):
        assert close(got[key], ref[key]), key
    mse = math.fsum((r - v) ** 2 for rr, xr in zip(L(out.recon), L(x)) for r, v in zip(rr, xr)) / x.numel()
    assert close(got["recon_mse"], mse)  # the plain MSE, whatever the likelihood


def test_vae_elbo_at_beta_zero_is_the_mean_squared_error():
    out, x = make_batch(seed=22)
    assert close(elbo_model(VAE).loss(out, x, 0.0)["loss"], ((out.recon - x) ** 2).mean())


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_iwae_elbo_matches_reference(likelihood, beta):
    s = 4
    out, x = make_batch(s=s, seed=23)
    got = elbo_model(IWAE, likelihood, num_samples=s).loss(out, x, beta)
    xs, recon, z, mu, lv = L(x), L(out.recon), L(out.z), L(out.mu), L(out.log_var)
    f, d = len(xs[0]), len(mu[0])
    bounds, nlls = [], []
    for b in range(len(xs)):
        log_w = []
        for j in range(s):
            nll = ref_nll(recon[b][j], xs[b], likelihood)
            nlls.append(nll)
            log_q = math.fsum(log_normal(z[b][j][k], mu[b][k], math.exp(lv[b][k])) for k in range(d))
            log_p = math.fsum(log_normal(z[b][j][k], 0.0, 1.0) for k in range(d))
            log_w.append(-nll - beta * (log_q - log_p))
        bounds.append(math.log(math.fsum(math.exp(v) for v in log_w) / s))
    assert close(got["loss"], -math.fsum(bounds) / len(bounds) / f)
    assert close(got["recon"], math.fsum(nlls) / len(nlls) / f)


def test_iwae_elbo_with_one_sample_is_the_vae_elbo_of_that_sample():
    # S = 1: -log w = nll + beta (log q - log p), whose expectation over z is nll + beta KL.
    out, x = make_batch(s=1, seed=24)
    got = elbo_model(IWAE, num_samples=1).loss(out, x, 0.0)["loss"]
    vae = elbo_model(VAE).loss(out._replace(recon=out.recon[:, 0], z=out.z[:, 0]), x, 0.0)["loss"]
    assert close(got, vae)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_infovae_elbo_matches_reference(likelihood):
    out, x = make_batch(b=5, d=3, seed=25)
    prior = make_prior(5, 3, seed=26)
    hyper = dict(alpha=-9.0, beta=10.5, reg_weight=110.0, latent_var=2.0)
    got = elbo_model(InfoVAE, likelihood, kernel="imq", **hyper).loss(out, x, 1.0, prior=prior)
    xs, recon = L(x), L(out.recon)
    f = len(xs[0])
    kl = ref_kl_rows(out.mu, out.log_var)
    per_row = [hyper["beta"] * ref_nll(recon[b], xs[b], likelihood) + (1 - hyper["alpha"]) * kl[b]
               for b in range(len(xs))]
    mmd = ref_mmd_term(prior, out.z, "imq", "corrected", hyper["latent_var"])
    expected = (math.fsum(per_row) / len(per_row) + (hyper["alpha"] + hyper["reg_weight"] - 1) * mmd) / f
    assert close(got["loss"], expected)
    assert close(got["mmd"], mmd)  # normalised MMD^2_u


def test_logcosh_elbo_matches_reference():
    out, x = make_batch(seed=27)
    a, b_weight, beta = 10.0, 2.0, 1.5
    got = elbo_model(LogCoshVAE, alpha=a, beta=b_weight).loss(out, x, beta)
    xs, recon = L(x), L(out.recon)
    f = len(xs[0])
    kl = ref_kl_rows(out.mu, out.log_var)
    nll = [math.fsum(math.log(math.cosh(a * (r - v))) for r, v in zip(recon[i], xs[i])) / a for i in range(len(xs))]
    per_row = [nll[i] + b_weight * beta * kl[i] for i in range(len(xs))]
    assert close(got["loss"], math.fsum(per_row) / len(per_row) / f)
    assert close(got["recon"], math.fsum(nll) / len(nll) / f)


def test_elbo_gradient_scale_matches_the_paper_objective():
    # Divided by the number of genes, the ELBO's reconstruction gradient equals the paper objective's
    # (a mean over rows and genes), so a learning rate means the same step for SGD under both.
    out, x = make_batch(seed=28)
    grads = []
    for mode in ("paper", "elbo"):
        recon = out.recon.clone().requires_grad_(True)
        m = VAE(6, 3, hidden_dims=[4], loss_mode=mode)
        m.loss(out._replace(recon=recon), x, 0.0)["loss"].backward()
        grads.append(recon.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=0)


def test_kl_warmup_ramps_the_training_weight():
    from vaebench.models import VAEConfig

    cfg = VAEConfig(loss_mode="elbo", kl_warmup_epochs=4)
    assert [cfg.kl_warmup(e) for e in range(1, 7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert VAEConfig().kl_warmup(1) == 1.0  # off by default
