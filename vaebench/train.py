"""The one training loop: whole data set as a tensor on the device, batches by slicing a seeded
permutation, validation under inference_mode, a stopping rule (the study's, or patience), NaN/Inf detection.

Per step the loop does only the model's own work: rows are gathered straight from the resident matrix
(no per-run copy of the training rows), loss terms are summed on the device (one transfer per epoch),
and on CPU freed memory stays in the process for the next step (vaebench.device.retain_freed_memory). BENCHMARKS.md
measures it against the bare matrix products. trainer.compile, trainer.amp and trainer.cuda_graphs are opt-in.
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
from vaebench.device import cpu_has_bf16, release_heap, retain_freed_memory
from vaebench.config import Fault, Stopping
from vaebench.models import BaseVAE, ForwardOutput, LossMode, build_model

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
    stop_reason: str  # converged | patience | max_epochs
    final: dict[str, float]  # the reported epoch's train_* and val_* means (the best one under patience)
    best_epoch: int  # epoch of the lowest validation loss
    still_improving: bool  # the last epoch set a new lowest validation loss
    best_val_recon_mse: float
    model: BaseVAE  # the trained model (the reported epoch's weights), in eval mode, for what is measured after
    history: list[dict[str, float]] = field(default_factory=list)


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


def validation_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Validation batches: every row is scored, a last single row joins the batch before it."""
    bounds = batch_bounds(n, batch_size, drop_last=False)
    if bounds and bounds[-1][1] < n:
        bounds[-1] = (bounds[-1][0], n)
    return bounds


class EpochMeans:
    """An epoch's loss terms, summed on the device (one transfer per epoch, not one per step).

    Means weight each batch by its rows, except the objective's own terms in paper mode: the study
    averaged per-batch values unweighted (a 84-row last batch counts as much as a 1000-row one), which
    moves its stopping epochs (losses.md 7a). recon_mse, the number compared across models and with the
    baselines, is always the mean over rows.
    """

    def __init__(self, per_batch: bool):
        self.per_batch, self.sums, self.rows, self.batches = per_batch, {}, 0, 0

    def add(self, terms: dict[str, Tensor], rows: int) -> None:
        for k, v in terms.items():
            v = v.detach()
            if k == "recon_mse" or not self.per_batch:
                v = v * rows
            if k in self.sums:
                self.sums[k] += v
            else:  # a copy: the sums grow in place, and a CUDA graph's outputs are overwritten by its next replay
                self.sums[k] = v.clone()
        self.rows += rows
        self.batches += 1

    def means(self, prefix: str) -> dict[str, float]:
        keys = list(self.sums)
        sums = torch.stack([self.sums[k] for k in keys])
        counts = torch.tensor([max(self.rows if k == "recon_mse" or not self.per_batch else self.batches, 1)
                               for k in keys], dtype=sums.dtype, device=sums.device)
        return {f"{prefix}{k}": v for k, v in zip(keys, (sums / counts).tolist())}


def model_output(model: BaseVAE, xb: Tensor, amp: bool) -> ForwardOutput:
    """The model's forward; trainer.amp runs it under bf16 autocast (matrix products in bf16) and hands
    float32 outputs to the loss, so MSE, KL and InfoVAE's MMD (a difference of kernel sums) stay float32."""
    if not amp:
        return model(xb)
    with torch.autocast(xb.device.type, dtype=torch.bfloat16):
        out = model(xb)
    return ForwardOutput(*(t.float() for t in out))


def evaluate(model: BaseVAE, x_val: Tensor, batch_size: int, kld_weight: float, amp: bool = False,
             prefix: str = "val_") -> dict[str, float]:
    """The loss terms' means over the rows x_val (validation; or the test rows, prefix "test_")."""
    model.eval()
    sums = EpochMeans(per_batch=model.loss_mode is LossMode.paper)
    with torch.inference_mode():
        for start, end in validation_bounds(len(x_val), batch_size):
            xb = x_val[start:end]
            sums.add(model.loss(model_output(model, xb, amp), xb, kld_weight), end - start)
    model.train()
    return sums.means(prefix)


def _all_finite(model: BaseVAE) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())  # one sync


