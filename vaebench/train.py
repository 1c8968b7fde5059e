"""The one training loop: whole data set as a tensor on the device, batches by slicing a seeded
permutation, validation under inference_mode, the study's stopping rule, NaN/Inf detection.

Per step the loop does only the model's own work: rows are gathered straight from the resident matrix
(no per-run copy of the training rows), loss terms are summed on the device (one transfer per epoch),
and on CPU freed memory stays in the process for the next step (vaebench.device.retain_freed_memory). BENCHMARKS.md
measures it against the bare matrix products. trainer.compile and trainer.amp are opt-in.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from vaebench.config import Config
from vaebench.device import release_heap, retain_freed_memory
from vaebench.models import BaseVAE, ForwardOutput, build_model

log = logging.getLogger(__name__)
epoch_log = logging.getLogger("vaebench.epochs")  # one line per epoch; an interactive run shows a bar instead

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}


class NonFiniteError(Exception):
    """Loss or weights became NaN/Inf: the run diverged (status `nan`)."""

    def __init__(self, epoch: int, what: str):
        super().__init__(f"{what} became NaN/Inf in epoch {epoch}")


@dataclass
class FitResult:
    epochs_run: int
    converged: bool
    stop_reason: str  # converged | max_epochs
    final: dict[str, float]  # last epoch's train_* and val_* means
    best_val_recon_mse: float
    model: BaseVAE  # the trained model, in eval mode, for what is measured after training
    history: list[dict[str, float]] = field(default_factory=list)


def kld_weights(setting, loss_mode: str, batch_size: int, n_train: int, n_val: int) -> tuple[float, float]:
    """(train, validation) KL weight M_N. auto = batch / N_train; the study used batch / N_val in validation."""
    if setting != "auto":
        return float(setting), float(setting)
    train = batch_size / n_train
    return train, (batch_size / n_val if loss_mode == "paper" else train)


def converged(prev: Optional[dict], cur: dict, rel_tol: float) -> bool:
    """The study's rule: the validation loss fell and the validation recon moved by < rel_tol, relatively."""
    if prev is None:
        return False
    if not all(math.isfinite(v) for v in (prev["val_loss"], cur["val_loss"], prev["val_recon"], cur["val_recon"])):
        return False
    if cur["val_loss"] >= prev["val_loss"]:
        return False
    denom = abs(prev["val_recon"])
    change = abs(cur["val_recon"] - prev["val_recon"]) / denom if denom > 0 else math.inf
    return change < rel_tol


def batch_bounds(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """Batch [start, end) ranges; a trailing batch of one row is dropped (BatchNorm cannot train on it)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if bounds and (bounds[-1][1] - bounds[-1][0] < (batch_size if drop_last else 2)):
        bounds.pop()
    return bounds


def _epoch_means(sums: dict[str, Tensor], rows: int, prefix: str) -> dict[str, float]:
    # One device->host transfer per epoch, not one per step.
    keys = list(sums)
    values = torch.stack([sums[k] for k in keys]).div_(max(rows, 1)).tolist()
    return {f"{prefix}{k}": v for k, v in zip(keys, values)}


def _accumulate(sums: dict[str, Tensor], terms: dict[str, Tensor], rows: int) -> None:
    for k, v in terms.items():
        v = v.detach() * rows  # batch-size-weighted means (losses.md 7a)
        if k in sums:
            sums[k] += v
        else:
            sums[k] = v


def model_output(model: BaseVAE, xb: Tensor, amp: bool) -> ForwardOutput:
    """The model's forward; trainer.amp runs it under bf16 autocast (matrix products in bf16) and hands
    float32 outputs to the loss, so MSE, KL and InfoVAE's MMD (a difference of kernel sums) stay float32."""
    if not amp:
        return model(xb)
    with torch.autocast(xb.device.type, dtype=torch.bfloat16):
        out = model(xb)
    return ForwardOutput(*(t.float() for t in out))


def evaluate(model: BaseVAE, x_val: Tensor, batch_size: int, kld_weight: float, amp: bool = False
             ) -> dict[str, float]:
    model.eval()
    sums: dict[str, Tensor] = {}
    bounds = batch_bounds(len(x_val), batch_size, drop_last=False)
    if bounds[-1][1] < len(x_val):  # a last single row joins the batch before it: every row is scored
        bounds[-1] = (bounds[-1][0], len(x_val))
    with torch.inference_mode():
        for start, end in bounds:
            xb = x_val[start:end]
            _accumulate(sums, model.loss(model_output(model, xb, amp), xb, kld_weight), end - start)
    model.train()
    return _epoch_means(sums, len(x_val), "val_")


def _all_finite(model: BaseVAE) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())  # one sync


