"""The loop's fast paths change no numbers; the opt-in trainer.amp and trainer.compile stay within tolerance.

(Timings are measured by `make bench`, never asserted here.)
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_config
from vaebench.config import validate
from vaebench.models import IWAE, LogCoshVAE, build_model
from vaebench.models.base import kl_per_row, mean
from vaebench.models.logcosh import log_cosh
from vaebench.task import run
from vaebench.device import release_heap, retain_freed_memory
from vaebench.train import forward_loss


@pytest.mark.parametrize("shape, dim", [((300, 500), None), ((64, 5, 300), -1), ((7, 3), 0), ((5, 1), None)])
def test_mean_is_torch_mean_to_the_bit_with_the_same_gradient(shape, dim):
    t = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    a, b = t.clone().requires_grad_(), t.clone().requires_grad_()
    ours, theirs = mean(a, dim), (b.mean() if dim is None else b.mean(dim))
    assert torch.equal(ours, theirs)
    weights = torch.rand(ours.shape, generator=torch.Generator().manual_seed(1))
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)


def studys_iwae_loss(out, x, kld_weight, corrected, num_samples):
    """IWAE's loss as first written (before the one-pass squared error), for a bit-for-bit comparison."""
    sq_err = (out.recon - x.unsqueeze(1)).pow(2).mean(dim=-1)
    kld_row = kl_per_row(out.mu, out.log_var)
    if corrected:
        mu, log_var = out.mu.unsqueeze(1), out.log_var.unsqueeze(1)
        log_q_minus_log_p = 0.5 * torch.sum(out.z.pow(2) - (out.z - mu).pow(2) * torch.exp(-log_var) - log_var, dim=-1)
        log_w = -(sq_err + kld_weight * log_q_minus_log_p)
        return -(torch.logsumexp(log_w, dim=1) - math.log(num_samples)).mean()
    per_sample = sq_err + kld_weight * kld_row.unsqueeze(1)
    return (torch.softmax(per_sample, dim=1) * per_sample).sum(dim=1).mean()


def studys_logcosh_recon(out, x, alpha, corrected):
    return log_cosh(alpha * (out.recon - x), stable=corrected).mean() / alpha


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("loss_mode", ["paper", "corrected"])
def test_iwae_and_logcosh_losses_match_their_first_form_to_the_bit(loss_mode):
    x = torch.rand(48, 70, generator=torch.Generator().manual_seed(2))
    for model, reference in [
        (IWAE(70, 6, hidden_dims=[32], loss_mode=loss_mode, num_samples=5),
         lambda m, out: studys_iwae_loss(out, x, 0.3, m.corrected, m.num_samples)),
        (LogCoshVAE(70, 6, hidden_dims=[32], loss_mode=loss_mode),
         lambda m, out: studys_logcosh_recon(out, x, m.alpha, m.corrected) + m.beta * 0.3 * kl_per_row(
             out.mu, out.log_var).mean()),
    ]:
        torch.manual_seed(3)
        out = model(x)
        ours = model.loss(out, x, 0.3)["loss"]
        ours_grads = grads(model, ours)
        torch.manual_seed(3)
        out = model(x)
        theirs = reference(model, out)
        assert torch.equal(ours, theirs)
        assert all(torch.equal(a, b) for a, b in zip(ours_grads, grads(model, theirs)))


def test_retaining_freed_memory_changes_no_numbers(tmp_path):
    before = run(make_config("model=iwae", "resume=false"), tmp_path / "a")
    retain_freed_memory()  # fit() does this on CPU; twice is harmless
    retain_freed_memory()
    release_heap()
    after = run(make_config("model=iwae", "resume=false"), tmp_path / "b")
    assert before["val_loss"] == after["val_loss"] and before["train_loss"] == after["train_loss"]


def first_step(model_name: str, compile: bool, amp: bool) -> tuple[dict[str, float], torch.Tensor]:
    cfg = validate(make_config(f"model={model_name}"))
    torch.manual_seed(0)
    model = build_model(cfg.model, 40, cfg.latent_dim)
    x = torch.rand(64, 40, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    terms = forward_loss(model, compile, amp)(x, 0.1)
    terms["loss"].backward()
    return {k: v.item() for k, v in terms.items()}, torch.cat([p.grad.flatten() for p in model.parameters()])


def assert_close_step(model_name: str, compile: bool, amp: bool, terms_rtol: float, grad_rtol: float) -> None:
    eager_terms, eager_grad = first_step(model_name, False, False)
    terms, grad = first_step(model_name, compile, amp)
    assert terms.keys() == eager_terms.keys()
    for k in terms:
        assert terms[k] == pytest.approx(eager_terms[k], rel=terms_rtol, abs=1e-6), k
    assert float((grad - eager_grad).norm() / eager_grad.norm()) < grad_rtol


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_amp_first_step_is_within_bf16_tolerance(model):
    # bf16 matrix products (8-bit mantissa); the losses themselves, MMD included, stay float32
    assert_close_step(model, compile=False, amp=True, terms_rtol=2e-3, grad_rtol=5e-2)


def test_amp_run_trains_close_to_float32(tmp_path):
    eager = run(make_config("model=infovae"), tmp_path / "fp32")
    amp = run(make_config("model=infovae", "trainer.amp=true"), tmp_path / "amp")
    assert amp["status"] == "ok" and amp["config"]["trainer"]["amp"] is True
    assert amp["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=2e-2)


@pytest.mark.slow  # compiling takes tens of seconds per model on CPU
@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_compile_first_step_is_within_float_tolerance(model):
    # inductor fuses and reorders float32 arithmetic; fallback_random keeps torch's own random draws
    assert_close_step(model, compile=True, amp=False, terms_rtol=1e-4, grad_rtol=1e-4)


@pytest.mark.slow
def test_compile_run_matches_eager_within_float_tolerance(tmp_path):
    eager = run(make_config("model=vae"), tmp_path / "eager")
    compiled = run(make_config("model=vae", "trainer.compile=true"), tmp_path / "compiled")
    assert compiled["status"] == "ok"
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-3)
    assert compiled["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=1e-3)
