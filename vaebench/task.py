"""One job end to end: check the config, skip if already finished, load data, train, and turn every
failure into a result. Only user errors (bad config, bad data) escape, as UserError; and DeviceFailed for a job
handed to a worker whose device an earlier job broke."""

from __future__ import annotations

import time

_import_started = time.perf_counter()  # what importing this module (torch, the loop, scoring) costs a process

import functools
import gc
import json
import logging
import platform
import socket
import traceback
from importlib import metadata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch._dynamo  # noqa: F401 - a process's first torch.optim optimizer imports it (torch's _disable_dynamo
# around Optimizer methods): ~0.9 s every job that trains pays once per process, counted here among the imports
from omegaconf import DictConfig

from vaebench import __version__
from vaebench.config import validate
from vaebench.data import Dataset
from vaebench.baselines import assess, cached, held_out_scores, split_key
from vaebench import artifact_files, claim  # vaebench.artifacts (pandas) only when a run saves a file
from vaebench.results import DIVERGED, METRICS_FILE, F, Result, describe, write_result
from vaebench.device import (DeviceFailed, broken, deterministic_cuda, device_name, device_type, is_fatal,
                             is_out_of_memory, mark_broken, peak_memory_mb, pick_device, release_memory,
                             reset_peak_memory)
from vaebench.machine import available_cpus
from vaebench.precheck import checked_data
from vaebench.resume import job_hash, kept_result
from vaebench.progress import MetricsWriter, ProgressBar, Stopwatch
from vaebench import tracking
from vaebench.models.base import row_variance
from vaebench.train import NonFiniteError, fit

log = logging.getLogger(__name__)
_unpaid_imports = time.perf_counter() - _import_started  # reported by the process's first job, 0 after it


# Several jobs share one worker process under joblib: the matrix is loaded and moved to the device once.
_resident: dict[str, Any] = {"key": None, "tensor": None}


def resident_tensor(data: Dataset, device: torch.device) -> torch.Tensor:
    """The matrix on the device, uploaded once per worker (an out-of-memory here is the run's failure)."""
    key = f"{data.fingerprint}@{device}"
    if _resident["key"] != key:
        _resident.update(key=None, tensor=None)
        gc.collect()
        _resident.update(key=key, tensor=torch.tensor(np.asarray(data.x), device=device))
    return _resident["tensor"]


@functools.cache  # once per process: a sweep worker's jobs all run the same packages
def versions() -> dict[str, str]:
    import hydra

    return {"vaebench": __version__, "torch": torch.__version__, "hydra": hydra.__version__,
            "numpy": np.__version__, "pandas": metadata.version("pandas"),  # metadata: no 0.4 s pandas import
            "python": platform.python_version()}


@functools.cache  # once per process
def freeze_long_lived() -> None:
    """Once per process, before its first job: move every object alive now (the modules of torch, Hydra, vaebench
    and their classes and functions, about 300,000 of them) out of the garbage collector's reach (gc.freeze). The
    full collection each job ends with (vaebench.device.release_memory) then walks only what came since, instead
    of paying ~0.3 s a job, ~1 s on a busy machine, to find nothing. Frozen objects are still freed when their
    last reference goes; only a cycle among them would stay, and the live objects here are modules and the
    first job's config."""
    gc.freeze()


def device_broke(result: Result, device: torch.device, error: str) -> None:
    """A fatal device error: this process's CUDA context is unusable, so it runs no further job (cli, sweep:
    the command exits 1 naming the device)."""
    result.device_failed = True
    log.error("the device is broken for this process: %s", mark_broken(device, result.device_name, error))


