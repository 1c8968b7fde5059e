"""LogCosh VAE (docs/losses.md sections 6 and 10).

paper, corrected: loss = (1/alpha) mean log cosh(alpha * (x_hat - x)) + beta * kld_weight * KL
elbo:             loss = (1/F) mean_b [(1/alpha) sum_g log cosh(alpha * (x_hat - x)) + beta * kld_weight * KL_b]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.errors import require
from vaebench.models.base import BaseVAE, ForwardOutput, Likelihood, ModelConfig, kl_per_row, mean


@dataclass
class LogCoshConfig(ModelConfig):
    name: str = "logcosh"
    alpha: float = 10.0  # sharpness a: log cosh(a t) / a is ~ a t^2 / 2 near 0, ~ |t| far from it
    beta: float = 1.0  # extra weight on the KL term

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.alpha > 0, "model.alpha", f"must be > 0, got {self.alpha}")
        require(self.likelihood is Likelihood.gaussian, "model.likelihood",
                "LogCosh's reconstruction term is its log-cosh; leave model.likelihood at gaussian")


def log_cosh(u: Tensor, stable: bool) -> Tensor:
    if stable:  # symmetric: never overflows, same value everywhere
        return u.abs() + F.softplus(-2 * u.abs()) - math.log(2.0)
    # The study's form (PyTorch-VAE): exp(-2u) overflows to inf for u < -44 in float32.
    return u + torch.log1p(torch.exp(-2 * u)) - math.log(2.0)


class LogCoshVAE(BaseVAE):
    Config = LogCoshConfig

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        t, a, b = out.recon - x, self.config.alpha, self.config.beta
        kld_row = kl_per_row(out.mu, out.log_var)
        with torch.no_grad():  # a reported metric: no graph, its [B, F] square is freed at once
            recon_mse = t.pow(2).mean()
        if self.elbo:
            nll = log_cosh(a * t, stable=True).sum(-1) / a  # [B]
            loss = (nll + b * kld_weight * kld_row).mean() / x.shape[1]
            return {"loss": loss, "recon": nll.mean() / x.shape[1], "recon_mse": recon_mse, "kld": kld_row.mean()}
        recon = mean(log_cosh(a * t, stable=self.corrected)) / a
        kld = kld_row.mean()
        return {"loss": recon + b * kld_weight * kld, "recon": recon, "recon_mse": recon_mse, "kld": kld}
