"""InfoVAE / MMD-VAE (losses.md section 5).

loss = beta * MSE + (1 - alpha) * M_N * KL + (alpha + lambda - 1) * MMD^2_u(prior draws, z)

Kernel distances come from one matmul (|a|^2 + |b|^2 - 2 a.b), so memory is O(B^2), never
O(B^2 x D): the study lost every latent-200 InfoVAE run to out-of-memory on a 4 GB GPU.
paper and corrected give the same loss with the imq kernel (the study's); they differ for rbf,
whose paper form (PyTorch-VAE's) averages over D inside the exponent and normalises twice.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 for all pairs: [B, D] x [B, D] -> [B, B], clamped at 0 against rounding."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2 * a @ b.T
    return sq.clamp_min(0)


def off_diagonal_sum(k: Tensor) -> Tensor:
    return k.sum() - k.diagonal().sum()


class InfoVAE(BaseVAE):
    def __init__(self, n_features: int, latent_dim: int, hidden_dims: list[int], loss_mode: str = "paper",
                 alpha: float = -9.0, beta: float = 10.5, reg_weight: float = 110.0, kernel: str = "imq",
                 latent_var: float = 2.0):
        super().__init__(n_features, latent_dim, hidden_dims, loss_mode)
        if alpha > 0:
            raise ValueError(f"InfoVAE needs alpha <= 0, got {alpha}")
        if kernel not in ("imq", "rbf"):
            raise ValueError(f"kernel must be imq or rbf, got {kernel!r}")
        self.alpha, self.beta, self.reg_weight = alpha, beta, reg_weight
        self.kernel, self.latent_var = kernel, latent_var

    def mmd(self, prior: Tensor, z: Tensor) -> Tensor:
        """Unbiased MMD^2 between prior draws and z (both [B, D], B >= 2), as the loss uses it."""
        n, d = z.shape
        if n < 2:
            raise ValueError("InfoVAE's MMD needs a batch of at least 2 rows")
        c = 2.0 * d * self.latent_var
        pairs = n * (n - 1)
        if self.kernel == "imq":  # PyTorch-VAE: sum over i != j, then / (B (B - 1)) in the loss
            def k(a, b):
                return off_diagonal_sum(c / (1e-7 + c + squared_distances(a, b)))
        elif self.corrected:
            def k(a, b):
                return off_diagonal_sum(torch.exp(-squared_distances(a, b) / c))
        else:  # PyTorch-VAE's rbf: mean over D in the exponent, mean over all B^2 pairs, then / B(B-1) again
            def k(a, b):
                return torch.exp(-squared_distances(a, b) / (d * c)).mean()
        return (k(prior, prior) + k(z, z) - 2 * k(prior, z)) / pairs

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float,
             prior: Optional[Tensor] = None) -> dict[str, Tensor]:
        recon = F.mse_loss(out.recon, x)
        kld = kl_per_row(out.mu, out.log_var).mean()
        if prior is None:  # fresh draws on every call, train and validation, as the study did
            prior = torch.randn_like(out.z)
        mmd = self.mmd(prior, out.z)
        loss = (self.beta * recon + (1 - self.alpha) * kld_weight * kld
                + (self.alpha + self.reg_weight - 1) * mmd)
        return {"loss": loss, "recon": recon, "recon_mse": recon, "kld": kld, "mmd": mmd}
