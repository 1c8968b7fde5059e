"""Standard VAE (docs/losses.md sections 3, 9 and 10).

paper, corrected: loss = MSE + kld_weight * KL (the same in both modes)
elbo:             loss = (1/F) mean_b [nll_b + kld_weight * KL_b]  (nll_b: the decoder's, BaseVAE.reconstruction)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row
from vaebench.models.config import VAEConfig


def recon_terms(model: BaseVAE, recon: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ELBO: (nll of each row [...], the model's recon term = mean nll per gene, plain MSE without a graph)."""
    nll, mse = model.reconstruction(recon, x)
    return nll, nll.mean() / x.shape[-1], mse


class VAE(BaseVAE):
    Config = VAEConfig

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        kld_row = kl_per_row(out.mu, out.log_var)
        if self.elbo:
            nll, recon, recon_mse = recon_terms(self, out.recon, x)
            loss = (nll + kld_weight * kld_row).mean() / x.shape[1]
            return {"loss": loss, "recon": recon, "recon_mse": recon_mse, "kld": kld_row.mean()}
        recon = F.mse_loss(out.recon, x)
        kld = kld_row.mean()
        return {"loss": recon + kld_weight * kld, "recon": recon, "recon_mse": recon, "kld": kld}