def forward_loss(model: BaseVAE, compile: bool, amp: bool) -> Callable[[Tensor, float], dict[str, Tensor]]:
    """The step's forward and loss: eager by default; trainer.compile wraps it in torch.compile (inductor
    with fallback_random: the draws stay torch's own, so results stay within float tolerance of eager)."""
    def step(xb: Tensor, kld_weight: float) -> dict[str, Tensor]:
        return model.loss(model_output(model, xb, amp), xb, kld_weight)

    return _compiled(step) if compile else step


def _compiled(fn: Callable, mode: Optional[str] = None) -> Callable:
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    # A sweep worker compiles one graph per (model, latent size, batch shape) and reuses it across its
    # jobs; past dynamo's default limit of 8 it would fall back to eager without a word.
    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 64))
    return torch.compile(fn, dynamic=False, mode=mode)


def whole_step(model: BaseVAE, optimizer: torch.optim.Optimizer, grad_clip: Optional[float], amp: bool,
               diverge: bool) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    """trainer.cuda_graphs: the whole training step (forward, loss, backward, clipping, optimizer step) through
    torch.compile's reduce-overhead mode, which on a GPU replays each compiled part as a CUDA graph: one launch
    instead of ~100 small kernels and their Python. The KL weight comes in as a tensor and the learning rate is
    one (fit), so neither recompiles when it changes. On CPU it is compiled without graphs."""
    def step(xb: Tensor, kld_weight: Tensor) -> dict[str, Tensor]:
        terms = model.loss(model_output(model, xb, amp), xb, kld_weight)
        loss = terms["loss"] * float("nan") if diverge else terms["loss"]  # trainer.fault=diverge
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    return _compiled(step, mode="reduce-overhead")


class Stopper:
    """Decides after each epoch whether to stop, and which epoch's numbers and weights to report.

    study: losses.md 7a, the last epoch is reported. patience: stop when the validation loss has not
    improved for `patience` epochs (not before the KL warm-up ends: until then the objective is still
    changing), and report the best epoch, whose weights are kept.
    """

    def __init__(self, cfg: Config):
        self.rule, self.rel_tol, self.patience = cfg.trainer.stopping, cfg.trainer.rel_tol, cfg.trainer.patience
        self.warmup = cfg.model.kl_warmup_epochs
        self.prev: Optional[dict] = None
        self.best: Optional[dict] = None
        self.best_state: Optional[dict[str, Tensor]] = None
        self.reason = "max_epochs"

    def update(self, row: dict[str, float], model: BaseVAE) -> bool:
        """Record the epoch's row; True when training should stop."""
        improved = self.best is None or row["val_loss"] < self.best["val_loss"]
        if improved:
            self.best = row
            if self.rule is Stopping.patience:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stop = False
        if self.rule is Stopping.study:
            stop = converged(self.prev, row, self.rel_tol)
        elif row["epoch"] > self.warmup and row["epoch"] - self.best["epoch"] >= self.patience:
            stop = True
        self.prev = row
        if stop:
            self.reason = "converged" if self.rule is Stopping.study else "patience"
        return stop

    def reported(self, history: list[dict[str, float]], model: BaseVAE) -> dict[str, float]:
        if self.rule is Stopping.patience and self.best_state is not None:
            model.load_state_dict(self.best_state)
            return self.best
        return history[-1]


