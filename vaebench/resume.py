"""A resumed job that has nothing to do, decided without torch: a sweep rerun after it finished skips each job
in the time it takes to read its result.json (vaebench.task repeats the same check, with the device it
picks, for every job that gets past this one).

The device enters a run's identity (results.device_identity: `cuda` on a GPU, the value as written on CPU).
Without torch it is known for device=cpu, and for device=auto on a machine with no GPU driver's device node
(vaebench.machine.GPU_NODES); anywhere else this check steps aside and the task decides with torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from vaebench import artifact_files
from vaebench.config import Config, schema_defaults, validate
from vaebench.machine import device_type_without_torch
from vaebench.results import F, config_hash, device_identity, finished_result


def already_finished(cfg: DictConfig, out_dir: Path, multirun: bool) -> Optional[dict[str, Any]]:
    """The finished result a resumed job keeps (marked "skipped"), or None: the job runs (or the task decides)."""
    typed = validate(cfg)
    kind = device_type_without_torch(typed.device)
    if kind is None:
        return None
    done = kept_result(typed, job_hash(cfg, typed, kind)[1], out_dir, multirun)
    return None if done is None else {**done, "skipped": True, F.wall_time_s: 0.0}


def job_hash(cfg: DictConfig, typed: Config, kind: str) -> tuple[dict[str, Any], str]:
    """The job's resolved values and its config_hash (what a resume compares) when it trains on `kind` (cpu or
    cuda): the one formula for the cli's check, the task, a cluster resume and a dead worker's job."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return resolved, config_hash(device_identity(resolved, kind), schema_defaults(typed))


def identity(cfg: DictConfig, kind: Optional[str] = None) -> tuple[Config, dict[str, Any], str]:
    """The job's checked config, its resolved values and its config_hash. kind: where it trains, when not this
    machine's (a SLURM node); this machine's is asked of torch only where that is not certain without it."""
    typed = validate(cfg)
    kind = kind or device_type_without_torch(typed.device)
    if kind is None:
        from vaebench.device import device_type  # torch

        kind = device_type(typed.device)
    return (typed, *job_hash(cfg, typed, kind))


def kept_result(typed: Config, cfg_hash: str, out_dir: Path, multirun: bool) -> Optional[dict[str, Any]]:
    """The finished result out_dir holds for this job's config_hash, which a resume keeps; None when the job must
    run: resume=false, no result for this hash, or an ok one lacking an artifact the job asks for (a failed run
    saves nothing). The rule for this check, the task's (vaebench.task.run) and a cluster resume's."""
    if not typed.resume:
        return None
    done = finished_result(out_dir, cfg_hash)
    if done is None:
        return None
    wants = artifact_files.wanted(typed.trainer, multirun)
    if done[F.status] == "ok" and not artifact_files.present(out_dir, wants, artifact_files.anndata_input(typed.data)):
        return None
    return done
