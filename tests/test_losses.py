"""The four losses against hand-written float64 references, and the invariants of losses.md section 9.

The references below are written from the formulas in docs/losses.md (sections 1-8),
with explicit Python loops (or [B, B, D] broadcasting for the MMD kernels), never by calling the code
under test. Everything here is tiny and float64 unless a test is about float32 overflow, so the
comparisons are tight (1e-12 relative).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vaebench.models import IWAE, VAE, ForwardOutput, InfoVAE, LogCoshVAE, kl_per_row
from vaebench.models import infovae as infovae_module
from vaebench.models.logcosh import log_cosh

F64 = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)
MODES = ["paper", "corrected"]


# --------------------------------------------------------------------------------------------------
# Data: a tiny, deterministic batch with values spread enough for every term to matter.

def make_batch(b=4, f=6, d=3, s=None, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, generator=g, dtype=F64)
    recon_shape = (b, f) if s is None else (b, s, f)
    recon = 0.01 + 0.98 * torch.rand(recon_shape, generator=g, dtype=F64)  # x_hat in (0, 1)
    mu = torch.randn(b, d, generator=g, dtype=F64)
    log_var = 0.7 * torch.randn(b, d, generator=g, dtype=F64)
    if s is None:
        eps = torch.randn(b, d, generator=g, dtype=F64)
        z = mu + eps * torch.exp(0.5 * log_var)
    else:
        eps = torch.randn(b, s, d, generator=g, dtype=F64)
        z = mu[:, None, :] + eps * torch.exp(0.5 * log_var)[:, None, :]
    out = ForwardOutput(recon.to(dtype), mu.to(dtype), log_var.to(dtype), z.to(dtype))
    return out, x.to(dtype)


def model(cls, loss_mode="paper", **kw):
    # The loss never touches the network's weights: the sizes here are irrelevant to it.
    return cls(6, 3, hidden_dims=[4], loss_mode=loss_mode, **kw)


def L(t):  # nested Python lists of floats: the references do plain float arithmetic
    return t.detach().double().tolist()


# --------------------------------------------------------------------------------------------------
# References, straight from losses.md.

def ref_kl_rows(mu, log_var):
    """KL_b = -1/2 sum_d (1 + l - mu^2 - exp l)  (section 1)."""
    return [-0.5 * math.fsum(1 + l - m * m - math.exp(l) for m, l in zip(mr, lr))
            for mr, lr in zip(L(mu), L(log_var))]


def ref_mean_sq(a_rows, x_rows):
    """Mean over every element of (a - x)^2, a and x as equally shaped row lists."""
    vals = [(a - x) ** 2 for ar, xr in zip(a_rows, x_rows) for a, x in zip(ar, xr)]
    return math.fsum(vals) / len(vals)


def ref_vae(out, x, kw):
    """Section 3: recon = mean_{b,f} (x_hat - x)^2; loss = recon + M_N * KL."""
    recon = ref_mean_sq(L(out.recon), L(x))
    kl_rows = ref_kl_rows(out.mu, out.log_var)
    kl = math.fsum(kl_rows) / len(kl_rows)
    return {"loss": recon + kw * kl, "recon": recon, "kld": kl}


def ref_iwae_paper_terms(out, x, kw):
    """Section 4a: r_bs, l_bs = r_bs + M_N k_b, w_bs = softmax_s(l_b.)."""
    xs, recon = L(x), L(out.recon)
    kl_rows = ref_kl_rows(out.mu, out.log_var)
    r, l, w = [], [], []
    for b, x_row in enumerate(xs):
        r_b = [ref_mean_sq([rec], [x_row]) for rec in recon[b]]
        l_b = [rv + kw * kl_rows[b] for rv in r_b]
        e = [math.exp(v) for v in l_b]
        w.append([v / math.fsum(e) for v in e])
        r.append(r_b)
        l.append(l_b)
    return r, l, w, kl_rows


def ref_iwae_paper(out, x, kw):
    r, l, w, kl_rows = ref_iwae_paper_terms(out, x, kw)
    per_row = [math.fsum(wv * lv for wv, lv in zip(w_b, l_b)) for w_b, l_b in zip(w, l)]
    n = sum(len(r_b) for r_b in r)
    return {"loss": math.fsum(per_row) / len(per_row),
            "recon": math.fsum(v for r_b in r for v in r_b) / n,
            "kld": math.fsum(kl_rows) / len(kl_rows)}


def log_normal(v, m, var):
    return -0.5 * math.log(2 * math.pi * var) - (v - m) ** 2 / (2 * var)


def ref_iwae_log_w(out, x, kw):
    """Section 4b: log w_bs = -(R_bs + M_N [log q(z|x) - log p(z)]), R = mean_f squared error.

    Written with the full Gaussian log densities (2 pi constants included, they cancel), not with
    the simplified expression the spec gives, so it is an independent derivation.
    """
    xs, recon, z = L(x), L(out.recon), L(out.z)
    mu, lv = L(out.mu), L(out.log_var)
    log_w = []
    for b, x_row in enumerate(xs):
        row = []
        for s, rec in enumerate(recon[b]):
            r = ref_mean_sq([rec], [x_row])
            log_q = math.fsum(log_normal(z[b][s][d], mu[b][d], math.exp(lv[b][d])) for d in range(len(mu[b])))
            log_p = math.fsum(log_normal(z[b][s][d], 0.0, 1.0) for d in range(len(mu[b])))
            row.append(-(r + kw * (log_q - log_p)))
        log_w.append(row)
    return log_w


def ref_iwae_corrected(out, x, kw):
    """loss = -mean_b [ log( (1/S) sum_s exp(log w_bs) ) ]."""
    log_w = ref_iwae_log_w(out, x, kw)
    per_row = [math.log(math.fsum(math.exp(v) for v in row) / len(row)) for row in log_w]
    return -math.fsum(per_row) / len(per_row)


def sq_dist_bbd(a, b):
    """||a_i - b_j||^2 through the explicit [B, B, D] difference tensor (fine at this size)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def ref_kernel_matrix(a, b, kernel, mode, latent_var):
    d = a.shape[1]
    c = 2.0 * d * latent_var
    sq = sq_dist_bbd(a.double(), b.double())
    if kernel == "imq":
        return c / (1e-7 + c + sq)
    if mode == "paper":  # PyTorch-VAE: exp(-mean_d (a - b)^2 / C)
        diff = a.double()[:, None, :] - b.double()[None, :, :]
        return torch.exp(-(diff ** 2).mean(-1) / c)
    return torch.exp(-sq / c)


