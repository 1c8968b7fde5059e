"""logger=mlflow against a real MLflow tracking server (SQLite store) on 127.0.0.1, and the embedded default."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import UNSCORED, make_config, run_cli

mlflow = pytest.importorskip("mlflow", reason='logger=mlflow needs MLflow: pip install "vaebench[mlflow]"')
from mlflow.tracking import MlflowClient  # noqa: E402

from vaebench.results import F, IDENTITY  # noqa: E402
from vaebench.task import run  # noqa: E402

# Four SGD jobs: lr=1e4 really diverges (status diverged), the others finish.
GRID = ["-m", "optimizer=sgd", "lr=1e-3,1e-2,1e-1,1e4", *UNSCORED, "hydra.launcher.n_jobs=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with a SQLite store and served artifacts, in its own process group (it forks workers). Without
    its job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false): two more processes, for features vaebench never uses."""
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server",
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # the server imports all of MLflow first: minutes on a starved machine
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
        assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
    stop_server(proc)
    pytest.fail("mlflow server did not answer /health within 600 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """One live server for the tests of a session (one starts in ~9 s: the `mlflow server` command and its uvicorn
    process each import MLflow), a new one after a test killed it. Session-scoped, not module-scoped: the long tests
    run first, in their own order (conftest.py), and a module's fixture would be torn down between its tests. Each
    test logs into its own experiment (named after its sweep directory), so they share a store safely."""
    started: list[tuple[subprocess.Popen, str]] = []

    def live() -> tuple[subprocess.Popen, str]:
        if not started or started[-1][0].poll() is not None:
            started.append(start_server(tmp_path_factory.mktemp("server")))
        return started[-1]

    yield live
    for proc, _ in started:
        stop_server(proc)


def results_under(path: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in path.rglob("result.json")}


@pytest.mark.long(20)
def test_sweep_is_one_experiment_with_a_run_per_job(servers, tmp_path):
    _, url = servers()
    sweep = tmp_path / "grid"
    args = [*GRID, "logger=mlflow", f"logger.tracking_uri={url}", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    results = results_under(sweep)
    assert len(results) == 4

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("grid")  # named after the sweep directory
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(results)
    for name, result in results.items():
        run = runs[name]
        for field in IDENTITY:  # the grid's values, as MLflow keeps params: strings
            assert run.data.params[field] == str(result[field])
        assert run.data.params["trainer.max_epochs"] == "2" and run.data.params["model.hidden_dims"] == "[256]"
        assert run.data.tags[F.status] == result[F.status]
        assert run.data.tags[F.stop_reason] == result[F.stop_reason]
        assert run.info.status == ("FINISHED" if result[F.status] == "ok" else "FAILED")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "result.json" in artifacts
        if result[F.status] == "ok":
            assert run.data.metrics[F.val_recon_mse] == pytest.approx(result[F.val_recon_mse])
            history = client.get_metric_history(run.info.run_id, "train_loss")  # every epoch, then the result's
            assert {m.step for m in history} == set(range(1, result[F.epochs_run] + 1))
            assert max(history, key=lambda m: (m.step, m.timestamp)).value == pytest.approx(result[F.train_loss])
            assert "metrics.csv" in artifacts
    assert sorted(r[F.status] for r in results.values()) == ["diverged", "ok", "ok", "ok"]

    # Resumed: every job skipped, nothing logged twice. On one worker, in the launcher's process (n_jobs is not part
    # of a job's identity): the same skip, without two more processes importing torch and MLflow to find it.
    again = run_cli(*GRID[:-1], "hydra.launcher.n_jobs=1", *args[len(GRID):], cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and again.stdout.count("-> skipped") == 4, again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 4


@pytest.mark.long(8)
def test_server_killed_mid_sweep_leaves_every_result(servers, tmp_path):
    proc_server, url = servers()
    sweep = tmp_path / "killed"
    args = [*GRID[:-1], "hydra.launcher.n_jobs=1", "logger=mlflow", f"logger.tracking_uri={url}",
            f"hydra.sweep.dir={sweep}"]
    exe = Path(sys.executable).with_name("vaebench")
    # No retries: each later job finds the server gone at once, not after vaebench's 2 retries (~3 s of back-off a
    # job, the user's cost, not this test's subject; test_faults.py checks those retries print nothing).
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:  # the first job has finished (and was tracked): the server goes down
        if line.startswith("[1/4]"):
            stop_server(proc_server)
            break
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    results = results_under(sweep)
    assert len(results) == 4 and all(r[F.status] in ("ok", "diverged") and r[F.finished_at] for r in results.values())
    assert "vaebench: warning: mlflow tracking" in err


def test_default_store_is_a_sqlite_file_under_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where vaebench runs: the default store is ./outputs/mlflow.db, as outputs/runs
    run(make_config("logger=mlflow", "trainer.latent_metrics=false"), tmp_path / "outputs" / "runs" / "one")
    db = tmp_path / "outputs" / "mlflow.db"
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("vaebench")
    (tracked,) = client.search_runs([experiment.experiment_id])
    (result,) = results_under(tmp_path / "outputs" / "runs").values()
    assert tracked.data.tags[F.status] == result[F.status] == "ok"
    assert (tmp_path / "outputs" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()
