"""LogCosh VAE (docs/losses.md sections 6, 9 and 10).

paper, corrected: loss = (1/alpha) mean log cosh(alpha * (x_hat - x)) + beta * kld_weight * KL
elbo:             loss = (1/F) mean_b [nll_b + beta * kld_weight * KL_b],
                  nll_b = sum_g (1/alpha) log cosh(alpha * (x_hat - x) / s_g) + log s_g + log Z(alpha)

Under the ELBO the log-cosh is a density: p(t) = cosh(alpha t / s)^(-1/alpha) / (s Z(alpha)), with
Z(alpha) = B(1/(2 alpha), 1/2) / alpha: a Gaussian core of width ~s/alpha and Laplace tails of scale s. The
calibrated decoder learns the scale s_g (decoder_variance holds s_g^2, as for the Gaussian); alpha stays the
shape, so the study's robust loss keeps its meaning and only the noise level is fitted (docs/losses.md 10).
decoder_variance=fixed is s = 1 with the constants dropped, the ELBO's numbers before the calibrated decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row, mean
from vaebench.models.config import LogCoshConfig
from vaebench.models.vae import recon_terms


def log_cosh(u: Tensor, stable: bool) -> Tensor:
    if stable:  # symmetric: never overflows, same value everywhere
        return u.abs() + F.softplus(-2 * u.abs()) - math.log(2.0)
    # The study's form (PyTorch-VAE): exp(-2u) overflows to inf for u < -44 in float32.
    return u + torch.log1p(torch.exp(-2 * u)) - math.log(2.0)


def log_normaliser(alpha: float) -> float:
    """log Z(alpha) = log B(1/(2 alpha), 1/2) - log alpha: cosh(alpha t)^(-1/alpha) integrates to Z over the line."""
    h = 1 / (2 * alpha)
    return math.lgamma(h) + math.lgamma(0.5) - math.lgamma(h + 0.5) - math.log(alpha)


class LogCoshVAE(BaseVAE):
    Config = LogCoshConfig

    def _nll(self, t: Tensor, constants: bool) -> Tensor:
        """-log p of the errors t [..., F] summed over genes; without `constants` (fixed scale 1) the log Z terms
        are dropped, as the ELBO before the calibrated decoder did."""
        a, n = self.config.alpha, t.shape[-1]
        if self.variance is None:
            nll = log_cosh(a * t, stable=True).sum(-1) / a
            return nll + n * log_normaliser(a) if constants else nll
        scale = self.variance().expand(n).sqrt()
        return log_cosh(a * t / scale, stable=True).sum(-1) / a + (torch.log(scale).sum() + n * log_normaliser(a))

    def reconstruction(self, recon: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        t = recon - x
        with torch.no_grad():  # a reported metric: no graph, its [B, F] square is freed at once
            recon_mse = t.pow(2).mean()
        return self._nll(t, constants=False), recon_mse

    def log_likelihood(self, recon: Tensor, x: Tensor) -> Tensor:
        return -self._nll(recon - x, constants=True)

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        kld_row = kl_per_row(out.mu, out.log_var)
        if self.elbo:
            nll, recon, recon_mse = recon_terms(self, out.recon, x)
            loss = (nll + self.config.beta * kld_weight * kld_row).mean() / x.shape[1]
            return {"loss": loss, "recon": recon, "recon_mse": recon_mse, "kld": kld_row.mean()}
        t, a, b = out.recon - x, self.config.alpha, self.config.beta
        with torch.no_grad():  # a reported metric: no graph, its [B, F] square is freed at once
            recon_mse = t.pow(2).mean()
        recon = mean(log_cosh(a * t, stable=self.corrected)) / a
        kld = kld_row.mean()
        return {"loss": recon + b * kld_weight * kld, "recon": recon, "recon_mse": recon_mse, "kld": kld}