def ref_mmd_term(prior, z, kernel, mode, latent_var):
    """The quantity that multiplies (alpha + lambda - 1) in the loss.

    paper (5a): MMD_raw / (B(B-1)) with K = sum over i != j (imq) or the mean over all B^2 (rbf).
    corrected (5b): MMD^2_u = [sum_{i!=j} k(p,p) + sum_{i!=j} k(z,z) - 2 sum_{i!=j} k(p,z)] / (B(B-1)).
    """
    n = prior.shape[0]

    def big_k(a, b):
        k = ref_kernel_matrix(a, b, kernel, mode, latent_var)
        if kernel == "rbf" and mode == "paper":
            return k.mean().item()
        return math.fsum(k[i, j].item() for i in range(n) for j in range(n) if i != j)

    raw = big_k(prior, prior) + big_k(z, z) - 2 * big_k(prior, z)
    return raw / (n * (n - 1))


def ref_infovae(out, x, kw, prior, kernel, mode, alpha, beta, reg_weight, latent_var):
    """Section 5: beta * recon + (1 - alpha) M_N KL + (alpha + lambda - 1) * MMD term."""
    v = ref_vae(out, x, kw)
    mmd = ref_mmd_term(prior, out.z, kernel, mode, latent_var)
    loss = beta * v["recon"] + (1 - alpha) * kw * v["kld"] + (alpha + reg_weight - 1) * mmd
    return {"loss": loss, "recon": v["recon"], "kld": v["kld"], "mmd": mmd}


def ref_logcosh(out, x, kw, alpha, beta):
    """Section 6: (1/a) mean_{b,f} log(cosh(a t)) + b M_N KL, with math.cosh itself."""
    t = [r - xv for rr, xr in zip(L(out.recon), L(x)) for r, xv in zip(rr, xr)]
    recon = math.fsum(math.log(math.cosh(alpha * v)) for v in t) / len(t) / alpha
    kl_rows = ref_kl_rows(out.mu, out.log_var)
    kl = math.fsum(kl_rows) / len(kl_rows)
    return {"loss": recon + beta * kw * kl, "recon": recon, "kld": kl,
            "recon_mse": math.fsum(v * v for v in t) / len(t)}


