"""The models' configs: every key of model=vae|iwae|infovae|logcosh with its default and range checks, and the
objective's switches. Free of torch, as vaebench/data/config.py is for the data: composing and checking a
configuration (vaebench --help, --cfg job, a typo, a resumed sweep's skip) never imports it. Each model's
file (vae.py, ...) holds its network and loss and names its config here (docs/losses.md has the formulas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from vaebench.errors import UserError, auto_or, require


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
        self.kld_weight = auto_or(self.kld_weight, "model.kld_weight", float, "a number >= 0")
        if self.kld_weight != "auto":
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


@dataclass
class VAEConfig(ModelConfig):
    name: str = "vae"


@dataclass
class IWAEConfig(ModelConfig):
    name: str = "iwae"
    num_samples: int = 5  # posterior samples per row

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_samples >= 1, "model.num_samples", f"must be >= 1, got {self.num_samples}")


class Kernel(Enum):
    imq = "imq"
    rbf = "rbf"


@dataclass
class InfoVAEConfig(ModelConfig):
    name: str = "infovae"
    alpha: float = -9.0  # weight (1 - alpha) on KL; must be <= 0
    beta: float = 10.5  # weight on reconstruction
    reg_weight: float = 110.0  # the paper's lambda: weight (alpha + lambda - 1) on MMD
    kernel: Kernel = Kernel.imq
    latent_var: float = 2.0  # kernel scale C = 2 * latent_dim * latent_var
    grad_clip: Optional[float] = 0.8  # the study clipped InfoVAE's gradient norm (only InfoVAE's)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kernel = as_enum(Kernel, self.kernel, "model.kernel")
        require(self.alpha <= 0, "model.alpha", f"InfoVAE needs alpha <= 0, got {self.alpha}")
        require(self.latent_var > 0, "model.latent_var", f"must be > 0, got {self.latent_var}")


@dataclass
class LogCoshConfig(ModelConfig):
    name: str = "logcosh"
    alpha: float = 10.0  # sharpness a: log cosh(a t) / a is ~ a t^2 / 2 near 0, ~ |t| far from it
    beta: float = 1.0  # extra weight on the KL term

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.alpha > 0, "model.alpha", f"must be > 0, got {self.alpha}")
        require(self.likelihood is Likelihood.gaussian, "model.likelihood",
                "LogCosh's reconstruction term is its log-cosh; leave model.likelihood at gaussian")


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"vae": VAEConfig, "iwae": IWAEConfig, "infovae": InfoVAEConfig,
                                              "logcosh": LogCoshConfig}
