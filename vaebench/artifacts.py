"""What a run leaves to take away beside result.json: the trained model (model.pt) and every sample's latent
posterior (latent.csv, and latent.h5ad when the data came from an .h5ad file). `vaebench-embed`
(vaebench/embed.py) applies a saved model to a new matrix. docs/artifacts.md describes the files for users.

latent.csv is comma-separated, as results.csv is: pandas' read_csv, R's read.csv and spreadsheets read it
with no option, and the csv module quotes a sample id that holds a comma. Numbers are written with 9
significant digits, which gives back the encoder's float32 values exactly.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from vaebench import __version__
from vaebench.atomic import replace_atomically
from vaebench.data import Dataset
from vaebench.data.prepare import recipe
from vaebench.data.split import Split
from vaebench.latent import posterior
from vaebench.models import MODEL_CONFIGS, BaseVAE, build_model
# What a run saves and whether it is there: torch-free, in artifact_files (a resumed job's skip reads them).
from vaebench.artifact_files import (LATENT_FILE, LATENT_H5AD, MODEL_FILE, Wanted, anndata_input, files,  # noqa: F401
                                     present, wanted, where)

FORMAT = 1  # model.pt's layout; bump when it changes
MEAN_KEY, LOG_VAR_KEY = "X_vaebench", "vaebench_log_var"  # obsm keys (X_*: scanpy's name for an embedding)
SPLITS = ("train", "val", "test")


def save(out_dir: Path, wants: Wanted, model: BaseVAE, typed: Any, resolved: dict[str, Any], data: Dataset,
         x: torch.Tensor, split: Split) -> list[Path]:
    """Write the artifacts asked for, each whole or absent (temp file, then rename); the paths written."""
    h5ad = anndata_input(typed.data)
    batch_size = typed.trainer.batch_for(len(split.train))
    if wants.model:
        # Serialised in memory, then written: torch.save straight to a file on a full disk fails with its zip
        # writer's "unexpected pos ..." (a RuntimeError), a plain write with "No space left on device" (an OSError).
        buffer = io.BytesIO()
        torch.save(model_file(model, typed, resolved, data, batch_size), buffer)
        replace_atomically(out_dir / MODEL_FILE, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
    if wants.latent:
        mu, log_var = posterior(model, x, batch_size)
        which = np.empty(len(mu), dtype=object)
        for name, rows in zip(SPLITS, (split.train, split.val, split.test)):
            which[rows] = name
        frame = latent_frame(data.sample_ids, mu, log_var, which, data.labels)
        replace_atomically(out_dir / LATENT_FILE, lambda tmp: write_csv(frame, tmp))
        if h5ad:
            replace_atomically(out_dir / LATENT_H5AD, lambda tmp: write_h5ad(frame, mu, log_var, tmp))
    return files(out_dir, wants, h5ad)


def model_file(model: BaseVAE, typed: Any, resolved: dict[str, Any], data: Dataset, batch_size: int) -> dict[str, Any]:
    """model.pt's content: tensors and plain values only, so torch.load(weights_only=True) reads it."""
    how = recipe(typed.data, data)
    if how["scaler"] is not None:
        how["scaler"] = {k: torch.from_numpy(np.asarray(v)) for k, v in how["scaler"].items()}
    return {"format": FORMAT, "vaebench": __version__, "model": typed.model.name, "model_config": resolved["model"],
            "n_genes": model.n_features, "latent_dim": model.latent_dim,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "preparation": how, "data": data.preprocessing, "data_fingerprint": data.fingerprint,
            "batch_size": batch_size, "config": resolved}


class NotAModel(Exception):
    """The file is not a model.pt that vaebench wrote."""


def load_model(path: Path) -> tuple[BaseVAE, dict[str, Any]]:
    """The saved model (CPU, eval mode) and model.pt's content (the preparation with numpy scalers)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is no checkpoint
        raise NotAModel(f"cannot be read as a saved model ({type(e).__name__})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise NotAModel(f"is not a vaebench {MODEL_FILE} of format {FORMAT}")
    try:  # a model.pt of another version: other config keys, layers or shapes than this version builds
        config = MODEL_CONFIGS[saved["model"]](**saved["model_config"])
        model = build_model(config, saved["n_genes"], saved["latent_dim"])
        model.load_state_dict(saved["state_dict"])
        how = saved["preparation"]
        if how["scaler"] is not None:
            how["scaler"] = {k: v.numpy() for k, v in how["scaler"].items()}
    except Exception as e:  # noqa: BLE001 - KeyError, TypeError, RuntimeError (state dict), UserError (ranges)
        detail = " ".join(str(e).split())[:160]
        raise NotAModel(f"cannot be read as a saved model of this vaebench version {__version__} (written by "
                        f"{saved.get('vaebench', 'an unknown version')}: {type(e).__name__}: {detail})") from None
    model.eval()
    return model, saved


def latent_frame(sample_ids: list[str], mu: np.ndarray, log_var: np.ndarray, split: Optional[np.ndarray] = None,
                 labels: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per sample: sample_id, split and label (when known), mu_1 ... mu_k, log_var_1 ... log_var_k."""
    k = mu.shape[1]
    columns: dict[str, Any] = {"sample_id": sample_ids}
    if split is not None:
        columns["split"] = split
    if labels is not None:
        columns["label"] = labels
    columns.update({f"mu_{d + 1}": mu[:, d] for d in range(k)})
    columns.update({f"log_var_{d + 1}": log_var[:, d] for d in range(k)})
    return pd.DataFrame(columns)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.9g")


def write_h5ad(frame: pd.DataFrame, mu: np.ndarray, log_var: np.ndarray, path: Path) -> None:
    """An AnnData with the samples as obs (split, label) and the posterior in obsm, no X: join it to the input
    with adata.obsm[...] = latent[adata.obs_names].obsm[...] (docs/artifacts.md)."""
    import anndata

    obs = frame[[c for c in ("split", "label") if c in frame]].astype(str)
    obs.index = pd.Index(frame["sample_id"].astype(str), name=None)
    adata = anndata.AnnData(obs=obs, obsm={MEAN_KEY: mu.astype(np.float32), LOG_VAR_KEY: log_var.astype(np.float32)})
    adata.write_h5ad(path)
