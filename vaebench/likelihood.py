"""Held-out likelihoods in nats per gene (docs/losses.md section 10): the VAE's by importance sampling, and
probabilistic PCA's, exact, as the linear model it is compared with.

The VAE's: log p(x) >= logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K with K draws
z_k ~ q(z | x) (the IWAE bound at K, which tends to log p(x) as K grows). Its negative divided by the number
of genes is `val_nll_is`; lower is better, and unlike the MSE it is comparable across likelihoods and noise
levels. Only loss_mode=elbo defines p(x | z): the study's objectives get null and a reason.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from vaebench.models import BaseVAE
from vaebench.models.base import LOG_2PI

ROWS_PER_PASS = 4096  # decoded rows (samples x draws) held at once: ~80 MB of float32 at 5,000 genes


def no_likelihood_reason(model: BaseVAE) -> Optional[str]:
    """Why a model has no held-out likelihood, or None when it has one."""
    if not model.elbo:
        return (f"loss_mode={model.loss_mode.value} defines no likelihood p(x|z); the held-out likelihood needs "
                f"model.loss_mode=elbo (the default objective)")
    return None


def importance_sampled_nll(model: BaseVAE, x: Tensor, samples: int, batch_size: int, seed: int) -> float:
    """-log p(x) per gene, the mean over the rows x, estimated with `samples` draws from the encoder.

    The draws come from a generator of their own (seeded), so the estimate is reproducible and the run's own
    random stream is untouched. The model is left in eval mode."""
    model.eval()
    n, f = x.shape
    generator = torch.Generator(device=x.device).manual_seed(seed)
    rows = max(1, min(batch_size, ROWS_PER_PASS // samples))
    draws = max(1, min(samples, ROWS_PER_PASS // rows))
    total = 0.0
    with torch.inference_mode():
        for start in range(0, n, rows):
            xb = x[start:start + rows]
            mu, log_var = model.encode(xb)
            std = torch.exp(0.5 * log_var)
            log_w = []
            for first in range(0, samples, draws):
                k = min(draws, samples - first)
                eps = torch.randn((len(xb), k, mu.shape[1]), generator=generator, device=x.device, dtype=mu.dtype)
                z = mu.unsqueeze(1) + eps * std.unsqueeze(1)  # [B, k, D]
                recon = model.decode(z.reshape(-1, z.shape[-1])).view(len(xb), k, f)
                log_p_x_z = model.log_likelihood(recon, xb.unsqueeze(1))  # [B, k]
                log_p_z = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
                log_q_z = -0.5 * (eps.pow(2) + log_var.unsqueeze(1) + LOG_2PI).sum(-1)  # (z - mu)^2 / var = eps^2
                log_w.append(log_p_x_z + log_p_z - log_q_z)
            log_p_x = torch.logsumexp(torch.cat(log_w, dim=1).double(), dim=1) - math.log(samples)
            total += float(log_p_x.sum())
    return -total / (n * f)


def ppca_nll(mean: Tensor, components: Tensor, eigenvalues: Tensor, total_variance: float, x: Tensor) -> float:
    """-log p(x) per gene under probabilistic PCA (Tipping and Bishop 1999), the mean over the rows x.

    Fitted on the training rows: mean [F], the top k principal directions [F, k] and their eigenvalues
    (of the covariance with divisor n) [k], and the covariance's trace. sigma^2 is the mean of the remaining
    F - k eigenvalues (trace minus the top k, over F - k: the zero eigenvalues of a matrix with fewer rows than
    genes count in the mean, as the maximum-likelihood solution has it). C = W W^T + sigma^2 I is never formed:
    log|C| = sum log lambda_i + (F - k) log sigma^2, and (x - m)^T C^-1 (x - m) = (|r|^2 - sum_i (1 - sigma^2 /
    lambda_i) (u_i^T r)^2) / sigma^2 with r = x - m."""
    f, k = components.shape
    lam = eigenvalues.double()
    sigma2 = (total_variance - float(lam.sum())) / (f - k)
    if not sigma2 > 0:
        return math.nan  # the top k directions hold all the variance: the density is degenerate
    lam = lam.clamp_min(sigma2)  # the maximum-likelihood W keeps only directions above the noise
    r = (x.double() - mean.double())
    proj = r @ components.double()  # [n, k]
    quad = (r.pow(2).sum(1) - (proj.pow(2) * (1 - sigma2 / lam)).sum(1)) / sigma2
    log_det = float(torch.log(lam).sum()) + (f - k) * math.log(sigma2)
    log_p = -0.5 * (f * LOG_2PI + log_det + quad)
    return float(-log_p.mean()) / f
