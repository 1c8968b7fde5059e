"""The shared fully connected VAE (encoder, reparameterisation, mirrored decoder, analytic KL), the
configuration every model shares, and the objective switch.

Each model file adds its own config (defaults and range checks, once) and its loss (docs/losses.md).
`loss()` returns a dict of scalar tensors that always holds `loss` (what is optimised), `recon` (the
model's own reconstruction term, which the stopping rule watches), `recon_mse` (plain MSE, comparable
across models) and `kld` (+KL per sample, summed over latent dims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from vaebench.errors import UserError, require


class LossMode(Enum):
    """The objective: one switch, one meaning (docs/losses.md)."""
    paper = "paper"  # the study's exact losses and quirks (sections 3-7)
    corrected = "corrected"  # the study's scale with its bugs fixed (section 8)
    elbo = "elbo"  # the per-sample ELBO, summed over genes, divided by the number of genes (section 10)


class Likelihood(Enum):  # the reconstruction term of loss_mode=elbo
    gaussian = "gaussian"  # squared error summed over genes
    bernoulli = "bernoulli"  # binary cross-entropy summed over genes (tybalt)


class DecoderVariance(Enum):
    """The Gaussian decoder's variance under loss_mode=elbo (LogCosh: the square of its scale); losses.md 10."""
    gene = "gene"  # learned, one per gene (the calibrated decoder; the default objective)
    shared = "shared"  # learned, one for all genes
    fixed = "fixed"  # sigma^2 = 1/2, constants dropped: the ELBO before the calibrated decoder (LogCosh: scale 1)


@dataclass
class ModelConfig:
    name: str = MISSING
    hidden_dims: list[int] = field(default_factory=lambda: [256])
    loss_mode: LossMode = LossMode.paper
    likelihood: Likelihood = Likelihood.gaussian
    kld_weight: Any = "auto"  # "auto" or a number >= 0; OmegaConf has no Union[str, float]
    kl_warmup_epochs: int = 0  # the training KL weight ramps linearly from 0 over this many epochs
    grad_clip: Optional[float] = None
    # Schema defaults are the behaviour from before the key existed, so old runs keep their config hash;
    # conf/objective/ sets what a user gets (the calibrated decoder).
    decoder_variance: DecoderVariance = DecoderVariance.fixed
    min_decoder_variance: float = 1e-3  # the learned variance's floor (losses.md 10): ~3 % of the [0, 1] range

    def __post_init__(self) -> None:
        self.loss_mode = as_enum(LossMode, self.loss_mode, "model.loss_mode")
        self.likelihood = as_enum(Likelihood, self.likelihood, "model.likelihood")
        self.decoder_variance = as_enum(DecoderVariance, self.decoder_variance, "model.decoder_variance")
        require(0 < self.min_decoder_variance < 0.5, "model.min_decoder_variance",
                f"must be in (0, 0.5), got {self.min_decoder_variance}")
        require(len(self.hidden_dims) > 0 and all(h > 0 for h in self.hidden_dims),
                "model.hidden_dims", f"needs one or more positive sizes, got {list(self.hidden_dims)}")
        if self.kld_weight != "auto":
            try:
                self.kld_weight = float(self.kld_weight)
            except (TypeError, ValueError):
                raise UserError(f"config key 'model.kld_weight': use auto or a number >= 0, "
                                f"got {self.kld_weight!r}") from None
            require(math.isfinite(self.kld_weight) and self.kld_weight >= 0, "model.kld_weight",
                    f"must be a finite number >= 0, got {self.kld_weight}")
        require(self.likelihood is Likelihood.gaussian or self.loss_mode is LossMode.elbo, "model.likelihood",
                "only loss_mode=elbo has a choice of likelihood; set model.loss_mode=elbo or likelihood=gaussian")
        require(self.kl_warmup_epochs >= 0, "model.kl_warmup_epochs", f"must be >= 0, got {self.kl_warmup_epochs}")
        require(self.grad_clip is None or self.grad_clip > 0, "model.grad_clip",
                f"must be > 0 or null, got {self.grad_clip}")

    @property
    def learned_variance(self) -> bool:
        """The decoder's variance is a parameter: the ELBO with a Gaussian (or LogCosh) likelihood and a
        learned decoder_variance. Bernoulli has no variance."""
        return (self.loss_mode is LossMode.elbo and self.likelihood is Likelihood.gaussian
                and self.decoder_variance is not DecoderVariance.fixed)

    def kld_weights(self, batch_size: int, n_train: int, n_val: int) -> tuple[float, float]:
        """(training, validation) KL weight. auto: the study's M_N = batch / N_train, and in paper mode
        batch / N_val in validation (the study's quirk, losses.md section 2); 1 (the ELBO) for elbo."""
        if self.kld_weight != "auto":
            return float(self.kld_weight), float(self.kld_weight)
        if self.loss_mode is LossMode.elbo:
            return 1.0, 1.0
        train = batch_size / n_train
        return train, (batch_size / n_val if self.loss_mode is LossMode.paper else train)

    def kl_warmup(self, epoch: int) -> float:
        """Factor on the training KL weight in `epoch` (1-based): 0 in the first, 1 after the warm-up."""
        if self.kl_warmup_epochs == 0:
            return 1.0
        return min(1.0, (epoch - 1) / self.kl_warmup_epochs)


def as_enum(kind: type[Enum], value: Any, key: str) -> Enum:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"config key '{key}': use one of {', '.join(m.value for m in kind)}, got {value!r}") from None


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
    def start_variance(self, x: Tensor, train_rows: Optional[Tensor] = None) -> None:
        """Start a learned decoder variance at the training rows' variance per gene (rows train_rows of x, or
        all of x): the error of the per-gene-mean predictor, the decoder's own error before it has learned
        anything. A no-op for a fixed variance."""
        if self.variance is not None:
            rows = x if train_rows is None else x.index_select(0, train_rows)
            self.variance.start_at(rows.double().var(0).float())  # float64: one rounding, any row count

    def loss(self, out: ForwardOutput, x: Tensor, kld_weight: float) -> dict[str, Tensor]:
        raise NotImplementedError
