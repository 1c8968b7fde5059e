"""The four models of the study; keys match conf/model/*.yaml."""

from __future__ import annotations

from typing import Any

from vaebench.models.base import BaseVAE, ForwardOutput, kl_per_row
from vaebench.models.infovae import InfoVAE
from vaebench.models.iwae import IWAE
from vaebench.models.logcosh import LogCoshVAE
from vaebench.models.vae import VAE

MODELS: dict[str, type[BaseVAE]] = {"vae": VAE, "iwae": IWAE, "infovae": InfoVAE, "logcosh": LogCoshVAE}

# Config keys that are not constructor arguments: the loop uses them (kld_weight, grad_clip).
_TRAINER_KEYS = {"name", "hidden_dims", "loss_mode", "kld_weight", "grad_clip"}


def build_model(model_cfg: Any, n_features: int, latent_dim: int) -> BaseVAE:
    """A model from its typed config (vaebench.config.*Config)."""
    plain = {k: getattr(v, "value", v) for k, v in vars(model_cfg).items()}  # enums -> their strings
    extra = {k: v for k, v in plain.items() if k not in _TRAINER_KEYS}
    return MODELS[model_cfg.name](n_features, latent_dim, list(model_cfg.hidden_dims),
                                  loss_mode=plain["loss_mode"], **extra)


__all__ = ["MODELS", "BaseVAE", "ForwardOutput", "build_model", "kl_per_row", "VAE", "IWAE", "InfoVAE",
           "LogCoshVAE"]