def run(cfg: DictConfig, out_dir: Path, threads: Optional[int] = None, progress_bar: bool = False,
        slot_dir: Optional[Path] = None, multirun: bool = False) -> dict[str, Any]:
    """Run the job `cfg` into out_dir and return its result (also written as out_dir/result.json), with the
    artifacts that vaebench.artifact_files.wanted asks for (multirun: part of a sweep).

    slot_dir: in a sweep, the directory of the GPU slot files (vaebench.claim.gpu_slot): a worker keeps one GPU.
    Raises DeviceFailed, writing nothing, when an earlier job of this process broke its device."""
    checked = time.perf_counter()
    global _unpaid_imports
    watch = Stopwatch(imports=_unpaid_imports)  # laps from here; the import only in the process's first job
    _unpaid_imports = 0.0
    typed = validate(cfg)
    kind = device_type(typed.device)
    resolved, cfg_hash = job_hash(cfg, typed, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    wants = artifact_files.wanted(typed.trainer, multirun)
    done = kept_result(typed, cfg_hash, out_dir, multirun)
    if done is not None:
        log.info("skipped: %s already holds a finished result (status %s)", out_dir, done[F.status])
        return {**done, "skipped": True, F.wall_time_s: time.perf_counter() - checked}
    if broken():
        raise DeviceFailed(broken())
    freeze_long_lived()

    torch.set_num_threads(typed.trainer.threads or threads or available_cpus())
    if kind == "cuda":
        deterministic_cuda()  # before the job's first CUDA work
    device = pick_device(typed.device, slot_dir, typed.jobs_per_gpu)
    watch.lap("setup")
    data, split = checked_data(typed)
    watch.lap("data")
    train_idx, val_idx = split.train, split.val  # split.test: held out from training and stopping, scored after
    batch_size = typed.trainer.batch_for(len(train_idx))  # auto: resolved for this split (fit does the same)

    result = Result(
        model=typed.model.name, optimizer=typed.optimizer.name, lr=typed.lr, latent_dim=typed.latent_dim,
        seed=typed.seed, loss_mode=typed.model.loss_mode.value, device=str(device), n_train=len(train_idx),
        n_val=len(val_idx), n_features=data.x.shape[1], config_hash=cfg_hash, data_fingerprint=data.fingerprint,
        n_test=len(split.test), batch_size=batch_size,
        data=data.preprocessing, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(), versions=versions(), config=resolved, device_name=device_name(device))
    if device.type == "cuda":
        result.update(cuda_version=torch.version.cuda, cudnn_version=torch.backends.cudnn.version(),
                      gpu_shared=claim.gpu_slot_shared())
    tracker = tracking.start(typed.logger, resolved, result, out_dir, multirun)  # a no-op unless logger=mlflow
    metrics = MetricsWriter(out_dir / METRICS_FILE)
    bar = ProgressBar(typed.trainer.max_epochs) if progress_bar else None

    def on_epoch(row: dict[str, float]) -> None:
        metrics(row)
        tracker.epoch(row)
        if bar:
            bar(row)

    watch.lap("setup")
    started = time.perf_counter()
    try:  # from the upload on, every failure is the run's result
        reset_peak_memory(device)
        x = resident_tensor(data, device)
        watch.lap("upload")
        split_id = split_key(data.fingerprint, train_idx, val_idx)  # what the baselines are kept by, per process
        variance = cached(("gene_variance", split_id, str(device)), lambda: row_variance(
            x, torch.as_tensor(train_idx, device=device))) if typed.model.learned_variance else None
        outcome = fit(typed, x, train_idx, val_idx, on_epoch=on_epoch, gene_variance=variance)
        # training_other: the model and optimizer, the variance's start, metrics.csv rows, the best weights' copies
        watch.lap("training_other", epochs=sum(row["seconds"] for row in outcome.history))
        final = outcome.final
        result.update(status="ok", epochs_run=outcome.epochs_run, converged=outcome.converged,
                      stop_reason=outcome.stop_reason, best_epoch=outcome.best_epoch,
                      still_improving=outcome.still_improving, best_val_recon_mse=outcome.best_val_recon_mse,
                      val_recon_mse=final["val_recon_mse"], val_recon=final["val_recon"],
                      val_loss=final["val_loss"], train_loss=final["train_loss"])

        def scored(compute: Callable[[], dict[str, Any]]) -> None:  # a failure never discards the trained result
            try:
                result.update(**compute())
            except Exception as e:  # noqa: BLE001
                result.scoring_error = f"{type(e).__name__}: {e}"
                log.error("scoring after training failed; the trained result is kept:\n%s", traceback.format_exc())
                if is_fatal(e, device):
                    device_broke(result, device, result.scoring_error)

        scored(lambda: assess(outcome.model, typed.model, x, data.labels, split_id, train_idx, val_idx,
                              result.val_recon_mse, batch_size, typed.seed,
                              latent_scores=typed.trainer.latent_metrics, nll_samples=typed.trainer.nll_samples))
        watch.lap("scoring_other", baselines=result.baseline_seconds or 0.0, nll=result.nll_seconds or 0.0,
                  latent=result.latent_seconds or 0.0)
        if len(split.test) and not result.device_failed:
            kld_val = typed.model.kld_weights(batch_size, len(train_idx), len(val_idx))[1]
            scored(lambda: held_out_scores(outcome.model, x, split_id, train_idx, split.test, batch_size, kld_val,
                                           typed.trainer.amp, typed.trainer.nll_samples, typed.seed))
            watch.lap("test")
        if result.collapsed:
            log.warning("the model did not learn: %s", result.collapse_reason)
    except NonFiniteError as e:
        result.update(status=DIVERGED, error=str(e))
    except Exception as e:  # noqa: BLE001 - a failing configuration is a result, never the end of a sweep
        fatal = is_fatal(e, device)
        result.update(status="oom" if is_out_of_memory(e) and not fatal else "error", error=f"{type(e).__name__}: {e}")
        log.error("run failed (%s):\n%s", result.status, traceback.format_exc())
        if fatal:
            device_broke(result, device, result.error)
    finally:
        metrics.close()
        if bar:
            bar.close()
    if result.status != "ok":  # the epochs that completed before the failure, and where it struck
        done = metrics.rows
        result.update(stop_reason=result.status, epochs_run=len(done), failed_epoch=len(done) + 1,
                      best_val_recon_mse=min((r["val_recon_mse"] for r in done), default=None))
    if device.type == "cuda" and not result.gpu_shared:
        result.gpu_shared = claim.gpu_slot_shared()  # a neighbour that came during the run counts too
    result.wall_time_s = round(time.perf_counter() - started, 3)
    result.peak_memory_mb, result.peak_memory_kind = peak_memory_mb(device)
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    watch.lap("other")  # a failed run's partial training included
    unwritable = metrics.failed  # a full disk or a read-only directory: the command says so in one line, exit 2
    if result.status == "ok" and not result.device_failed:  # before result.json: a run killed in between
        try:                                                     # trains again on resume
            if wants.model or wants.latent:
                from vaebench import artifacts

                artifacts.save(out_dir, wants, outcome.model, typed, resolved, data, x, split)
        except Exception as e:  # noqa: BLE001 - the trained result is kept; a resume trains again for the files
            result.artifact_error = f"{type(e).__name__}: {e}"
            if isinstance(e, OSError):  # a full disk, a read-only directory: no bug to trace
                log.error("saving the artifacts failed (%s); the result is kept", result.artifact_error)
                unwritable = unwritable or e
            else:
                log.error("saving the artifacts failed; the result is kept:\n%s", traceback.format_exc())
    watch.lap("artifacts")
    result.timing = dict(watch.seconds)
    write_result(out_dir, result)
    tracker.finish(result, out_dir)  # after result.json: a tracking failure can no longer cost the result
    release_memory(device)
    log.info("%s", describe(result.to_dict()))
    watch.lap("result")
    log.info("timing %s", json.dumps(watch.seconds))  # every part in seconds, the result's write included
    if unwritable is not None:  # the result is written; the files it lacks are the user's to make room for
        raise unwritable
    return result.to_dict()
