"""The shared fully connected VAE (encoder, reparameterisation, mirrored decoder, analytic KL), the
configuration every model shares, and the objective switch.

Each model file adds its own config (defaults and range checks, once) and its loss (docs/losses.md).
`loss()` returns a dict of scalar tensors that always holds `loss` (what is optimised), `recon` (the
model's own reconstruction term, which the stopping rule watches), `recon_mse` (plain MSE, comparable
across models) and `kld` (+KL per sample, summed over latent dims).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaebench.models.config import (DecoderVariance, Likelihood, LossMode, ModelConfig,  # noqa: F401
                                    as_enum)  # the configs live torch-free in models/config.py


class ForwardOutput(NamedTuple):
    recon: Tensor  # x_hat in (0, 1): [B, F], or [B, S, F] for IWAE
    mu: Tensor  # [B, D]
    log_var: Tensor  # [B, D]
    z: Tensor  # sampled latent: [B, D], or [B, S, D] for IWAE


def kl_per_dim(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) of each latent dim: [..., D] -> [..., D]."""
    return -0.5 * (1 + log_var - mu.pow(2) - log_var.exp())


def kl_per_row(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) summed over latent dims: [..., D] -> [...]."""
    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)


def log_q_minus_log_p(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log q(z|x) - log N(z; 0, I) for sampled z [B, S, D] of a posterior mu, log_var [B, 1, D] -> [B, S]
    (the -1/2 log 2 pi constants cancel)."""
    return 0.5 * torch.sum(z.pow(2) - (z - mu).pow(2) * torch.exp(-log_var) - log_var, dim=-1)


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


BERNOULLI_EPS = 1e-6  # x_hat kept this far from 0 and 1, so log(x_hat) and log(1 - x_hat) stay finite
FIXED_VARIANCE = 0.5  # decoder_variance=fixed: the sigma^2 under which the squared error is -log p(x|z) + const
LOG_2PI = math.log(2 * math.pi)


def gaussian_nll(sq_err: Tensor, variance: Tensor) -> Tensor:
    """-log N(x; x_hat, variance) summed over genes, from the squared errors [..., F] and a variance per gene
    [F] or shared [1]: sum_g (x - x_hat)^2 / (2 var_g) + 1/2 log var_g + 1/2 log 2 pi (losses.md 10). The
    squared errors meet the weights in one matrix-vector product; the log terms are per gene, not per row."""
    n = sq_err.shape[-1]
    variance = variance.expand(n)
    return sq_err @ (0.5 / variance) + 0.5 * (torch.log(variance).sum() + n * LOG_2PI)


def log_cb_normaliser(lam: Tensor) -> Tensor:
    """log C(lam) of the continuous Bernoulli, C = 2 artanh(1 - 2 lam) / (1 - 2 lam), C(1/2) = 2
    (Loaiza-Ganem and Cunningham 2019). Near 1/2 the ratio is 0/0 in floating point: its series 2 (1 + u^2 / 3)
    in u = 1 - 2 lam is exact there to far below float precision."""
    u = 1 - 2 * lam
    near = u.abs() < 1e-3
    safe = torch.where(near, torch.ones_like(u), u)
    return torch.where(near, math.log(2) + torch.log1p(u.pow(2) / 3), torch.log(2 * torch.atanh(safe) / safe))


@torch.no_grad()
def row_variance(x: Tensor, rows: Optional[Tensor] = None) -> Tensor:
    """Each gene's variance over the rows `rows` of x (all rows when None), where a learned decoder variance
    starts. In float64, one rounding whatever the row count: ~0.1 s at TCGA-11's size, so a sweep worker keeps
    it per data set and split (vaebench.task)."""
    return (x if rows is None else x.index_select(0, rows)).double().var(0).float()