def fit(cfg: Config, x: Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
        on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
        gene_variance: Optional[Tensor] = None) -> FitResult:
    """Train one model on rows train_idx of x (already on its device); raise NonFiniteError on divergence.
    gene_variance: the training rows' variance per gene (models.base.row_variance), when the caller keeps it."""
    t, device = cfg.trainer, x.device
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, x.shape[1], cfg.latent_dim).to(device)
    opt_cfg = {k: v for k, v in vars(cfg.optimizer).items() if k != "name"}
    if "betas" in opt_cfg:
        opt_cfg["betas"] = tuple(opt_cfg["betas"])
    # cuda_graphs: a tensor learning rate, which the scheduler updates in place, so the compiled step stays valid.
    lr = torch.tensor(cfg.lr, device=device) if t.cuda_graphs else cfg.lr
    if t.cuda_graphs and device.type == "cuda" and cfg.optimizer.name != "sgd":
        opt_cfg["capturable"] = True  # the step counters on the GPU, as a CUDA graph needs them
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), lr=lr, **opt_cfg)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.scheduler_gamma)

    # Batches gather their rows straight from x: no copy of the training rows per run.
    train_rows = torch.as_tensor(train_idx, device=device)
    x_val = x[torch.as_tensor(val_idx, device=device)]
    n_train, n_val = len(train_idx), len(val_idx)
    batch_size = t.batch_for(n_train)
    kld_train, kld_val = cfg.model.kld_weights(batch_size, n_train, n_val)
    bounds = batch_bounds(n_train, batch_size, t.drop_last)
    if not bounds:
        raise ValueError(f"no training batch: {n_train} training rows with batch_size={batch_size}, "
                         f"drop_last={t.drop_last}")
    model.start_variance(x, train_rows, gene_variance)
    if device.type == "cpu":
        retain_freed_memory()
        if t.amp and not cpu_has_bf16():
            log.warning("trainer.amp on a CPU without oneDNN's bf16 kernels (they need AVX-512): its matrix products "
                        "are emulated, epochs run many times slower than without amp; set trainer.amp=false here")
    step_loss = forward_loss(model, t.compile, t.amp)
    step_all = whole_step(model, optimizer, cfg.model.grad_clip, t.amp, t.fault is Fault.diverge) \
        if t.cuda_graphs else None
    generator = torch.Generator().manual_seed(cfg.seed)
    fault = t.fault.value if t.fault else None
    per_batch = cfg.model.loss_mode is LossMode.paper
    history: list[dict[str, float]] = []
    stopper = Stopper(cfg)

    try:
        for epoch in range(1, t.max_epochs + 1):
            started = time.perf_counter()
            lr_now = float(optimizer.param_groups[0]["lr"])
            kld_now = kld_train * cfg.model.kl_warmup(epoch)
            order = train_rows[torch.randperm(n_train, generator=generator).to(device)]
            kld_tensor = torch.tensor(kld_now, device=device) if step_all else None  # one copy an epoch, not a step
            sums = EpochMeans(per_batch)
            for start, end in bounds:
                xb = x.index_select(0, order[start:end])
                if step_all is not None:
                    if fault is not None and fault != "diverge":
                        _inject(fault, None)
                    sums.add(step_all(xb, kld_tensor), end - start)
                    continue
                terms = step_loss(xb, kld_now)
                loss = terms["loss"]
                if fault is not None:
                    loss = _inject(fault, loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.model.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.model.grad_clip)
                optimizer.step()
                sums.add(terms, end - start)
            scheduler.step()

            row = {"epoch": epoch, "lr": lr_now, **sums.means("train_")}
            if not math.isfinite(row["train_loss"]):
                raise NonFiniteError(epoch, "the training loss")
            if not _all_finite(model):
                raise NonFiniteError(epoch, "the weights")
            # Validation always at the full KL weight: the same objective every epoch, warm-up or not.
            row.update(evaluate(model, x_val, batch_size, kld_val, t.amp))
            if not math.isfinite(row["val_loss"]):
                raise NonFiniteError(epoch, "the validation loss")
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            on_epoch(row)
            epoch_log.info("epoch %d/%d train_loss=%.5g val_loss=%.5g val_recon_mse=%.5g lr=%.3g (%.2f s)", epoch,
                           t.max_epochs, row["train_loss"], row["val_loss"], row["val_recon_mse"], lr_now,
                           row["seconds"])
            if stopper.update(row, model):
                break
    finally:
        release_heap()

    final = stopper.reported(history, model)
    model.eval()
    return FitResult(epochs_run=len(history), converged=stopper.reason != "max_epochs", stop_reason=stopper.reason,
                     final=final, best_epoch=stopper.best["epoch"],
                     still_improving=stopper.best["epoch"] == history[-1]["epoch"],
                     best_val_recon_mse=min(r["val_recon_mse"] for r in history), model=model, history=history)


def _inject(fault: str, loss: Optional[Tensor]) -> Tensor:
    """trainer.fault: exercise the failure paths of a sweep on purpose (tests, demos)."""
    if fault == "oom":
        raise MemoryError("injected by trainer.fault=oom")
    if fault == "error":
        raise RuntimeError("injected by trainer.fault=error")
    if fault == "fatal":  # the message of a sticky CUDA error: vaebench.device.is_fatal knows it by this
        raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by trainer.fault=fatal)")
    return loss * float("nan")