def close(actual, expected, rtol=1e-12, atol=1e-12):
    if isinstance(actual, torch.Tensor):
        actual = actual.detach()
    return math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=atol)


# --------------------------------------------------------------------------------------------------
# KL and the VAE (section 3).

def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 4, dtype=F64)
    assert torch.equal(kl_per_row(zeros, zeros), torch.zeros(3, dtype=F64))
    out, _ = make_batch()
    kl = kl_per_row(out.mu, out.log_var)
    assert kl.shape == (4,)
    assert torch.allclose(kl, torch.tensor(ref_kl_rows(out.mu, out.log_var), dtype=F64), **TIGHT)
    assert (kl > 0).all()


@pytest.mark.parametrize("kw", [0.0, 0.101, 1.0])
@pytest.mark.parametrize("mode", MODES)
def test_vae_loss_matches_reference(kw, mode):
    out, x = make_batch(seed=1)
    got = model(VAE, mode).loss(out, x, kw)
    ref = ref_vae(out, x, kw)
    for key in ("loss", "recon", "kld"):
        assert close(got[key], ref[key]), key
    assert close(got["recon_mse"], ref["recon"])
    assert got["kld"] > 0  # +KL, not PyTorch-VAE's logged -KL (#68)
    # loss = recon + M_N * KL exactly, with the terms the model reports
    assert close(got["loss"], got["recon"] + kw * got["kld"], rtol=1e-15, atol=0)


def test_vae_loss_at_the_prior_is_the_reconstruction():
    out, x = make_batch(seed=2)
    zeros = torch.zeros_like(out.mu)
    got = model(VAE).loss(out._replace(mu=zeros, log_var=zeros), x, 0.7)
    assert got["kld"] == 0
    assert close(got["loss"], ref_mean_sq(L(out.recon), L(x)))


# --------------------------------------------------------------------------------------------------
# IWAE (section 4).

@pytest.mark.parametrize("kw", [0.0, 0.3, 1.0])
def test_iwae_paper_matches_reference(kw):
    out, x = make_batch(s=3, seed=3)
    got = model(IWAE, "paper", num_samples=3).loss(out, x, kw)
    ref = ref_iwae_paper(out, x, kw)
    for key in ("loss", "recon", "kld"):
        assert close(got[key], ref[key]), key
    assert close(got["recon_mse"], ref["recon"])


@pytest.mark.parametrize("kw", [0.0, 0.3, 1.0])
def test_iwae_corrected_matches_reference(kw):
    out, x = make_batch(s=3, seed=4)
    got = model(IWAE, "corrected", num_samples=3).loss(out, x, kw)
    assert close(got["loss"], ref_iwae_corrected(out, x, kw))
    ref = ref_iwae_paper(out, x, kw)  # the logged terms are the same in both modes
    assert close(got["recon"], ref["recon"])
    assert close(got["kld"], ref["kld"])


@pytest.mark.parametrize("kw", [0.0, 0.25, 1.0])
def test_iwae_paper_with_one_sample_is_the_vae_loss(kw):
    out, x = make_batch(seed=5)
    one = out._replace(recon=out.recon[:, None, :], z=out.z[:, None, :])
    got = model(IWAE, "paper", num_samples=1).loss(one, x, kw)
    vae = model(VAE).loss(out, x, kw)
    for key in ("loss", "recon", "kld"):
        assert close(got[key], vae[key], rtol=1e-14, atol=0), key


def test_iwae_paper_kl_cancels_in_the_weights():
    # w = softmax_s(r_b. + M_N k_b) = softmax_s(r_b.) since k_b is the same for every s, so the
    # loss is exactly linear in M_N with slope mean_b KL_b.
    out, x = make_batch(s=4, seed=6)
    m = model(IWAE, "paper", num_samples=4)
    base = m.loss(out, x, 0.0)
    _, _, w, _ = ref_iwae_paper_terms(out, x, 0.0)
    for kw in (0.1, 0.5, 2.0):
        got = m.loss(out, x, kw)
        assert close(got["loss"] - base["loss"], kw * got["kld"], rtol=1e-11, atol=1e-13)
        _, _, w_kw, _ = ref_iwae_paper_terms(out, x, kw)
        assert all(close(a, c) for ra, rc in zip(w_kw, w) for a, c in zip(ra, rc))


