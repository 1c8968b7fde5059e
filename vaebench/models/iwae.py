"""Importance-weighted autoencoder (docs/losses.md sections 4, 9 and 10).

paper:     l_bs = mean_f (x_hat_bs - x_b)^2 + M_N * KL_b;  loss = mean_b sum_s softmax_s(l_b)_s * l_bs
           (the study's code: the weights favour the worst sample, are not detached, and KL cancels in them)
corrected: log w_bs = -(R_bs + M_N * [log q(z|x) - log p(z)]);  loss = -mean_b (logsumexp_s log w_bs - log S)
elbo:      log w_bs = -(nll_bs + beta * [log q(z|x) - log p(z)]); the same bound, divided by F
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row, log_q_minus_log_p, mean
from vaebench.models.config import IWAEConfig
from vaebench.models.vae import recon_terms


class IWAE(BaseVAE):
    Config = IWAEConfig

    def forward(self, x: Tensor) -> ForwardOutput:
        self.check_input(x)  # overrides BaseVAE.forward, so it must run the width check itself
        mu, log_var = self.encode(x)  # [B, D]
        b, s, d = mu.shape[0], self.config.num_samples, mu.shape[1]
        # One posterior, S independent draws per row; the decoder sees all B*S rows as one batch.
        z = self.reparameterize(mu.unsqueeze(1).expand(b, s, d), log_var.unsqueeze(1).expand(b, s, d))
        recon = self.decode(z.reshape(b * s, d)).view(b, s, -1)  # [B, S, F]
        return ForwardOutput(recon, mu, log_var, z)

    def _bound(self, log_w: Tensor) -> Tensor:
        """-mean_b (logsumexp_s log w_bs - log S): the negative IWAE bound; its gradient is the bound's."""
        return -(torch.logsumexp(log_w, dim=1) - math.log(self.config.num_samples)).mean()

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        kld_row = kl_per_row(out.mu, out.log_var)  # [B]
        if self.corrected:
            lqp = log_q_minus_log_p(out.z, out.mu.unsqueeze(1), out.log_var.unsqueeze(1))  # [B, S]
        if self.elbo:
            nll, recon, recon_mse = recon_terms(self, out.recon, x.unsqueeze(1))  # nll: [B, S]
            loss = self._bound(-(nll + kld_weight * lqp)) / x.shape[1]
            return {"loss": loss, "recon": recon, "recon_mse": recon_mse, "kld": kld_row.mean()}
        # The same numbers as (recon - x).pow(2).mean(-1) with fewer passes over [B, S, F], the step's
        # largest tensor: mse_loss squares the difference in one pass, forward and backward.
        sq_err = mean(F.mse_loss(out.recon, x.unsqueeze(1).expand_as(out.recon), reduction="none"), dim=-1)  # [B, S]
        if self.corrected:
            loss = self._bound(-(sq_err + kld_weight * lqp))
        else:
            per_sample = sq_err + kld_weight * kld_row.unsqueeze(1)  # [B, S]
            weights = torch.softmax(per_sample, dim=1)
            loss = (weights * per_sample).sum(dim=1).mean()
        recon = sq_err.mean()
        return {"loss": loss, "recon": recon, "recon_mse": recon, "kld": kld_row.mean()}
