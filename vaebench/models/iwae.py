"""Importance-weighted autoencoder (losses.md section 4).

paper:     l_bs = mean_f (x_hat_bs - x_b)^2 + M_N * KL_b;  loss = mean_b sum_s softmax_s(l_b)_s * l_bs
           (the study's code: the weights favour the worst sample, are not detached, and KL cancels in them)
corrected: log w_bs = -(R_bs + M_N * [log q(z|x) - log p(z)]);  loss = -mean_b (logsumexp_s log w_bs - log S)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row, mean


class IWAE(BaseVAE):
    def __init__(self, n_features: int, latent_dim: int, hidden_dims: list[int], loss_mode: str = "paper",
                 num_samples: int = 5):
        super().__init__(n_features, latent_dim, hidden_dims, loss_mode)
        if num_samples < 1:
            raise ValueError(f"IWAE needs num_samples >= 1, got {num_samples}")
        self.num_samples = num_samples

    def forward(self, x: Tensor) -> ForwardOutput:
        self.check_input(x)  # overrides BaseVAE.forward, so it must run the width check itself
        mu, log_var = self.encode(x)  # [B, D]
        b, s, d = mu.shape[0], self.num_samples, mu.shape[1]
        # One posterior, S independent draws per row; the decoder sees all B*S rows as one batch.
        z = self.reparameterize(mu.unsqueeze(1).expand(b, s, d), log_var.unsqueeze(1).expand(b, s, d))
        recon = self.decode(z.reshape(b * s, d)).view(b, s, -1)  # [B, S, F]
        return ForwardOutput(recon, mu, log_var, z)

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        # The same numbers as (recon - x).pow(2).mean(-1) with fewer passes over [B, S, F], the step's
        # largest tensor: mse_loss squares the difference in one pass, forward and backward.
        sq_err = mean(F.mse_loss(out.recon, x.unsqueeze(1).expand_as(out.recon), reduction="none"), dim=-1)  # [B, S]
        kld_row = kl_per_row(out.mu, out.log_var)  # [B]
        if self.corrected:
            mu, log_var = out.mu.unsqueeze(1), out.log_var.unsqueeze(1)
            log_q_minus_log_p = 0.5 * torch.sum(
                out.z.pow(2) - (out.z - mu).pow(2) * torch.exp(-log_var) - log_var, dim=-1)  # [B, S]
            log_w = -(sq_err + kld_weight * log_q_minus_log_p)
            loss = -(torch.logsumexp(log_w, dim=1) - math.log(self.num_samples)).mean()
        else:
            per_sample = sq_err + kld_weight * kld_row.unsqueeze(1)  # [B, S]
            weights = torch.softmax(per_sample, dim=1)
            loss = (weights * per_sample).sum(dim=1).mean()
        recon = sq_err.mean()
        return {"loss": loss, "recon": recon, "recon_mse": recon, "kld": kld_row.mean()}
