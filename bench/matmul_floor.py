"""The floor an epoch is measured against: the bare matrix products of one epoch of a model, timed with
torch.mm on tensors of the same shapes, batch by batch exactly as vaebench.train batches the rows."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from common import sync


class Floor:
    """The bare matrix products of one epoch of `model`, timed with torch.mm.

    For every nn.Linear (K -> N) on M rows: the forward product x[M,K] @ W[N,K].T, and in training the two
    backward products grad[M,N].T @ x (weight gradient) and grad @ W (input gradient; not for the first
    encoder layer, whose input is the data). IWAE's decoder runs on batch x num_samples rows. InfoVAE adds
    its MMD's three [B,D] x [D,B] kernel products and their three backward products. Validation batches
    are forward only. Bias adds, activations, losses, BatchNorm and the optimizer are not in the floor:
    they are what the real epoch may add on top.
    """

    def __init__(self, model: nn.Module, train_rows: list[int], val_rows: list[int], device: torch.device):
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(1234)
        self.cache: dict[tuple[int, ...], Tensor] = {}
        self.ops: list[tuple[Tensor, Tensor]] = []
        for rows in train_rows:
            self.ops += self._step(model, rows, backward=True)
        for rows in val_rows:
            self.ops += self._step(model, rows, backward=False)

    def _t(self, *shape: int) -> Tensor:
        if shape not in self.cache:  # never the global RNG: the floor runs between fit's epochs
            self.cache[shape] = torch.empty(shape, device=self.device).normal_(generator=self.gen)
        return self.cache[shape]

    def _linear(self, layer: nn.Linear, rows: int, backward: bool, grad_in: bool) -> list[tuple[Tensor, Tensor]]:
        k, n = layer.in_features, layer.out_features
        x, w, g = self._t(rows, k), self._t(n, k), self._t(rows, n)
        ops = [(x, w.t())]
        if backward:
            ops.append((g.t(), x))
            if grad_in:
                ops.append((g, w))
        return ops

    def _step(self, model: nn.Module, b: int, backward: bool) -> list[tuple[Tensor, Tensor]]:
        s = getattr(model.config, "num_samples", 1)  # IWAE decodes num_samples rows per input row
        enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
        dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
        fwd: list[tuple[Tensor, Tensor]] = []
        bwd: list[tuple[Tensor, Tensor]] = []

        def add(ops: list[tuple[Tensor, Tensor]]) -> None:
            fwd.append(ops[0])
            bwd.extend(ops[1:])

        for i, layer in enumerate(enc):
            add(self._linear(layer, b, backward, grad_in=i > 0))
        for layer in (model.fc_mu, model.fc_log_var):
            add(self._linear(layer, b, backward, grad_in=True))
        for layer in dec:
            add(self._linear(layer, b * s, backward, grad_in=True))
        if hasattr(model, "mmd"):  # k(prior, prior), k(z, z), k(prior, z); gradients flow to z only
            d = model.latent_dim
            z, p, kern = self._t(b, d), self._t(b, d, 1)[..., 0], self._t(b, b)
            fwd += [(p, p.t()), (z, z.t()), (p, z.t())]
            if backward:
                bwd += [(kern, z), (kern.t(), z), (kern.t(), p)]
        return fwd + (bwd[::-1] if backward else [])

    def epoch(self) -> float:
        sync(self.device)
        started = time.perf_counter()
        for a, b in self.ops:
            torch.mm(a, b)
        sync(self.device)
        return time.perf_counter() - started


def epoch_rows(n_train: int, n_val: int, batch: int, drop_last: bool) -> tuple[list[int], list[int]]:
    """Rows of each training and validation batch: vaebench.train's own batches."""
    from vaebench.train import batch_bounds, validation_bounds

    return ([e - s for s, e in batch_bounds(n_train, batch, drop_last)],
            [e - s for s, e in validation_bounds(n_val, batch)])