def forward_loss(model: BaseVAE, kld_weight: float, compile: bool, amp: bool
                 ) -> Callable[[Tensor], dict[str, Tensor]]:
    """The step's forward and loss: eager by default; trainer.compile wraps it in torch.compile (inductor
    with fallback_random: the draws stay torch's own, so results stay within float tolerance of eager)."""
    def step(xb: Tensor) -> dict[str, Tensor]:
        return model.loss(model_output(model, xb, amp), xb, kld_weight)

    if not compile:
        return step
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    # A sweep worker compiles one graph per (model, latent size, batch shape) and reuses it across its
    # jobs; past dynamo's default limit of 8 it would fall back to eager without a word.
    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 64))
    return torch.compile(step, dynamic=False)


def fit(cfg: Config, x: Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
        on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> FitResult:
    """Train one model on rows train_idx of x (already on its device); raise NonFiniteError on divergence."""
    t, device = cfg.trainer, x.device
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, x.shape[1], cfg.latent_dim).to(device)
    opt_cfg = {k: v for k, v in vars(cfg.optimizer).items() if k != "name"}
    if "betas" in opt_cfg:
        opt_cfg["betas"] = tuple(opt_cfg["betas"])
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), lr=cfg.lr, **opt_cfg)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.scheduler_gamma)

    # Batches gather their rows straight from x: no copy of the training rows per run.
    train_rows = torch.as_tensor(train_idx, device=device)
    x_val = x[torch.as_tensor(val_idx, device=device)]
    n_train, n_val = len(train_idx), len(val_idx)
    kld_train, kld_val = kld_weights(cfg.model.kld_weight, cfg.model.loss_mode.value, t.batch_size, n_train, n_val)
    bounds = batch_bounds(n_train, t.batch_size, t.drop_last)
    if not bounds:
        raise ValueError(f"no training batch: {n_train} training rows with batch_size={t.batch_size}, "
                         f"drop_last={t.drop_last}")
    if device.type == "cpu":
        retain_freed_memory()
    step_loss = forward_loss(model, kld_train, t.compile, t.amp)
    generator = torch.Generator().manual_seed(cfg.seed)
    fault = t.fault.value if t.fault else None
    history: list[dict[str, float]] = []
    prev = None
    best = math.inf
    stop_reason = "max_epochs"

    try:
        for epoch in range(1, t.max_epochs + 1):
            started = time.perf_counter()
            lr_now = optimizer.param_groups[0]["lr"]
            order = train_rows[torch.randperm(n_train, generator=generator).to(device)]
            sums: dict[str, Tensor] = {}
            rows = 0
            for start, end in bounds:
                xb = x.index_select(0, order[start:end])
                terms = step_loss(xb)
                loss = terms["loss"]
                if fault is not None:
                    loss = _inject(fault, loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.model.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.model.grad_clip)
                optimizer.step()
                _accumulate(sums, terms, end - start)
                rows += end - start
            scheduler.step()

            row = {"epoch": epoch, "lr": lr_now, **_epoch_means(sums, rows, "train_")}
            if not math.isfinite(row["train_loss"]):
                raise NonFiniteError(epoch, "the training loss")
            if not _all_finite(model):
                raise NonFiniteError(epoch, "the weights")
            row.update(evaluate(model, x_val, t.batch_size, kld_val, t.amp))
            if not math.isfinite(row["val_loss"]):
                raise NonFiniteError(epoch, "the validation loss")
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            best = min(best, row["val_recon_mse"])
            on_epoch(row)
            epoch_log.info("epoch %d/%d train_loss=%.5g val_loss=%.5g val_recon_mse=%.5g lr=%.3g (%.2f s)", epoch,
                           t.max_epochs, row["train_loss"], row["val_loss"], row["val_recon_mse"], lr_now,
                           row["seconds"])
            if converged(prev, row, t.rel_tol):
                stop_reason = "converged"
                break
            prev = row
    finally:
        release_heap()

    model.eval()
    return FitResult(epochs_run=len(history), converged=stop_reason == "converged", stop_reason=stop_reason,
                     final=history[-1], best_val_recon_mse=best, model=model, history=history)


def _inject(fault: str, loss: Tensor) -> Tensor:
    """trainer.fault: exercise the failure paths of a sweep on purpose (tests, demos)."""
    if fault == "oom":
        raise MemoryError("injected by trainer.fault=oom")
    if fault == "error":
        raise RuntimeError("injected by trainer.fault=error")
    return loss * float("nan")
