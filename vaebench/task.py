"""One job end to end: check the config, skip if already finished, load data, train, and turn every
failure into a result. Only user errors (bad config, bad data) escape, as UserError."""

from __future__ import annotations

import gc
import logging
import os
import platform
import socket
import time
import traceback
from importlib import metadata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vaebench import __version__
from vaebench.config import Config, schema_defaults, validate
from vaebench.data import Dataset, load_dataset
from vaebench.errors import UserError
from vaebench.baselines import assess, held_out_scores
from vaebench import artifacts
from vaebench.results import DIVERGED, METRICS_FILE, F, Result, config_hash, describe, finished_result, write_result
from vaebench.data.split import run_split, split_seed
from vaebench.device import is_out_of_memory, peak_memory_mb, pick_device, release_memory, reset_peak_memory
from vaebench.precheck import require_split, require_training_batch
from vaebench.progress import MetricsWriter, ProgressBar
from vaebench import tracking
from vaebench.train import NonFiniteError, fit

log = logging.getLogger(__name__)

# Several jobs share one worker process under joblib: the matrix is loaded and moved to the device once.
_resident: dict[str, Any] = {"key": None, "data": None, "tensor": None}


def resident_data(cfg: Config, device: torch.device) -> tuple[Dataset, torch.Tensor]:
    data = load_dataset(cfg.data, cfg.trainer.val_fraction, split_seed(cfg))  # the split, for data.scaler_fit=train
    key = f"{data.fingerprint}@{device}"
    if _resident["key"] != key:
        _resident.update(key=None, data=None, tensor=None)
        gc.collect()
        _resident.update(key=key, data=data, tensor=torch.tensor(np.asarray(data.x), device=device))
    return _resident["data"], _resident["tensor"]


def versions() -> dict[str, str]:
    import hydra

    return {"vaebench": __version__, "torch": torch.__version__, "hydra": hydra.__version__,
            "numpy": np.__version__, "pandas": metadata.version("pandas"),  # metadata: no 0.4 s pandas import
            "python": platform.python_version()}


def run(cfg: DictConfig, out_dir: Path, threads: Optional[int] = None, progress_bar: bool = False,
        job_num: int = 0, multirun: bool = False) -> dict[str, Any]:
    """Run the job `cfg` into out_dir and return its result (also written as out_dir/result.json), with the
    artifacts that vaebench.artifacts.wanted asks for (multirun: part of a sweep)."""
    checked = time.perf_counter()
    typed = validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg_hash = config_hash(resolved, schema_defaults(typed))
    out_dir.mkdir(parents=True, exist_ok=True)
    wants = artifacts.wanted(typed.trainer, multirun)
    if typed.resume:
        done = finished_result(out_dir, cfg_hash)
        kept = done is not None and (done[F.status] != "ok"  # a failed run saves nothing
                                     or artifacts.present(out_dir, wants, artifacts.anndata_input(typed.data)))
        if kept:
            log.info("skipped: %s already holds a finished result (status %s)", out_dir, done["status"])
            return {**done, "skipped": True, "wall_time_s": time.perf_counter() - checked}

    # A SLURM job gets the CPUs it asked for (cpus_per_task), not the whole node's cores.
    torch.set_num_threads(typed.trainer.threads or threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
                          or os.cpu_count() or 1)
    device = pick_device(typed.device, job_num)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"config key 'device': {typed.device} asked for, but CUDA is not available; use device=auto")
    data, x = resident_data(typed, device)  # UserError on bad data: not a result, the user must fix it
    split = run_split(typed, len(data.x), data.labels)
    train_idx, val_idx = split.train, split.val  # split.test: held out from training and stopping, scored after
    require_split(len(data.x), len(train_idx), len(val_idx), len(split.test))
    require_training_batch(len(train_idx), typed.trainer)

    result = Result(
        model=typed.model.name, optimizer=typed.optimizer.name, lr=typed.lr, latent_dim=typed.latent_dim,
        seed=typed.seed, loss_mode=typed.model.loss_mode.value, device=str(device), n_train=len(train_idx),
        n_val=len(val_idx), n_features=data.x.shape[1], config_hash=cfg_hash, data_fingerprint=data.fingerprint,
        n_test=len(split.test),
        data=data.preprocessing, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(), versions=versions(), config=resolved)
    tracker = tracking.start(typed.logger, resolved, result, out_dir)  # a no-op unless logger=mlflow
    metrics = MetricsWriter(out_dir / METRICS_FILE)
    bar = ProgressBar(typed.trainer.max_epochs) if progress_bar else None

    def on_epoch(row: dict[str, float]) -> None:
        metrics(row)
        tracker.epoch(row)
        if bar:
            bar(row)

    reset_peak_memory(device)
    started = time.perf_counter()
    try:
        outcome = fit(typed, x, train_idx, val_idx, on_epoch=on_epoch)
        final = outcome.final
        result.update(status="ok", epochs_run=outcome.epochs_run, converged=outcome.converged,
                      stop_reason=outcome.stop_reason, best_epoch=outcome.best_epoch,
                      still_improving=outcome.still_improving, best_val_recon_mse=outcome.best_val_recon_mse,
                      val_recon_mse=final["val_recon_mse"], val_recon=final["val_recon"],
                      val_loss=final["val_loss"], train_loss=final["train_loss"])
        try:  # scoring after training: a failure here never discards the trained result
            result.update(**assess(outcome.model, typed.model, x, data.labels, data.fingerprint, train_idx,
                                   val_idx, result.val_recon_mse, typed.trainer.batch_size, typed.seed,
                                   latent_scores=typed.trainer.latent_metrics))
            if len(split.test):
                kld_val = typed.model.kld_weights(typed.trainer.batch_size, len(train_idx), len(val_idx))[1]
                result.update(**held_out_scores(outcome.model, x, train_idx, split.test, typed.trainer.batch_size,
                                                kld_val, typed.trainer.amp))
        except Exception as e:  # noqa: BLE001
            result.scoring_error = f"{type(e).__name__}: {e}"
            log.error("scoring after training failed; the trained result is kept:\n%s", traceback.format_exc())
        if result.collapsed:
            log.warning("the model did not learn: %s", result.collapse_reason)
    except NonFiniteError as e:
        result.update(status=DIVERGED, error=str(e))
    except Exception as e:  # noqa: BLE001 - a failing configuration is a result, never the end of a sweep
        result.update(status="oom" if is_out_of_memory(e) else "error", error=f"{type(e).__name__}: {e}")
        log.error("run failed (%s):\n%s", result.status, traceback.format_exc())
    finally:
        metrics.close()
        if bar:
            bar.close()
    if result.status != "ok":  # the epochs that completed before the failure, and where it struck
        done = metrics.rows
        result.update(stop_reason=result.status, epochs_run=len(done), failed_epoch=len(done) + 1,
                      best_val_recon_mse=min((r["val_recon_mse"] for r in done), default=None))
    result.wall_time_s = round(time.perf_counter() - started, 3)
    result.peak_memory_mb, result.peak_memory_kind = peak_memory_mb(device)
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if result.status == "ok":  # before result.json: a run killed in between trains again on resume
        artifacts.save(out_dir, wants, outcome.model, typed, resolved, data, x, split)
    write_result(out_dir, result)
    tracker.finish(result, out_dir)  # after result.json: a tracking failure can no longer cost the result
    release_memory(device)
    log.info("%s", describe(result.to_dict()))
    return result.to_dict()
