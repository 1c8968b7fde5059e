"""Sweeps on SLURM: the job-state watcher and the collection of results (fast, with stand-in SLURM commands), then
a real single-node cluster started by tests/slurm/cluster.sh (slow; skipped where slurm-wlm cannot run)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY

pytest.importorskip("submitit", reason="install vaebench[cluster]")

from submitit.core.utils import UncompletedJobError  # noqa: E402

from vaebench import cluster  # noqa: E402

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def stand_in(bin_dir: Path, name: str, output: str, status: int = 0) -> None:
    """An executable `name` that prints `output` and exits with `status`."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    path.chmod(0o755)


def test_without_accounting_squeue_gives_the_states_quietly(tmp_path, monkeypatch, caplog):
    stand_in(tmp_path / "bin", "sacct", "Slurm accounting storage is disabled", status=1)
    stand_in(tmp_path / "bin", "squeue", "5_0|COMPLETED|vm\n5_1|CANCELLED|vm\n5_3|RUNNING|vm")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    watcher = cluster.queue_watcher()(delay_s=600)
    for job in ("5_0", "5_1", "5_2", "5_3"):
        watcher.register_job(job)
    with caplog.at_level(logging.WARNING):
        states = {job: watcher.get_state(job, mode="force") for job in ("5_0", "5_1", "5_2", "5_3")}
    # 5_2 is no longer listed (cancelled while pending): it has ended, and the sweep stops waiting for it.
    assert states == {"5_0": "COMPLETED", "5_1": "CANCELLED", "5_2": cluster.GONE, "5_3": "RUNNING"}
    assert [watcher.is_done(j, mode="cache") for j in states] == [True, True, True, False]
    assert not caplog.records  # no warning on a poll


def test_without_slurm_commands_the_states_stay_unknown_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sacct nor squeue
    watcher = cluster.queue_watcher()(delay_s=600)
    watcher.register_job("3_0")
    with caplog.at_level(logging.WARNING):
        assert watcher.get_state("3_0", mode="force") == "UNKNOWN"
    assert len(caplog.records) == 1 and "neither sacct nor squeue answered" in caplog.text


def test_with_accounting_sacct_is_used(tmp_path, monkeypatch):
    stand_in(tmp_path / "bin", "sacct", "JobID|State|NodeList\n7_0|TIMEOUT|vm")
    stand_in(tmp_path / "bin", "squeue", "", status=1)  # would say nothing: must not be asked
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    watcher = cluster.queue_watcher()(delay_s=600)
    watcher.register_job("7_0")
    assert watcher.get_state("7_0", mode="force") == "TIMEOUT"


class Cancelled:
    job_id, state = "9_1", "CANCELLED"

    def results(self):
        raise UncompletedJobError("Job 9_1 (task: 0) with path ... has not produced any output (state: CANCELLED)")


def test_a_job_without_a_result_is_named_and_the_others_are_collected(capsys, monkeypatch):
    monkeypatch.setattr(cluster, "unfinished_jobs", 0)
    returned = cluster.Collected(Cancelled(), ["lr=0.01", "latent_dim=4"]).results()
    assert returned[0].return_value == cluster.NO_RESULT and returned[0].overrides == ["lr=0.01", "latent_dim=4"]
    assert cluster.unfinished_jobs == 1
    err = capsys.readouterr().err
    assert err == ("vaebench: error: job lr=0.01 latent_dim=4 (SLURM job 9_1) ended CANCELLED without a result; the "
                   "other jobs ran: rerun the same command to resume it\n")


# ------------------------------------------------------------------------------------------ a real cluster

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM cluster for this module's tests, stopped afterwards whatever happens."""
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=60)
        reason = (start.stderr.strip().splitlines() or ["no message"])[0]
        pytest.skip(f"no single-node SLURM cluster on this machine: {reason}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=60)
        os.environ.pop("SLURM_CONF") if previous is None else os.environ.update(SLURM_CONF=previous)
        assert not list(state.glob("*.pid")), "a SLURM daemon was left running"


def sweep(sweep_dir: Path, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("vaebench")
    return subprocess.Popen([str(exe), "-m", "hydra/launcher=slurm_cpu", "lr=1e-3,1e-2", "latent_dim=2,4", *TINY,
                             f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_sweep_on_a_real_cluster_survives_scancel_and_resumes(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    first = sweep(sweep_dir, tmp_path)
    # Cancel the array's last job as soon as it is submitted (the node runs 2 jobs at a time: it is pending).
    deadline = time.monotonic() + 60
    while not (cancel := sorted((sweep_dir / ".submitit").glob("*_3"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancel, "the sweep submitted no array"
    subprocess.run(["scancel", cancel[0].name], check=True)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 2, err
    assert f"job lr=0.01 latent_dim=4 {' '.join(TINY)} (SLURM job {cancel[0].name})" in err
    assert "without a result" in err and "Traceback" not in err and "sacct" not in err + out
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    assert sorted((r["lr"], r["latent_dim"]) for r in results) == [(1e-3, 2), (1e-3, 4), (1e-2, 2)]
    assert all(r["status"] == "ok" for r in results)

    again = sweep(sweep_dir, tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "sweep done: 4 jobs (1 ok, 3 skipped)" in out + err
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    assert len(results) == 4 and all(r["status"] == "ok" for r in results)
