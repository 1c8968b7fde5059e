"""`vaebench`: compose the config with Hydra and run one job (or, with -m, a sweep of them).

Exit status: 0 when every job ran, whatever each job's status (ok, diverged, oom, error: see result.json);
1 when a device failed for good (a fatal CUDA error: its worker ran no further job), with one line naming it;
2 for a mistake the user can fix (unknown key or option, bad value, bad data file, an output directory
that cannot be written), with one line; 130 / 143 when Ctrl-C (SIGINT) / SIGTERM stopped it, with one line.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vaebench.claim import CLAIM_FILE, SLOTS_DIR, claimed
from vaebench import cluster, sweep
from vaebench.config import register_configs
from vaebench.errors import UserError
from vaebench.results import F, METRICS_FILE, RESULT_FILE
from vaebench.search import FailedRun, objective_value
from vaebench.sweep import job_dirname, report_job, report_not_run

log = logging.getLogger("vaebench")
device_failed = False  # a single run's device failed for good: main exits 1 (a sweep's: sweep.failed_devices)


def conf_dir() -> str:
    """conf/ ships inside the wheel as vaebench/conf; in a source checkout it is the repository's conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("vaebench: cannot find its conf/ directory (config.yaml); reinstall the package")


def config_groups() -> str:
    """The groups a user chooses from (conf/<group>/<option>.yaml), one line each, for `vaebench --help`.
    Hydra's own listing would add the internal schema/* groups (config.py) beside them."""
    lines = []
    for group in sorted(Path(conf_dir()).iterdir()):
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if group.is_dir() and group.name != "hydra" and options:
            lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines)


def key_meanings() -> str:
    """Every key of the default configuration with the comment its YAML file gives it, for `vaebench --help`:
    `--cfg job` prints keys and values only (data.rank, data.noise) and Hydra's help no meanings at all."""
    import re

    conf = Path(conf_dir())
    top = (conf / "config.yaml").read_text()
    chosen = re.findall(r"^\s+-\s+(\w+):\s*(\w+)", top.split("\nhydra:")[0], re.M)  # the defaults list: group: option
    files = [("", top.split("\nhydra:")[0])] + [
        (f"{group}.", (conf / group / f"{option}.yaml").read_text()) for group, option in chosen
        if (conf / group / f"{option}.yaml").is_file()]
    lines = []
    for prefix, text in files:
        for key, value, meaning in re.findall(r"^(\w+):[ \t]*([^#\n]*?)[ \t]*(?:#[ \t]*(.*))?$", text, re.M):
            if key in ("defaults", "name", "hydra") or (prefix == "" and not value):
                continue
            lines.append(f"{prefix}{key}={value}" + (f"  # {meaning}" if meaning else ""))
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the help template with string.Template


def parallel_jobs(device: str = "auto", per_gpu: Optional[int] = None) -> int:
    """Default number of parallel jobs (conf/hydra/launcher/parallel.yaml): on CUDA jobs_per_gpu per GPU (one
    GPU for device=cuda:N), else one per core this process may use."""
    from vaebench.machine import available_cpus, device_type_without_torch

    if device_type_without_torch(device) == "cpu":  # torch's import is for the workers: the main process skips it
        return available_cpus()
    import torch

    from vaebench.device import device_type, jobs_per_gpu

    if device_type(device) == "cpu" or not torch.cuda.is_available():
        return available_cpus()
    return jobs_per_gpu(per_gpu) * (1 if ":" in device else torch.cuda.device_count())


