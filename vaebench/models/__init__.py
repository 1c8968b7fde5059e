"""The four models of the study. Each model's file holds its network and loss, its config lives in
models/config.py (free of torch); adding a model = its file, its config, one line below and its
conf/model/<name>.yaml.

The configs are imported here at once; the networks (and torch) only when first asked for, so that composing
and checking a configuration (vaebench --help, a typo, a resumed sweep's skip) costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

from vaebench.models.config import (MODEL_CONFIGS, DecoderVariance, InfoVAEConfig, IWAEConfig, Kernel, Likelihood,
                                    LogCoshConfig, LossMode, ModelConfig, VAEConfig)

# what needs torch: name -> its module in vaebench.models, imported on first use
_LAZY = {"BaseVAE": "base", "ForwardOutput": "base", "kl_per_row": "base", "VAE": "vae", "IWAE": "iwae",
         "InfoVAE": "infovae", "LogCoshVAE": "logcosh"}


def __getattr__(name: str) -> Any:
    if name == "MODELS":
        from vaebench.models.infovae import InfoVAE
        from vaebench.models.iwae import IWAE
        from vaebench.models.logcosh import LogCoshVAE
        from vaebench.models.vae import VAE

        return {"vae": VAE, "iwae": IWAE, "infovae": InfoVAE, "logcosh": LogCoshVAE}
    if name in _LAZY:
        return getattr(importlib.import_module(f"vaebench.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vaebench.models' has no attribute {name!r}")


def build_model(model_cfg: ModelConfig, n_features: int, latent_dim: int):
    """A model from its typed config (the model's own Config dataclass)."""
    from vaebench.models import MODELS

    return MODELS[model_cfg.name](n_features, latent_dim, model_cfg)


__all__ = ["MODELS", "MODEL_CONFIGS", "BaseVAE", "ForwardOutput", "ModelConfig", "LossMode", "Likelihood", "Kernel",
           "DecoderVariance", "build_model", "kl_per_row", "VAE", "IWAE", "InfoVAE", "LogCoshVAE", "VAEConfig",
           "IWAEConfig", "InfoVAEConfig", "LogCoshConfig"]
