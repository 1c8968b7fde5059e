"""LogCosh VAE (losses.md section 6): loss = (1/a) mean log cosh(a (x_hat - x)) + b * kld_weight * KL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row, mean


def log_cosh(u: Tensor, stable: bool) -> Tensor:
    if stable:  # symmetric: never overflows, same value everywhere
        return u.abs() + F.softplus(-2 * u.abs()) - math.log(2.0)
    # The study's form (PyTorch-VAE): exp(-2u) overflows to inf for u < -44 in float32.
    return u + torch.log1p(torch.exp(-2 * u)) - math.log(2.0)


class LogCoshVAE(BaseVAE):
    def __init__(self, n_features: int, latent_dim: int, hidden_dims: list[int], loss_mode: str = "paper",
                 alpha: float = 10.0, beta: float = 1.0):
        super().__init__(n_features, latent_dim, hidden_dims, loss_mode)
        self.alpha, self.beta = alpha, beta

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        t = out.recon - x
        recon = mean(log_cosh(self.alpha * t, stable=self.corrected)) / self.alpha
        kld = kl_per_row(out.mu, out.log_var).mean()
        with torch.no_grad():  # a reported metric: no graph, its [B, F] square is freed at once
            recon_mse = t.pow(2).mean()
        return {"loss": recon + self.beta * kld_weight * kld, "recon": recon, "recon_mse": recon_mse, "kld": kld}