def test_iwae_paper_weights_favour_the_worst_sample():
    # Quirk 1 (softmax of the loss, not of -loss): the row's loss is above the plain sample mean.
    out, x = make_batch(s=4, seed=7)
    got = model(IWAE, "paper", num_samples=4).loss(out, x, 0.2)
    _, l, _, _ = ref_iwae_paper_terms(out, x, 0.2)
    plain_mean = math.fsum(v for row in l for v in row) / (4 * 4)
    assert got["loss"].item() > plain_mean


def _recon_grad(m, out, x, kw):
    recon = out.recon.detach().clone().requires_grad_(True)
    m.loss(out._replace(recon=recon), x, kw)["loss"].backward()
    return recon.grad


def test_iwae_paper_gradient_goes_through_the_undetached_weights():
    # d loss / d l_bs = w_bs (1 + l_bs - sum_j w_bj l_bj) / B, and d l_bs / d x_hat_bsf = 2 t_bsf / F.
    b, s, f, kw = 4, 3, 6, 0.4
    out, x = make_batch(b=b, f=f, s=s, seed=8)
    grad = _recon_grad(model(IWAE, "paper", num_samples=s), out, x, kw)
    _, l, w, _ = ref_iwae_paper_terms(out, x, kw)
    t = (out.recon - x[:, None, :]).double()
    expected = torch.empty(b, s, f, dtype=F64)
    detached = torch.empty(b, s, f, dtype=F64)  # what a detached-weights loss would give
    for i in range(b):
        lbar = math.fsum(wv * lv for wv, lv in zip(w[i], l[i]))
        for j in range(s):
            g = w[i][j] * (1 + l[i][j] - lbar) / b
            expected[i, j] = g * 2 * t[i, j] / f
            detached[i, j] = w[i][j] / b * 2 * t[i, j] / f
    assert torch.allclose(grad, expected, **TIGHT)
    assert not torch.allclose(expected, detached, rtol=1e-6, atol=0)  # the data can tell the two apart


def test_iwae_corrected_gradient_is_the_normalised_importance_weight():
    # d loss / d log w_bs = -softmax_s(log w_b.)_s / B, and d log w_bs / d x_hat_bsf = -2 t_bsf / F.
    b, s, f, kw = 4, 3, 6, 0.4
    out, x = make_batch(b=b, f=f, s=s, seed=9)
    grad = _recon_grad(model(IWAE, "corrected", num_samples=s), out, x, kw)
    log_w = torch.tensor(ref_iwae_log_w(out, x, kw), dtype=F64)
    w = torch.exp(log_w - log_w.max(dim=1, keepdim=True).values)
    w = w / w.sum(dim=1, keepdim=True)
    t = (out.recon - x[:, None, :]).double()
    expected = (w / b)[:, :, None] * 2 * t / f
    assert torch.allclose(grad, expected, **TIGHT)


def test_iwae_corrected_loss_is_below_the_mean_sample_loss():
    # Jensen: -log mean_s w <= mean_s -log w, strictly when the samples differ ...
    out, x = make_batch(s=5, seed=10)
    for kw in (0.0, 0.3, 1.0):
        got = model(IWAE, "corrected", num_samples=5).loss(out, x, kw)["loss"].item()
        log_w = ref_iwae_log_w(out, x, kw)
        mean_neg_log_w = -math.fsum(v for row in log_w for v in row) / (len(log_w) * 5)
        assert got < mean_neg_log_w - 1e-9
    # ... and with equality when the S samples of a row are the same.
    same = out._replace(recon=out.recon[:, :1].expand(-1, 5, -1), z=out.z[:, :1].expand(-1, 5, -1))
    got = model(IWAE, "corrected", num_samples=5).loss(same, x, 0.3)["loss"].item()
    log_w = ref_iwae_log_w(same, x, 0.3)
    assert close(got, -math.fsum(v for row in log_w for v in row) / (len(log_w) * 5))


# --------------------------------------------------------------------------------------------------
# InfoVAE (section 5).

HYPER = [dict(alpha=-9.0, beta=10.5, reg_weight=110.0, latent_var=2.0),  # the study's
         dict(alpha=-0.5, beta=5.0, reg_weight=100.0, latent_var=0.7)]


