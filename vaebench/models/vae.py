"""Standard VAE (losses.md section 3): loss = MSE + kld_weight * KL. Both loss modes are the same here."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row


class VAE(BaseVAE):
    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        recon = F.mse_loss(out.recon, x)
        kld = kl_per_row(out.mu, out.log_var).mean()
        return {"loss": recon + kld_weight * kld, "recon": recon, "recon_mse": recon, "kld": kld}
