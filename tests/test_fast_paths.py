"""The loop's fast paths change no numbers; the opt-in trainer.amp and trainer.compile stay within tolerance.

(Timings are measured by `make bench`, never asserted here.)
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch

from conftest import make_config
from vaebench import train
from vaebench.config import validate
from vaebench.models import build_model
from vaebench.models.base import mean
from vaebench.task import run
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


# In a fresh process: fit() turns the switch on for the whole process, so within this one (after any
# earlier test) "before" would already run with it on.
RETAIN = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import make_config
import vaebench.device as device
import vaebench.train as train
from vaebench.task import run
big = ["model=iwae", "resume=false", "data.n_samples=400", "data.n_genes=2000", "trainer.batch_size=200",
       "trainer.latent_metrics=false"]
switch = train.retain_freed_memory
train.retain_freed_memory = lambda: None
off = run(make_config(*big), Path(sys.argv[1]) / "off")
was_on = device._retained
train.retain_freed_memory = switch
on = run(make_config(*big), Path(sys.argv[1]) / "on")
print(json.dumps({"was_on": was_on, "is_on": device._retained, "off": off, "on": on}, default=str))
"""


@pytest.mark.long(4)
def test_retaining_freed_memory_changes_no_numbers(tmp_path):
    # IWAE's [200, 5, 2000] tensors (8 MB) are above glibc's mmap threshold: with the switch off they are
    # mapped and unmapped every step, with it on they stay in the heap.
    proc = subprocess.run([sys.executable, "-c", RETAIN, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert (got["was_on"], got["is_on"]) == (False, sys.platform.startswith("linux"))
    for key in ("val_loss", "train_loss", "val_recon_mse"):
        assert got["off"][key] == got["on"][key], key


def first_step(model_name: str, compile: bool, amp: bool) -> tuple[dict[str, float], torch.Tensor]:
    cfg = validate(make_config(f"model={model_name}"))
    torch.manual_seed(0)
    model = build_model(cfg.model, 40, cfg.latent_dim)
    x = torch.rand(64, 40, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    terms = forward_loss(model, compile, amp)(x, 0.1)
    terms["loss"].backward()
    return {k: v.item() for k, v in terms.items()}, torch.cat([p.grad.flatten() for p in model.parameters()])


def assert_close_step(model_name: str, compile: bool, amp: bool, terms_rtol: float, grad_rtol: float,
                      mmd_rtol: Optional[float] = None) -> None:
    eager_terms, eager_grad = first_step(model_name, False, False)
    terms, grad = first_step(model_name, compile, amp)
    assert terms.keys() == eager_terms.keys()
    for k in terms:
        rtol = mmd_rtol if k == "mmd" and mmd_rtol is not None else terms_rtol
        assert terms[k] == pytest.approx(eager_terms[k], rel=rtol, abs=1e-6), k
    assert float((grad - eager_grad).norm() / eager_grad.norm()) < grad_rtol


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_amp_first_step_is_within_bf16_tolerance(model):
    # bf16 matrix products (8-bit mantissa); the losses themselves, MMD included, stay float32
    assert_close_step(model, compile=False, amp=True, terms_rtol=2e-3, grad_rtol=5e-2)


def test_amp_run_trains_close_to_float32_and_says_so_where_the_cpu_emulates_bf16(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)  # as on an AVX2 CPU, where amp's epochs were 36x slower
    with caplog.at_level(logging.WARNING, logger="vaebench.train"):
        eager = run(make_config("model=infovae"), tmp_path / "fp32")
        amp = run(make_config("model=infovae", "trainer.amp=true"), tmp_path / "amp")
    assert amp["status"] == "ok" and amp["config"]["trainer"]["amp"] is True
    assert amp["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=2e-2)
    (warning,) = [r.getMessage() for r in caplog.records if "trainer.amp" in r.getMessage()]  # the amp run's only
    assert "without oneDNN's bf16 kernels" in warning and "trainer.amp=false" in warning


@pytest.mark.slow  # compiling takes tens of seconds per model on CPU
@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_compile_first_step_is_within_float_tolerance(model):
    # inductor fuses and reorders float32 arithmetic; fallback_random keeps torch's own random draws. Paper-mode
    # InfoVAE logs the raw MMD, a difference of sums over batch^2 kernel values: reordered, it moves by ~2e-4.
    assert_close_step(model, compile=True, amp=False, terms_rtol=1e-4, grad_rtol=1e-4, mmd_rtol=1e-3)


@pytest.mark.slow
def test_compile_run_matches_eager_within_float_tolerance(tmp_path):
    eager = run(make_config("model=vae"), tmp_path / "eager")
    compiled = run(make_config("model=vae", "trainer.compile=true"), tmp_path / "compiled")
    assert compiled["status"] == "ok"
    # Adam's first steps are about lr x sign(gradient): a last-bit change of a near-zero gradient moves a weight
    # by 2 lr, so after two epochs the loss (mostly KL under the paper objective) agrees to ~2e-3, not to 1e-3.
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=5e-3)
    assert compiled["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=1e-3)