def make_prior(b, d, seed):
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_infovae_loss_matches_reference(kernel, mode, hyper):
    out, x = make_batch(b=5, d=3, seed=11)
    prior = make_prior(5, 3, seed=12)
    kw = 0.2
    got = model(InfoVAE, mode, kernel=kernel, **hyper).loss(out, x, kw, prior=prior)
    ref = ref_infovae(out, x, kw, prior, kernel, mode, **hyper)
    assert close(got["loss"], ref["loss"]), (got["loss"].item(), ref["loss"])
    assert close(got["recon"], ref["recon"])  # without beta
    assert close(got["recon_mse"], ref["recon"])
    assert close(got["kld"], ref["kld"])
    b = out.z.shape[0]
    if mode == "paper":  # logged as the study logged it: the raw kernel sums, MMD_raw (losses.md 5a)
        assert close(got["mmd"], ref["mmd"] * b * (b - 1))
    else:  # reported normalised: MMD^2_u
        assert close(got["mmd"], ref["mmd"])


def test_infovae_mmd_term_matters_in_the_loss():
    # Guards the reference test against an MMD term too small to notice: here it moves the loss.
    out, x = make_batch(b=5, d=3, seed=11)
    prior = make_prior(5, 3, seed=12)
    for kernel in ("imq", "rbf"):
        ref = ref_infovae(out, x, 0.2, prior, kernel, "corrected", **HYPER[0])
        assert abs((HYPER[0]["alpha"] + HYPER[0]["reg_weight"] - 1) * ref["mmd"]) > 1e-3 * abs(ref["loss"])


def test_infovae_imq_loss_is_the_same_in_both_modes():
    out, x = make_batch(b=6, d=4, seed=13)
    prior = make_prior(6, 4, seed=14)
    paper = model(InfoVAE, "paper", kernel="imq").loss(out, x, 0.3, prior=prior)
    corrected = model(InfoVAE, "corrected", kernel="imq").loss(out, x, 0.3, prior=prior)
    for key in ("loss", "recon", "kld"):
        assert close(paper[key], corrected[key], rtol=1e-14, atol=1e-15), key
    assert close(paper["mmd"], corrected["mmd"] * 6 * 5, rtol=1e-12)  # paper logs MMD_raw = B(B - 1) MMD^2_u


