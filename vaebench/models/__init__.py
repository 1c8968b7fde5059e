"""The four models of the study. Each model's file holds its config (defaults, range checks) and its
loss; adding a model = its file, one line below and its conf/model/<name>.yaml."""

from __future__ import annotations

from vaebench.models.base import BaseVAE, ForwardOutput, Likelihood, LossMode, ModelConfig, kl_per_row
from vaebench.models.infovae import InfoVAE, InfoVAEConfig, Kernel
from vaebench.models.iwae import IWAE, IWAEConfig
from vaebench.models.logcosh import LogCoshConfig, LogCoshVAE
from vaebench.models.vae import VAE, VAEConfig

MODELS: dict[str, type[BaseVAE]] = {"vae": VAE, "iwae": IWAE, "infovae": InfoVAE, "logcosh": LogCoshVAE}
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {name: model.Config for name, model in MODELS.items()}


def build_model(model_cfg: ModelConfig, n_features: int, latent_dim: int) -> BaseVAE:
    """A model from its typed config (the model's own Config dataclass)."""
    return MODELS[model_cfg.name](n_features, latent_dim, model_cfg)


__all__ = ["MODELS", "MODEL_CONFIGS", "BaseVAE", "ForwardOutput", "ModelConfig", "LossMode", "Likelihood", "Kernel",
           "build_model", "kl_per_row", "VAE", "IWAE", "InfoVAE", "LogCoshVAE", "VAEConfig", "IWAEConfig",
           "InfoVAEConfig", "LogCoshConfig"]