def gpus() -> int:
    """The GPUs this machine has (conf/hydra/launcher/local.yaml passes them to Submitit's local jobs)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def is_multirun() -> bool:
    """Whether this job is one of a sweep (-m): the one place that asks Hydra (threads, artifacts, console)."""
    return HydraConfig.get().mode == RunMode.MULTIRUN


def threads_per_job() -> int:
    """Torch threads for this job, from the CPUs this process may use (its affinity: under SLURM the job's
    CPUs, not the node's), so that parallel jobs x threads never exceed them; a launcher's cpus_per_task
    (Submitit) caps it."""
    from vaebench.machine import available_cpus

    cores = available_cpus()
    hc = HydraConfig.get()
    if not is_multirun():
        return cores
    if hc.launcher.get("cpus_per_task"):
        return max(1, min(cores, hc.launcher.cpus_per_task))
    n_jobs = hc.launcher.get("n_jobs") or 1
    workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores
    return max(1, cores // workers)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def _task(cfg: DictConfig) -> Optional[float]:
    from vaebench.artifact_files import where
    from vaebench.resume import already_finished

    global device_failed

    hc = HydraConfig.get()
    multirun = is_multirun()
    interactive = not multirun and sys.stdout.isatty()
    if multirun:  # parallel jobs: the console gets one progress line per job, run.log keeps the rest
        quiet_console(lambda r: r.name.startswith("vaebench.") and r.name != "vaebench.sweep")
    elif interactive:  # the progress bar replaces the epoch lines
        quiet_console(lambda r: r.name == "vaebench.epochs")
    out_dir = Path(hc.runtime.output_dir)
    try:  # a bad value, or a resumed job already finished: without torch, data or the training loop
        skipped = already_finished(cfg, out_dir, multirun)
    except UserError as e:
        refuse(e, out_dir, multirun)
    if skipped is not None:
        logging.getLogger("vaebench.resume").info("skipped: %s already holds a finished result (status %s)", out_dir,
                                                  skipped[F.status])  # run.log's line, as the task's
        print(report_job(Path(hc.sweep.dir), skipped) if multirun else where(out_dir), flush=True)
        return objective_value(skipped)

    from vaebench.task import run  # the loop, data and scoring (torch): only when a job runs; first, so that the
    from vaebench.device import DeviceFailed, broken  # job's timing counts torch's import among its own (imports)

    slot_dir = Path(hc.sweep.dir) / SLOTS_DIR if multirun else None  # each worker keeps one GPU slot
    try:
        with claimed(out_dir):  # a second sweep into the same directory waits here, then skips the finished job
            result = run(cfg, out_dir, threads=threads_per_job(), progress_bar=interactive, slot_dir=slot_dir,
                         multirun=multirun)
    except DeviceFailed as e:  # an earlier job broke this worker's device: this one wrote nothing, a rerun runs it
        print(report_not_run(Path(hc.sweep.dir), " ".join(hc.overrides.task), str(e)), flush=True)
        return FailedRun(f"not run: {e}")
    except UserError as e:
        refuse(e, out_dir, multirun)
    except OSError as e:  # result.json, metrics.csv, model.pt, latent.csv: a read-only directory or a full disk
        if not multirun:
            where = f": {e.filename}" if e.filename else ""
            print(f"vaebench: error: cannot write the run's output in {out_dir} ({e.strerror or e}{where}); "
                  f"make room or fix it, or choose another hydra.run.dir, and rerun", file=sys.stderr)
            sys.exit(2)
        from vaebench.launcher import NOT_WRITTEN, cannot_write

        print(cannot_write(" ".join(hc.overrides.task), e), file=sys.stderr, flush=True)
        return NOT_WRITTEN
    failure = broken() if result.get(F.device_failed) else None
    if multirun:
        print(report_job(Path(hc.sweep.dir), result, failure), flush=True)
    else:
        if failure:
            print(f"vaebench: error: {failure}: rerun the command to retry the run", file=sys.stderr, flush=True)
            device_failed = True
        print(where(out_dir), flush=True)  # the last line: where the result and the artifacts are
    return objective_value(result)  # what a Hydra optimizing sweeper minimises; a failed run is a failed trial


def refuse(e: UserError, out_dir: Path, multirun: bool) -> None:
    """A user's mistake: one line, exit status 2, and no folder left by a single run."""
    print(f"vaebench: error: {e}", file=sys.stderr)
    quiet_console(lambda r: True)  # the line above is the terminal's copy; run.log gets the record
    log.error("%s", e)
    if not multirun:
        remove_refused_run(out_dir)
    sys.exit(2)


def remove_refused_run(out_dir: Path) -> None:
    """A single run refused before training (bad value, bad data) leaves no folder behind: an empty
    time-stamped folder would be listed by vaebench-aggregate as a run with no result yet. Only the files
    Hydra and vaebench wrote for this attempt go, and the folder only when nothing else is in it."""
    if (out_dir / RESULT_FILE).exists():  # hydra.run.dir pointed at a finished run: keep all of it
        return
    shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
    for name in ("run.log", METRICS_FILE, CLAIM_FILE):
        (out_dir / name).unlink(missing_ok=True)
    try:
        out_dir.rmdir()
    except OSError:  # something else lives there
        pass


def quiet_console(drop: Callable[[logging.LogRecord], bool]) -> None:
    """Keep the records `drop` selects off the terminal; the job's run.log still gets them."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(lambda record: not drop(record))


# At import: parallel workers and cluster jobs import this module to unpickle the task, and resolve
# their own directory name (hydra.sweep.subdir) there.
OmegaConf.register_new_resolver("vaebench.parallel_jobs", parallel_jobs, replace=True)
OmegaConf.register_new_resolver("vaebench.config_groups", config_groups, replace=True)
OmegaConf.register_new_resolver("vaebench.key_meanings", key_meanings, replace=True)
OmegaConf.register_new_resolver("vaebench.gpus", gpus, replace=True)
OmegaConf.register_new_resolver("vaebench.job_dirname", job_dirname, replace=True)


def descendants(pid: int) -> list[int]:
    """Every process below pid (the sweep's workers, their helpers), children first; [] when they cannot be
    listed. psutil lists them on Linux, macOS and Windows alike (reading /proc, as this did, is Linux only)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM stop the whole command, parallel workers too, with one line and no traceback.

    Without this, SIGTERM killed only the main process while joblib's workers trained on and wrote results,
    and Ctrl-C printed a traceback from every process. Finished results are whole files (written by rename),
    so stopping at any moment loses only the runs in flight; the job claims are flocks the kernel releases.
    """
    import psutil  # noqa: F401 - imported here, once, rather than inside the handler (descendants)
    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            workers = descendants(os.getpid())
        except Exception:  # noqa: BLE001 - never raise inside the handler: the command must still stop
            workers = []
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)  # a worker mid-epoch has nothing to save: its run restarts on resume
            except OSError:
                pass
        if sweep.current_dir is not None:
            what = (f"stopped the sweep into {sweep.current_dir} and its {len(workers)} worker processes; finished "
                    f"runs are kept, runs in flight left no result: rerun the same command to resume")
        else:
            try:
                what = (f"the run into {HydraConfig.get().runtime.output_dir} stopped before it finished and left "
                        f"no result.json: rerun the command to run it")
            except (ValueError, AttributeError):  # before Hydra had composed the config, or before a sweep began
                what = "stopped before any run started; nothing was written"
        try:
            print(f"vaebench: interrupted by {signal.Signals(signum).name}: {what}", file=sys.stderr, flush=True)
            sys.stdout.flush()
        finally:  # even when the terminal or pipe is gone (print raises): exit, never train on
            os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def help_without_hydras_group_lists() -> None:
    """`vaebench --help` in a fraction of a second. Hydra fills its help template's $APP_CONFIG_GROUPS and
    $HYDRA_CONFIG_GROUPS on every --help, whether the template uses them or not, by copying the whole config
    repository once per group (122 copies: 2-3 s of CPU, nine tenths of --help). vaebench's template uses
    neither (config_groups lists the user's groups), so both are left empty; --hydra-help alone still lists them."""
    from hydra._internal.hydra import Hydra

    if hasattr(Hydra, "format_config_groups"):  # a private method: a Hydra without it just stays slow
        Hydra.format_config_groups = lambda self, predicate, compact=True: ""


def main() -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()  # the launcher's guard (vaebench.launcher, which imports joblib) is installed by the
    # sweep's callback, when a sweep starts: --help, --cfg and a typo import neither joblib nor torch
    stop_on_signals()
    if {"--help", "-h"} & set(sys.argv[1:]) and "--hydra-help" not in sys.argv:
        help_without_hydras_group_lists()
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises a bad override instead of printing it over several lines
    try:
        _task()
    except (HydraException, OmegaConfBaseException) as e:  # unknown key, wrong type, missing option
        if wants_traceback:
            raise
        from vaebench.hints import with_fix

        print(f"vaebench: error: {with_fix(sweep.one_line(e))}", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:  # Hydra's command-line flags that exclude each other (-m with --cfg)
        if not str(e).startswith("Only one of"):
            raise
        print(f"vaebench: error: {e} (to see a sweep job's config: --cfg job with one value per key, no -m)",
              file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # Hydra's own writes: the run directory (hydra.run.dir an existing file), multirun.yaml
        where = f" {e.filename}" if e.filename else " the output"
        print(f"vaebench: error: cannot write{where} ({e.strerror or e}); choose another hydra.run.dir or "
              f"hydra.sweep.dir, or make it writable (or make room) and rerun", file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:
        # Hydra exits 1 on a user's mistake it reports itself; every job failure is already a result.
        if e.code == 1:
            sys.exit(2)
        raise
    launcher = sys.modules.get("vaebench.launcher")  # imported only by a sweep
    dead_jobs = launcher.dead_jobs if launcher is not None else []
    for line in dead_jobs:  # a worker process died under the job (kill -9, the out-of-memory killer)
        print(line, file=sys.stderr, flush=True)
    if (launcher is not None and launcher.unwritable_jobs) or cluster.unfinished_jobs:  # each said why in its own line; so does the exit status
        sys.exit(2)
    if device_failed or sweep.failed_devices or dead_jobs:  # said in one line per device, per dead job
        sys.exit(1)


if __name__ == "__main__":
    main()
