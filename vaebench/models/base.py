"""The shared fully connected VAE: encoder, reparameterisation, mirrored decoder, analytic KL.

Each model file adds only its loss (docs: ../shared/docs/losses.md). `loss()` returns a dict of scalar
tensors that always holds `loss` (what is optimised), `recon` (the model's own reconstruction term,
which the stopping rule watches), `recon_mse` (plain MSE, comparable across models) and `kld` (+KL).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn


class ForwardOutput(NamedTuple):
    recon: Tensor  # x_hat in (0, 1): [B, F], or [B, S, F] for IWAE
    mu: Tensor  # [B, D]
    log_var: Tensor  # [B, D]
    z: Tensor  # sampled latent: [B, D], or [B, S, D] for IWAE


def kl_per_row(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) summed over latent dims: [..., D] -> [...]."""
    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)


def mean(t: Tensor, dim: Optional[int] = None) -> Tensor:
    """t.mean(dim), the same numbers, with a cheaper gradient on CPU.

    On CPU a float32/float64 mean is a sum divided by the count, so sum / count gives the same bits; the
    gradient of a sum is then a broadcast view, where mean's materialises a tensor of t's size (a pass
    over [B, F], or IWAE's [B, S, F]). CUDA multiplies by 1 / count and CPU bf16/fp16 means go through
    float32, so those stay t.mean().
    """
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return t.mean() if dim is None else t.mean(dim)
    if dim is None:
        return t.sum() / t.numel()
    return t.sum(dim) / t.shape[dim]


def dense_block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU())


class BaseVAE(nn.Module):
    def __init__(self, n_features: int, latent_dim: int, hidden_dims: list[int], loss_mode: str = "paper"):
        super().__init__()
        if loss_mode not in ("paper", "corrected"):
            raise ValueError(f"loss_mode must be paper or corrected, got {loss_mode!r}")
        self.n_features, self.latent_dim, self.loss_mode = n_features, latent_dim, loss_mode
        sizes = [n_features, *hidden_dims]
        self.encoder = nn.Sequential(*(dense_block(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        self.fc_mu = nn.Linear(sizes[-1], latent_dim)
        self.fc_log_var = nn.Linear(sizes[-1], latent_dim)
        back = [latent_dim, *reversed(hidden_dims)]
        self.decoder = nn.Sequential(
            *(dense_block(a, b) for a, b in zip(back[:-1], back[1:])),
            nn.Linear(back[-1], n_features),
            nn.Sigmoid(),
        )

    @property
    def corrected(self) -> bool:
        return self.loss_mode == "corrected"

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_log_var(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: Tensor, log_var: Tensor) -> Tensor:
        # Sampled in validation too, as the study's code did: its validation loss is stochastic.
        return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)

    def check_input(self, x: Tensor) -> None:
        """Every model's forward calls this: a wrong width is a ValueError naming both sizes."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected input [B, {self.n_features}], got {list(x.shape)}")

    def forward(self, x: Tensor) -> ForwardOutput:
        self.check_input(x)
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        return ForwardOutput(self.decode(z), mu, log_var, z)

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        raise NotImplementedError
