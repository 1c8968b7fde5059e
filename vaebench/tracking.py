"""Experiment tracking (logger=mlflow): each job is one MLflow run, a sweep is one experiment.

The run records the grid's values and the flattened resolved config as params, every epoch's numbers as they
come, the result's numbers as metrics at the last step (so MLflow's table shows the result), its words
(status, stop reason, ...) as tags, and result.json and metrics.csv as artifacts.

Tracking never decides a run's fate: the first call that fails (server down, mid-sweep or from the start)
prints one warning and switches tracking off for that job; training and result.json go on as always.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from vaebench.errors import UserError
from vaebench.results import FIELDS, IDENTITY, METRICS_FILE, RESULT_FILE, F, Result

log = logging.getLogger(__name__)

DEFAULT_DB = Path("outputs") / "mlflow.db"  # under the directory vaebench runs in, like outputs/runs
PARAM_LIMIT = 6000  # MLflow's longest param value
BATCH = 100  # MLflow's most params (or tags) per log_batch call


class NoTracker:
    def epoch(self, row: dict[str, float]) -> None:
        pass

    def finish(self, result: Result, out_dir: Path) -> None:
        pass


def start(logger_cfg: Any, resolved: dict[str, Any], result: Result, out_dir: Path, multirun: bool = False) -> Any:
    """The tracker for one job (multirun: part of a sweep): a no-op unless logger=mlflow; MLflow imported only then."""
    if logger_cfg is None or logger_cfg.name != "mlflow":
        return NoTracker()
    if importlib.util.find_spec("mlflow") is None:
        raise UserError('logger=mlflow needs MLflow: pip install -e ".[mlflow]" in the vaebench clone (make install includes it), '
                        'or drop logger=mlflow')
    return MlflowTracker(logger_cfg, resolved, result, out_dir, multirun)


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """model.hidden_dims=[256]-style params: one per leaf, lists as JSON, cut to MLflow's limit."""
    if isinstance(config, dict):
        out: dict[str, str] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(config) if isinstance(config, (list, tuple)) else str(config)
    return {prefix[:-1]: text[:PARAM_LIMIT]}


def tracking_uri(configured: Optional[str]) -> str:
    return configured or f"sqlite:///{DEFAULT_DB.resolve()}"


def sweep_context(multirun: bool) -> tuple[Optional[str], list[str]]:
    """The sweep's name (its directory's) and this job's overrides, when Hydra launched the job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under Hydra (a test calling task.run directly)
        return None, []
    return (Path(hc.sweep.dir).name if multirun else None), list(hc.overrides.task)


@contextmanager
def _sqlite_lock(uri: str):
    """Parallel jobs that meet a new SQLite store would each create its tables: one at a time."""
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MlflowTracker:
    def __init__(self, logger_cfg: Any, resolved: dict[str, Any], result: Result, out_dir: Path, multirun: bool):
        # A server that is down must cost a job seconds, not MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # one progress line per job
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's table creation, line by line
        # A server that is down: urllib3 logs each retry ("Retrying (Retry(total=1, ...)) after connection broken")
        # into the sweep's progress; the one warning below says it instead.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        self.uri = tracking_uri(logger_cfg.tracking_uri)
        self.client, self.run_id = None, None
        sweep, overrides = sweep_context(multirun)
        experiment = logger_cfg.experiment or sweep or "vaebench"
        params = {**flatten(resolved), **{name: str(getattr(result, name)) for name in IDENTITY}}
        tags = {"vaebench.overrides": " ".join(overrides)[:PARAM_LIMIT], "vaebench.run_dir": str(out_dir.resolve())}
        self._call(lambda: self._open(experiment, out_dir.name, params, tags))

    def _call(self, action: Callable[[], Any]) -> None:
        if self.client is False:  # an earlier call failed: this job tracks no more
            return
        try:
            action()
        except Exception as e:  # noqa: BLE001 - tracking must never fail a run
            self.client = False
            message = f"mlflow tracking at {self.uri} failed, this run goes on untracked: {type(e).__name__}: {e}"
            message = message.splitlines()[0][:500]
            print(f"vaebench: warning: {message}", file=sys.stderr, flush=True)
            to_log_file(logging.WARNING, message)  # run.log's copy: the console already has the line above

    def _open(self, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
        with _sqlite_lock(self.uri):
            # Under the lock: the client opens the store as it is made, and a new SQLite store is created and
            # migrated then; parallel jobs that did so together failed ("Online migration expected to match one
            # row", "table _alembic_tmp_experiments already exists") and went untracked.
            client = MlflowClient(tracking_uri=self.uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                artifacts = None
                if self.uri.startswith("sqlite:///"):  # beside the database, not in ./mlruns of whatever cwd
                    artifacts = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
                try:
                    experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
                except Exception:  # another job of the sweep created it first
                    found = client.get_experiment_by_name(experiment)
                    if found is None:
                        raise
                    experiment_id = found.experiment_id
            else:
                experiment_id = found.experiment_id
            close_stale_runs(client, experiment_id, tags["vaebench.run_dir"])
            run = client.create_run(experiment_id, run_name=run_name)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            client.log_batch(run.info.run_id, params=items[i:i + BATCH])
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client, self.run_id = client, run.info.run_id

    def epoch(self, row: dict[str, float]) -> None:
        if not self.client:
            return
        from mlflow.entities import Metric

        step = int(row["epoch"])
        metrics = [Metric(k, float(v), _now(), step) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)]
        self._call(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finish(self, result: Result, out_dir: Path) -> None:
        if not self.client:
            return
        from mlflow.entities import Metric, RunTag

        values = result.to_dict()
        step = values[F.epochs_run] or 0
        metrics = [Metric(name, float(values[name]), _now(), step) for name in FIELDS
                   if name not in IDENTITY and _is_number(values[name])]
        tags = [RunTag(name, str(values[name])[:PARAM_LIMIT]) for name in FIELDS
                if isinstance(values[name], (str, bool)) and name not in IDENTITY]

        def close() -> None:
            for i in range(0, len(tags), BATCH):
                self.client.log_batch(self.run_id, metrics=metrics if i == 0 else [], tags=tags[i:i + BATCH])
            for name in (RESULT_FILE, METRICS_FILE):
                if (out_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(out_dir / name))
            self.client.set_terminated(self.run_id, "FINISHED" if values[F.status] == "ok" else "FAILED")

        self._call(close)


def close_stale_runs(client: Any, experiment_id: str, run_dir: str) -> None:
    """Runs of this job's directory that are still RUNNING belong to an attempt that was killed (SIGTERM, kill -9:
    the process could not end its run): this job holds the directory's claim, so none is alive. Each is ended as
    KILLED and deleted (MLflow keeps deleted runs, restorable), so a resumed sweep shows one run per job."""
    quoted = run_dir.replace("'", "\\'")
    stale = client.search_runs([experiment_id], filter_string=f"tags.`vaebench.run_dir` = '{quoted}' and "
                               "attributes.status = 'RUNNING'", max_results=100)
    for found in stale:
        client.set_terminated(found.info.run_id, "KILLED")
        client.delete_run(found.info.run_id)
        log.info("mlflow: run %s of %s was left RUNNING by a stopped attempt: ended as KILLED and deleted",
                 found.info.run_id, run_dir)


def to_log_file(level: int, message: str) -> None:
    """A record for the job's run.log only (the file handlers of the root logger), not the console."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and level >= handler.level:
            handler.handle(record)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _now() -> int:
    import time

    return int(time.time() * 1000)
