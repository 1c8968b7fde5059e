"""The `vaebench` command as a user runs it: subprocesses, outputs under the working directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from conftest import REPO, TINY, UNSCORED, make_config, run_cli
from vaebench.cli import conf_dir
from vaebench.config import register_configs, validate
from vaebench.errors import UserError
from vaebench.results import read_result
from vaebench.sweep import PROGRESS_FILE, distinct_value_jobs, job_overrides, one_line


def results_under(path: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in path.rglob("result.json")}


@pytest.mark.long(5)
def test_single_run_writes_result_and_metrics(tmp_path):
    proc = run_cli("model=iwae", "optimizer=rmsprop", "lr=1e-3", "latent_dim=20", "seed=1", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir, result), = results_under(tmp_path / "outputs" / "runs").items()
    assert (result["model"], result["optimizer"], result["seed"], result["status"]) == ("iwae", "rmsprop", 1, "ok")
    assert (run_dir / "metrics.csv").read_text().count("\n") == 1 + result["epochs_run"]
    assert (run_dir / "run.log").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    # A single run saves its model and latent table by default, and its last line says where.
    assert proc.stdout.strip().splitlines()[-1] == f"vaebench: wrote result.json, model.pt, latent.csv in {run_dir}"


@pytest.mark.parametrize("override, says", [
    # Each is a process start; the bad type and the unknown option take the same exit path as the others.
    pytest.param("lr=abc", "lr", marks=pytest.mark.slow), ("latnt_dim=5", "latnt_dim"),
    pytest.param("model=vea", "model/vea", marks=pytest.mark.slow), ("latent_dim=0", "'latent_dim'"),
])
def test_bad_config_exits_2_before_training(override, says, tmp_path):
    proc = run_cli(override, *TINY, cwd=tmp_path)
    assert proc.returncode == 2
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.rglob("result.json")) and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("outputs/runs/*"))  # a refused run leaves no empty folder for aggregate to list


def test_a_key_added_with_plus_must_be_a_setting():
    """`+latnt_dim=5` (Hydra's own hint for a misspelt key) would add a key nothing reads: refused, named."""
    with pytest.raises(UserError, match=r"config key 'latnt_dim': not a vaebench setting; did you mean latent_dim\?"):
        validate(make_config("+latnt_dim=5"))
    with pytest.raises(UserError, match="config key 'trainer.max_epoch': not a vaebench setting; did you mean "
                                        "trainer.max_epochs"):
        validate(make_config("+trainer.max_epoch=3"))
    validate(make_config("+experiment=demo"))  # a config group added with +, not a key


def test_flags_that_exclude_each_other_are_one_line(tmp_path):
    proc = run_cli("-m", "--cfg", "job", "model=vae,iwae", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["vaebench: error: Only one of --run, --multirun, --cfg, --info and "
                                                "--shell_completion can be specified (to see a sweep job's config: "
                                                "--cfg job with one value per key, no -m)"]


def test_a_misspelt_key_in_a_sweep_is_one_line_without_hydras_plus_hint(tmp_path):
    proc = run_cli("-m", "latnt_dim=5", "seed=0,1", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "vaebench: error: Could not override 'latnt_dim'.; Key 'latnt_dim' not in 'Config': did you mean latent_dim?"]
    assert not (tmp_path / "sweep").exists()


def test_bad_value_in_a_sweep_stops_it_before_any_job(tmp_path):
    proc = run_cli("-m", "latent_dim=5,0", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "vaebench: error: config key 'latent_dim': must be >= 1, got 0"
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.long(6)
def test_sweep_with_failing_jobs_completes_and_records_all(tmp_path):
    # lr=1e4 with SGD really diverges; the faults inject an out-of-memory and a crash.
    # One job after another in the launcher's process (n_jobs=1): the failures are the jobs', not the workers'
    # (a dying worker: tests/test_faults.py); spawning two workers that import torch cost this test half its CPU.
    proc = run_cli("-m", "optimizer=sgd", "lr=1e-3,1e4", "trainer.fault=null,oom,error", *UNSCORED,
                   "hydra.sweep.dir=sweep", "hydra.launcher.n_jobs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = results_under(tmp_path / "sweep")
    ended = sorted((r["lr"], r["config"]["trainer"]["fault"] or "", r["status"]) for r in results.values())
    assert ended == [(1e-3, "", "ok"), (1e-3, "error", "error"), (1e-3, "oom", "oom"),
                     (1e4, "", "diverged"), (1e4, "error", "error"), (1e4, "oom", "oom")]
    assert len({r["config_hash"] for r in results.values()}) == 6  # six jobs, six directories, no shared file
    # One line announces the sweep; the launcher's list of every job (72 lines for the demo) stays off the console.
    assert "sweep: 6 jobs into sweep\n" in proc.stdout and "#0 :" not in proc.stdout and "Launching jobs" not in proc.stdout
    assert "[6/6]" in proc.stdout and "sweep done: 6 jobs (1 diverged, 2 error, 1 ok, 2 oom)" in proc.stdout + proc.stderr
    cache = Path(os.environ["VAEBENCH_CACHE"])
    assert not list(cache.glob("*.tmp")) and not list(tmp_path.rglob("*.tmp"))


def test_paper_grid_is_90_jobs_per_model_and_combines_with_overrides():
    params = OmegaConf.load(REPO / "conf" / "experiment" / "grid.yaml").hydra.sweeper.params  # paper_grid: grid + objective
    grid = job_overrides(params, ["+experiment=paper_grid", "model=infovae"])
    assert len(grid) == 90 and len({tuple(j) for j in grid}) == 90
    assert len(job_overrides(params, ["model=vae,iwae,infovae,logcosh"])) == 360
    assert len(job_overrides(params, ["model=infovae", "latent_dim=3,5"])) == 5 * 2 * 3
    assert len(job_overrides(params, ["model=infovae", "seed=0,1,2"])) == 270
    probes = distinct_value_jobs(grid)
    for key, n in (("lr", 5), ("latent_dim", 6), ("optimizer", 3)):
        assert len({o for job in probes for o in job if o.startswith(key + "=")}) == n
    assert len(probes) == 1 + 4 + 5 + 2  # every value tried once, not the whole grid


@pytest.mark.slow  # the grid's composition is checked in-process above; a real multirun by the failing-jobs sweep
def test_paper_grid_runs_with_command_line_values(tmp_path):
    proc = run_cli("-m", "+experiment=paper_grid", "lr=1e-3", "latent_dim=3,5", *TINY, "trainer.max_epochs=1",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = results_under(tmp_path / "sweep").values()
    assert sorted((r["optimizer"], r["latent_dim"]) for r in results) == \
        [(o, z) for o in ("adam", "rmsprop", "sgd") for z in (3, 5)]
    assert "[6/6]" in proc.stdout


@pytest.mark.long(15)
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path):
    # Jobs of a fraction of a second each (600 x 100, 15 epochs): the kill lands when the first result does, with the
    # other worker's job under way and at least two of the four jobs left (asserted below), as with larger data; the
    # resume is the same code path at any size. One torch thread per job, as two workers on two cores get, whatever
    # the machine, and on the resume's one worker. No latent scores: the resume, not the scoring, is under test.
    grid = ["-m", "lr=1e-3,1e-2", "latent_dim=5,10", "data.n_samples=600", "data.n_genes=100",
            "trainer.max_epochs=15", "trainer.rel_tol=0", "trainer.batch_size=128", "trainer.threads=1",
            "trainer.latent_metrics=false", "hydra.sweep.dir=sweep", "hydra.launcher.n_jobs=2"]
    exe = str(Path(sys.executable).with_name("vaebench"))
    proc = subprocess.Popen([exe, *grid], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while not list((tmp_path / "sweep").rglob("result.json")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers, mid-sweep
    proc.wait()
    time.sleep(0.5)
    before = {p.parent for p in (tmp_path / "sweep").rglob("result.json")}
    assert 1 <= len(before) < 4, "the sweep must be killed mid-way for this test to mean anything"
    assert all(read_result(d) for d in before)  # whatever landed is whole

    # The resume on one worker, in the launcher's process: the same jobs and config hashes (n_jobs is Hydra's, no
    # run's identity), the same skip of each finished job, without two more processes importing torch.
    again = run_cli(*grid[:-1], "hydra.launcher.n_jobs=1", cwd=tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr
    results = results_under(tmp_path / "sweep")
    assert len(results) == 4 and len({r["config_hash"] for r in results.values()}) == 4
    assert all(r["status"] == "ok" for r in results.values())
    assert not list(tmp_path.rglob("*.tmp"))
    lines = [json.loads(line) for line in (tmp_path / "sweep" / PROGRESS_FILE).read_text().splitlines()]
    assert sum(e["status"] == "skipped" for e in lines) == len(before)
    assert "[4/4]" in again.stdout


@pytest.mark.slow  # three processes (~11 s): Submitit's launcher, as the real cluster test in test_cluster.py; the
# cluster path's resume and job lines are checked in-process in make test (test_faults.py, test_cluster.py)
def test_submitit_local_launcher_runs_a_tiny_grid(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="install vaebench[cluster]")
    proc = run_cli("-m", "hydra/launcher=local", "model=vae,logcosh", *UNSCORED, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["model"] for r in results_under(tmp_path / "sweep").values()) == ["logcosh", "vae"]


@pytest.mark.parametrize("override, says", [
    ("model=vea", "Could not find 'model/vea'; Available options in 'model': infovae, iwae, logcosh, vae"),
    ("lr=abc", "Error merging override lr=abc; Value 'abc' of type 'str' could not be converted to Float"),
])
def test_a_bad_swept_value_says_why_in_one_line(override, says):
    """Issue 16: the sweep's check printed Hydra's first two lines: no options, no reason."""
    with pytest.raises(HydraException) as caught:  # what the sweep's check gets for one job of the grid
        make_config(override)
    assert one_line(caught.value).endswith(says) and "\n" not in one_line(caught.value)


@pytest.mark.parametrize("override, fix", [
    ("latnt_dim=5", "did you mean latent_dim?"),  # issue 22: the README promised it; Hydra's message has none
    ("trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
    ("max_epochs=3", "did you mean trainer.max_epochs?"),  # a nested key typed without its group
    ("model.hiden_dims=[3]", "did you mean model.hidden_dims?"),
    ("optimizer.momentum=0.9", "optimizer.momentum is a setting of optimizer=rmsprop and optimizer=sgd only"),
    ("lr=abc", "lr takes a number, e.g. lr=1e-3"),  # the plain override form, not only +lr=abc
    ("latent_dim=2.5", "latent_dim takes a whole number, e.g. latent_dim=20"),
    ("trainer.compile=maybe", "trainer.compile takes true or false"),
    ("trainer.stopping=patiense", "did you mean trainer.stopping=patience?"),
    ("model=vea", "did you mean model=vae?"),
    ("data=tabel", "did you mean data=table?"),
])
def test_every_composition_error_names_its_fix(override, fix):
    from vaebench.hints import with_fix

    with pytest.raises(HydraException) as caught:
        make_config(override)
    message = with_fix(one_line(caught.value))
    assert message.endswith(fix) or f": {fix}" in message, message


def test_a_launcher_or_sweeper_whose_plugin_is_missing_names_the_extra():
    from vaebench.hints import fix_for

    # What Hydra says without hydra-submitit-launcher (our preset's defaults name its config) or the Optuna sweeper.
    assert fix_for("In 'hydra/launcher/slurm_cpu': Could not load 'hydra/launcher/submitit_slurm'.") == (
        'hydra/launcher=submitit_slurm needs its Hydra plugin: pip install -e ".[cluster]" (from the clone)')
    assert fix_for("In 'hydra/config': Could not find 'hydra/sweeper/optuna'; Available options in "
                   "'hydra/sweeper': basic").endswith('pip install -e ".[optuna]" (from the clone)')


def test_a_mistyped_key_costs_one_line_with_the_fix_through_the_command(tmp_path):
    proc = run_cli("lr=abc", *TINY, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "vaebench: error: Error merging override lr=abc; Value 'abc' of type 'str' could not be converted to Float: "
        "lr takes a number, e.g. lr=1e-3"]


def test_help_lists_the_users_groups_not_the_internal_schemas():
    """Issue 16: `vaebench --help` listed schema/model, schema/data, ... beside model, data, ..."""
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    help_text = cfg.hydra.help.template  # resolved as Hydra does before filling in $CONFIG
    assert "model: infovae, iwae, logcosh, vae" in help_text and "optimizer: adam, rmsprop, sgd" in help_text
    assert "schema" not in help_text and "hydra/" not in help_text
    # Issue 22: the keys with their meaning (--cfg job lists them bare).
    assert "data.rank=12  # dimension of the hidden biological programme" in help_text
    assert "data.noise=0.35  # gene-specific noise" in help_text and "lr=1e-3  # learning rate" in help_text


def test_a_sweep_announces_how_many_of_its_jobs_already_finished(tmp_path):
    from vaebench.results import Result, write_result
    from vaebench.sweep import announce

    assert announce(3, tmp_path / "new", resume=True) == f"sweep: 3 jobs into {tmp_path / 'new'}"
    for name, status in (("a", "ok"), ("b", "diverged"), ("c", "error")):  # an error is retried: not finished
        (tmp_path / name).mkdir()
        write_result(tmp_path / name, Result(status=status))
    assert announce(3, tmp_path, resume=True).startswith(f"sweep: 3 jobs into {tmp_path}, 2 already finished there")
    assert announce(3, tmp_path, resume=False) == f"sweep: 3 jobs into {tmp_path}"