def test_infovae_rbf_modes_differ_and_paper_is_tiny():
    # The paper rbf term is normalised twice (mean over B^2, then / B(B-1)) with D counted twice.
    out, x = make_batch(b=6, d=4, seed=13)
    prior = make_prior(6, 4, seed=14)
    paper = model(InfoVAE, "paper", kernel="rbf").mmd(prior, out.z).item()
    corrected = model(InfoVAE, "corrected", kernel="rbf").mmd(prior, out.z).item()
    assert abs(paper) < abs(corrected) / 10


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_infovae_mmd_of_a_sample_with_itself_is_zero(kernel, mode):
    out, x = make_batch(b=6, d=4, seed=15)
    m = model(InfoVAE, mode, kernel=kernel)
    assert abs(m.mmd(out.z, out.z).item()) < 1e-12
    got = m.loss(out, x, 0.3, prior=out.z)
    ref = ref_vae(out, x, 0.3)
    assert close(got["loss"], m.config.beta * ref["recon"] + (1 - m.config.alpha) * 0.3 * ref["kld"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_infovae_mmd_grows_as_z_moves_away_from_the_prior(kernel, mode):
    b, d = 64, 4
    prior = make_prior(b, d, seed=16)
    z = make_prior(b, d, seed=17)
    m = model(InfoVAE, mode, kernel=kernel)
    values = [m.mmd(prior, z + shift).item() for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < c for a, c in zip(values, values[1:])), values
    assert values[-1] > 0


def test_infovae_draws_fresh_prior_samples_on_every_call():
    out, x = make_batch(b=6, d=4, seed=18)
    m = model(InfoVAE)
    torch.manual_seed(0)
    first, second = m.loss(out, x, 0.3)["loss"], m.loss(out, x, 0.3)["loss"]
    assert first.item() != second.item()
    torch.manual_seed(1)
    prior = torch.randn_like(out.z)
    torch.manual_seed(1)
    assert m.loss(out, x, 0.3)["loss"].item() == m.loss(out, x, 0.3, prior=prior)["loss"].item()


def test_infovae_needs_two_rows():
    out, x = make_batch(b=1, d=3, seed=19)
    with pytest.raises(ValueError, match="at least 2"):
        model(InfoVAE).loss(out, x, 0.3, prior=make_prior(1, 3, seed=20))


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in tree_leaves(result):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return result


def _largest_tensor_in_mmd(m, b, d):
    g = torch.Generator().manual_seed(21)
    prior = torch.randn(b, d, generator=g)
    z = torch.randn(b, d, generator=g).requires_grad_(True)
    with LargestTensor() as probe:
        m.mmd(prior, z).backward()
    assert torch.isfinite(z.grad).all()
    return probe.largest


@pytest.mark.parametrize(("kernel", "mode", "b"), [("imq", "paper", 1000),  # the study's kernel, full size
                                                   ("rbf", "paper", 300), ("rbf", "corrected", 300)])
def test_infovae_mmd_never_builds_a_bbd_tensor(kernel, mode, b):
    # B = 1000, D = 200: a [B, B, D] tensor is 2e8 elements (0.8 GB in float32), the study's
    # latent-200 OOM. The probe sees every tensor the forward and the backward pass create.
    d = 200
    m = InfoVAE(10, d, hidden_dims=[8], loss_mode=mode, kernel=kernel)
    assert _largest_tensor_in_mmd(m, b, d) <= 2 * b * b  # [B, B] kernel matrices at most


def test_the_bbd_probe_catches_a_broadcast_implementation(monkeypatch):
    # Positive control for the test above: swap in PyTorch-VAE's [B, B, D] distances at a small size.
    b, d = 40, 30
    monkeypatch.setattr(infovae_module, "squared_distances", sq_dist_bbd)
    assert _largest_tensor_in_mmd(InfoVAE(10, d, hidden_dims=[8]), b, d) >= b * b * d


# --------------------------------------------------------------------------------------------------
# LogCosh VAE (section 6).

@pytest.mark.parametrize(("alpha", "beta"), [(10.0, 1.0), (3.0, 2.5)])
@pytest.mark.parametrize("mode", MODES)
def test_logcosh_loss_matches_reference(mode, alpha, beta):
    out, x = make_batch(seed=22)
    kw = 0.15
    got = model(LogCoshVAE, mode, alpha=alpha, beta=beta).loss(out, x, kw)
    ref = ref_logcosh(out, x, kw, alpha, beta)
    for key in ("loss", "recon", "kld", "recon_mse"):
        assert close(got[key], ref[key]), key


def test_log_cosh_stable_form_equals_log_cosh():
    u = torch.cat([torch.linspace(-40, 40, 4001, dtype=F64),
                   torch.tensor([0.0, 1e-8, -1e-8, 1e-4, -3e-3, 710.0, -710.0], dtype=F64)])
    expected = torch.tensor([math.log(math.cosh(v)) for v in u.tolist()], dtype=F64)
    assert torch.allclose(log_cosh(u, stable=True), expected, rtol=1e-12, atol=1e-12)
    # the paper form is the same function wherever it does not overflow
    mid = u.abs() <= 40
    assert torch.allclose(log_cosh(u[mid], stable=False), expected[mid], rtol=1e-12, atol=1e-12)


def test_log_cosh_is_half_u_squared_near_zero():
    u = torch.tensor([1e-3, -2e-3, 3e-3], dtype=F64)
    assert torch.allclose(log_cosh(u, stable=True), u ** 2 / 2, rtol=2e-6, atol=0)


def test_logcosh_paper_form_overflows_and_the_stable_form_does_not():
    # alpha = 100, t = x_hat - x = -1 in float32: exp(-2 * alpha * t) = exp(200) = inf.
    out, _ = make_batch(b=2, f=3, seed=23, dtype=torch.float32)
    recon = torch.zeros(2, 3, requires_grad=True)
    x = torch.ones(2, 3)
    paper = model(LogCoshVAE, "paper", alpha=100.0).loss(out._replace(recon=recon), x, 0.1)
    assert torch.isinf(paper["loss"])
    paper["loss"].backward()
    assert not torch.isfinite(recon.grad).all()

    recon.grad = None
    corrected = model(LogCoshVAE, "corrected", alpha=100.0).loss(out._replace(recon=recon), x, 0.1)
    assert torch.isfinite(corrected["loss"])
    assert close(corrected["recon"], (100 - math.log(2)) / 100, rtol=1e-6, atol=0)  # log cosh(u) = |u| - log 2
    corrected["loss"].backward()
    assert torch.isfinite(recon.grad).all()
    assert torch.allclose(recon.grad, torch.full((2, 3), -1 / 6))  # d/dt mean (1/a) log cosh(a t) = tanh/6