class LearnedVariance(nn.Module):
    """The calibrated decoder's variance (Rybkin et al. 2021): var_g = floor + exp(start_g + shift + gene_g).

    start is the training rows' variance (a buffer, set by BaseVAE.start_variance), shift one learned offset,
    gene_g one learned offset per gene (decoder_variance=gene). Why the shared shift beside the per-gene
    offsets: the loss is divided by the number of genes, so a per-gene parameter's gradient is that much smaller
    than a decoder weight's and plain SGD would barely move it; the shift's gradient is a mean over genes, at the
    decoder's scale, so every optimizer calibrates the overall noise level (Adam and RMSprop, scale-free, also
    each gene's). The floor keeps the variance from shrinking onto the training rows' own noise."""

    def __init__(self, n_features: int, per_gene: bool, floor: float):
        super().__init__()
        self.floor = floor
        self.register_buffer("start", torch.zeros(n_features if per_gene else 1))
        self.shift = nn.Parameter(torch.zeros(()))
        self.gene = nn.Parameter(torch.zeros(n_features)) if per_gene else None

    def start_at(self, variance: Tensor) -> None:
        v = variance if self.gene is not None else variance.mean().reshape(1)
        self.start.copy_(torch.log((v - self.floor).clamp_min(self.floor)))

    def forward(self) -> Tensor:
        """The variance: [F] per gene, [1] shared."""
        log_excess = self.start + self.shift
        if self.gene is not None:
            log_excess = log_excess + self.gene
        return self.floor + torch.exp(log_excess)


class BaseVAE(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, n_features: int, latent_dim: int, config: Optional[ModelConfig] = None, **settings: Any):
        """A model from its config, or from keyword settings of its config (tests, notebooks)."""
        super().__init__()
        self.config = config if config is not None else self.Config(**settings)
        self.n_features, self.latent_dim = n_features, latent_dim
        self.loss_mode = self.config.loss_mode
        hidden_dims = list(self.config.hidden_dims)
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
        # Draws no random numbers: the network starts from the same weights whatever decoder_variance is.
        self.variance = (LearnedVariance(n_features, self.config.decoder_variance is DecoderVariance.gene,
                                         self.config.min_decoder_variance)
                         if self.config.learned_variance else None)

    @property
    def corrected(self) -> bool:
        """The study's bugs fixed: corrected mode, and the ELBO (built on the corrected forms)."""
        return self.loss_mode is not LossMode.paper

    @property
    def elbo(self) -> bool:
        return self.loss_mode is LossMode.elbo

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

    def reconstruction(self, recon: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The ELBO's reconstruction term: (negative log-likelihood of each row summed over genes [...], the
        plain mean squared error as a number to report, without a graph). x broadcasts against recon."""
        x = x.expand_as(recon)
        if self.config.likelihood is Likelihood.bernoulli:
            x_hat = recon.clamp(BERNOULLI_EPS, 1 - BERNOULLI_EPS)
            nll = F.binary_cross_entropy(x_hat, x, reduction="none").sum(-1)
            with torch.no_grad():
                return nll, F.mse_loss(recon, x)
        sq_err = F.mse_loss(recon, x, reduction="none")
        if self.variance is None:  # sigma^2 = 1/2 with the constants dropped: the ELBO's numbers before issue 20
            nll = sq_err.sum(-1)
            return nll, nll.detach().mean() / x.shape[-1]
        return gaussian_nll(sq_err, self.variance()), sq_err.detach().mean()

    def log_likelihood(self, recon: Tensor, x: Tensor) -> Tensor:
        """log p(x | z) of each row as a density, every constant included ([..., F] -> [...]): what the
        held-out likelihood (vaebench.likelihood) sums. Bernoulli is the continuous Bernoulli, whose normaliser
        makes it a density on [0, 1] (losses.md 10)."""
        x = x.expand_as(recon)
        if self.config.likelihood is Likelihood.bernoulli:
            lam = recon.clamp(BERNOULLI_EPS, 1 - BERNOULLI_EPS)
            return (x * torch.log(lam) + (1 - x) * torch.log1p(-lam) + log_cb_normaliser(lam)).sum(-1)
        variance = self.variance() if self.variance is not None else recon.new_tensor(FIXED_VARIANCE)
        return -gaussian_nll(F.mse_loss(recon, x, reduction="none"), variance)

    @torch.no_grad()
    def start_variance(self, x: Tensor, train_rows: Optional[Tensor] = None,
                       gene_variance: Optional[Tensor] = None) -> None:
        """Start a learned decoder variance at the training rows' variance per gene (rows train_rows of x, or
        all of x): the error of the per-gene-mean predictor, the decoder's own error before it has learned
        anything. gene_variance: that variance, when the caller has it (row_variance). A no-op for a fixed
        variance."""
        if self.variance is not None:
            self.variance.start_at(row_variance(x, train_rows) if gene_variance is None else gene_variance)

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        raise NotImplementedError
