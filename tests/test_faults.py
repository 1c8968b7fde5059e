"""Issue 21: faults a hostile-but-realistic user and a cluster meet (a dead worker, a full disk, a transposed
matrix, an unchecked checksum, the tracker and the cluster under faults), each reproduced. Item numbers are the
issue's. Read-only and full file systems are small tmpfs mounts, made only when the tests run as root."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from test_artifacts import counts_file, table_config
from test_data import write_table
from test_public_data import MATRIX, SAMPLES, Files, data_config, pancan, server  # noqa: F401 - server: a fixture
from vaebench.artifacts import MODEL_FILE
from vaebench.data import load_dataset
from vaebench.data.public import DOWNLOADS
from vaebench.embed import main as embed_main
from vaebench.errors import UserError
from vaebench.task import run


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---- 2: data.sha256 checked against a local copy, and a SHA-256 is 64 hex digits -------------------------

def test_sha256_is_checked_against_a_copy_given_by_hand(tmp_path):
    matrix = tmp_path / "HiSeqV2.gz"
    matrix.write_bytes(MATRIX)
    given = ("data.labels_url=null", f"data.path={matrix}")
    with pytest.raises(UserError) as e:
        load_dataset(pancan("http://127.0.0.1:9", tmp_path / "cache", *given, "data.sha256=" + "0" * 64))
    assert str(matrix) in str(e.value) and "SHA-256" in str(e.value) and "data.sha256" in str(e.value)
    right = hashlib.sha256(MATRIX).hexdigest()
    assert load_dataset(pancan("http://127.0.0.1:9", tmp_path / "cache", *given, f"data.sha256={right}")).x.shape == (12, 10)


@pytest.mark.slow  # the command as typed; the test above checks the same in-process
def test_sha256_mismatch_of_a_local_copy_exits_2_from_the_command(tmp_path):
    (tmp_path / "HiSeqV2.gz").write_bytes(MATRIX)
    proc = run_cli("data=tcga_pancan", "data.path=HiSeqV2.gz", "data.labels_url=null", "data.sha256=" + "0" * 64,
                   "data.n_genes=10", "trainer.max_epochs=1", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 2
    assert "SHA-256" in one_error_line(proc.stderr) and not list((tmp_path / "outputs").rglob("run.log"))


@pytest.mark.parametrize("value", ["abc", "0" * 63, "g" * 64, "0" * 65])
def test_a_sha256_that_is_not_64_hex_digits_is_a_config_error(value):
    with pytest.raises(UserError, match="config key 'data.sha256': a SHA-256 is 64 hexadecimal digits"):
        data_config("data=tcga_pancan", f"data.sha256={value}")
    assert data_config("data=tcga_pancan", "data.sha256=sha256:" + "AB" * 32).sha256 == "ab" * 32


# ---- 4: a matrix in the wrong orientation ---------------------------------------------------------------

def compose_data(*overrides: str):
    return data_config(*overrides, "data.n_genes=null")


def genes_by_samples(path: Path) -> Path:
    """A Xena-style genes x samples table: gene symbols down the first column, TCGA barcodes across the header."""
    x = np.random.default_rng(0).uniform(0, 10, size=(30, len(SAMPLES)))
    return write_table(path, x.astype(np.float32), samples=[f"GENE{g}" for g in range(30)], genes=SAMPLES)


def test_a_genes_x_samples_file_given_as_a_table_is_refused_naming_the_fix(tmp_path):
    path = genes_by_samples(tmp_path / "xena.tsv")
    with pytest.raises(UserError) as e:
        load_dataset(compose_data("data=table", f"data.path={path}", f"data.cache_dir={tmp_path / 'c'}"))
    message = str(e.value)
    assert "looks genes x samples" in message and "data=xena" in message and "\n" not in message
    # The same file read as what it is trains on its 12 samples.
    assert load_dataset(compose_data("data=xena", f"data.path={path}", f"data.cache_dir={tmp_path / 'c'}")).x.shape == (12, 30)


def test_a_samples_x_genes_file_given_as_xena_is_refused_naming_the_fix(tmp_path):
    x = np.random.default_rng(0).uniform(0, 10, size=(12, 20)).astype(np.float32)
    path = write_table(tmp_path / "t.tsv", x, samples=SAMPLES, genes=[f"ENSG{g:011d}.3" for g in range(20)])
    with pytest.raises(UserError) as e:
        load_dataset(compose_data("data=xena", f"data.path={path}", f"data.cache_dir={tmp_path / 'c'}"))
    assert "looks samples x genes" in str(e.value) and "data=table" in str(e.value)


def test_ids_of_neither_kind_pass_in_both_orientations(tmp_path):
    path = write_table(tmp_path / "t.tsv", np.random.default_rng(0).uniform(0, 10, size=(12, 20)).astype(np.float32))
    assert load_dataset(compose_data("data=table", f"data.path={path}", f"data.cache_dir={tmp_path / 'c'}")).x.shape == (12, 20)
    assert load_dataset(compose_data("data=xena", f"data.path={path}", f"data.cache_dir={tmp_path / 'c'}")).x.shape == (20, 12)


# ---- 6 and 8: vaebench-embed's one-line errors and hints --------------------------------------------------

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    frame = counts_file(root / "counts.tsv")
    run(table_config(root / "counts.tsv"), root / "run")
    return root / "run" / MODEL_FILE, frame


def embed_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        embed_main(list(args))
    assert stop.value.code == 2
    return one_error_line(capsys.readouterr().err)


def test_embed_with_a_model_of_another_version_says_it_cannot_be_read(saved_model, tmp_path, capsys):
    path, frame = saved_model
    saved = torch.load(path, weights_only=True)
    saved["state_dict"] = {k.replace("encoder", "enc"): v for k, v in saved["state_dict"].items()}  # renamed layers
    torch.save(saved, tmp_path / MODEL_FILE)
    frame.to_csv(tmp_path / "new.tsv", sep="\t", index=False)
    line = embed_error(capsys, str(tmp_path / MODEL_FILE), str(tmp_path / "new.tsv"), "--out", str(tmp_path / "o.csv"))
    assert "cannot be read as a saved model" in line and "RuntimeError" in line
    saved = torch.load(path, weights_only=True)
    saved["model_config"]["no_such_key"] = 1  # a key this version's config does not take
    torch.save(saved, tmp_path / MODEL_FILE)
    assert "cannot be read as a saved model" in embed_error(capsys, str(tmp_path / MODEL_FILE), str(tmp_path / "new.tsv"),
                                                            "--out", str(tmp_path / "o.csv"))


def test_embed_hints_name_nothing_embed_cannot_take(saved_model, tmp_path, capsys):
    path, frame = saved_model
    with_text = frame.assign(note="x")
    with_text.to_csv(tmp_path / "text.tsv", sep="\t", index=False)
    line = embed_error(capsys, str(path), str(tmp_path / "text.tsv"), "--out", str(tmp_path / "o.csv"))
    assert "data.label_column" not in line and "drop the columns that are not genes" in line
    with_nan = frame.copy()
    with_nan.loc[3, torch.load(path, weights_only=True)["preparation"]["genes"][0]] = np.nan  # a gene the model reads
    with_nan.to_csv(tmp_path / "nan.tsv", sep="\t", index=False)
    line = embed_error(capsys, str(path), str(tmp_path / "nan.tsv"), "--out", str(tmp_path / "o.csv"))
    assert "NaN" in line and "data.nan_policy" not in line.split(";", 1)[1].split("trained with")[0]
    assert "set data.nan_policy=zero" not in line


def test_anndata_warnings_do_not_print_before_the_one_line_refusal(tmp_path, recwarn):
    anndata = pytest.importorskip("anndata", reason="anndata is the optional extra vaebench[h5ad]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(X=np.ones((6, 3), dtype=np.float32))
        adata.var_names = ["A", "A", "B"]  # anndata warns on reading: names not unique; vaebench refuses them
        adata.write_h5ad(tmp_path / "dup.h5ad")
    recwarn.clear()
    with pytest.raises(UserError, match="duplicated gene name"):
        load_dataset(data_config("data=h5ad", f"data.path={tmp_path / 'dup.h5ad'}", f"data.cache_dir={tmp_path / 'c'}"))
    assert not [w for w in recwarn if "anndata" in (w.filename or "") or "unique" in str(w.message)]


@pytest.mark.parametrize("value", [4294967296, -1])
def test_split_seed_has_the_range_of_seed(value):
    with pytest.raises(UserError, match=r"data.split_seed': must be in 0 \.\.\. 4294967295"):
        data_config(f"data.split_seed={value}")
    assert data_config("data.split_seed=4294967295").split_seed == 4294967295


# ---- 11: public data, a copy changed on disk, the server down, the .sha256 record -------------------------

def test_a_downloaded_copy_changed_on_disk_is_named_and_kept_not_fetched_again(server, tmp_path):  # noqa: F811
    _, base = server
    cache = tmp_path / "cache"
    load_dataset(pancan(base, cache))
    copy = next((cache / DOWNLOADS).glob("*HiSeqV2.gz"))
    changed = MATRIX[:-10] + b"0123456789"
    copy.write_bytes(changed)
    with pytest.raises(UserError) as e:
        load_dataset(pancan(base, cache, "data.n_genes=5"))
    assert str(copy) in str(e.value) and "changed on disk" in str(e.value) and "delete it" in str(e.value)
    assert copy.read_bytes() == changed and Files.requests.count("/HiSeqV2.gz") == 1


def test_with_the_server_down_the_message_says_what_stays(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / DOWNLOADS
    from vaebench.data import public

    url = "http://127.0.0.1:9/HiSeqV2.gz"
    folder.mkdir(parents=True)
    (folder / public.file_name(url)).write_bytes(MATRIX)  # a copy without a record, and a published hash it fails
    with pytest.raises(UserError) as e:
        load_dataset(pancan("http://127.0.0.1:9", tmp_path / "cache", "data.sha256=" + "ab" * 32))
    assert "nothing was kept" not in str(e.value) and str(folder / public.file_name(url)) in str(e.value)


def test_the_sha256_record_is_whole_or_absent(server, tmp_path, monkeypatch):  # noqa: F811
    _, base = server
    cache = tmp_path / "cache"
    real = Path.write_text

    def disk_full_midway(self, text, *args, **kwargs):  # the disk fills while the record is written
        if DOWNLOADS in self.parts:
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_midway)
    with pytest.raises(OSError):
        load_dataset(pancan(base, cache))
    assert not [p for p in (cache / DOWNLOADS).iterdir() if p.name.endswith(".sha256")]
    monkeypatch.setattr(Path, "write_text", real)
    assert load_dataset(pancan(base, cache)).x.shape == (12, 10)  # recorded afresh, not refused as changed


# ---- 12: not Linux: listing the workers, peak memory ----------------------------------------------------

def test_workers_are_listed_without_reading_proc_ourselves(monkeypatch):
    from vaebench import cli

    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"])
    try:
        import psutil

        deadline = time.time() + 20
        while len(psutil.Process(child.pid).children()) < 1 and time.time() < deadline:
            time.sleep(0.05)
        real = os.listdir

        def no_proc(path="."):  # macOS and Windows have no /proc
            if str(path) == "/proc":
                raise FileNotFoundError(2, "No such file or directory", "/proc")
            return real(path)

        monkeypatch.setattr(os, "listdir", no_proc)
        found = cli.descendants(os.getpid())
        assert child.pid in found and len([p for p in found if p != child.pid]) >= 1
    finally:
        for p in psutil.Process(child.pid).children(recursive=True):
            p.kill()
        child.kill()
        child.wait()


def test_the_interrupt_handler_stops_even_when_listing_the_workers_fails():
    code = ("import os, signal, time\nimport vaebench.cli as cli\n"
            "def broken(pid):\n    raise OSError('no /proc here')\n"
            "cli.descendants = broken\ncli.stop_on_signals()\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert one_error_line(proc.stderr).startswith("vaebench: interrupted by SIGTERM")


@pytest.mark.parametrize("platform, maxrss, mb", [("darwin", 512 * 2**20, 512.0), ("linux", 512 * 1024, 512.0)])
def test_peak_memory_fallback_reads_ru_maxrss_in_the_platforms_unit(platform, maxrss, mb, monkeypatch):
    from vaebench import device

    real = Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_proc)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(device.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=maxrss))
    assert device.peak_memory_mb(torch.device("cpu")) == (mb, "peak_rss_process")


# ---- 3 and 5: full disks, read-only file systems, Hydra's own writes: one line each ----------------------

SMALL = ["data.n_samples=200", "data.n_genes=50", "trainer.max_epochs=1", "trainer.batch_size=64", "device=cpu"]


@contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A small file system of its own at path (a full disk that fills no real one), for tests run as root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if readonly else ""), "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow  # a whole single run (the artifact test below checks the same in-process)
def test_a_full_disk_while_saving_model_pt_is_one_line_and_exit_2_and_the_result_is_kept(tmp_path):
    with tmpfs(tmp_path / "fs", "96k") as fs:  # room for result.json, metrics.csv, run.log; not for model.pt
        proc = run_cli(*SMALL, f"hydra.run.dir={fs / 'run'}", cwd=tmp_path)
        line = one_error_line(proc.stderr)
        assert proc.returncode == 2
        assert "No space left on device" in line and str(fs / "run" / MODEL_FILE) in line
        result = json.loads((fs / "run" / "result.json").read_text())  # the trained result is not lost
        assert result["status"] == "ok" and "No space left on device" in result["artifact_error"]
        assert not [p for p in (fs / "run").iterdir() if p.name.endswith(".tmp")]


def test_an_artifact_that_cannot_be_written_raises_after_the_result_is_written(tmp_path, monkeypatch):
    from vaebench import artifacts
    from conftest import make_config

    def full(path, write):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(artifacts, "replace_atomically", full)
    with pytest.raises(OSError) as e:
        run(make_config("trainer.max_epochs=1", "trainer.save_latent=true"), tmp_path / "run", multirun=True)
    assert e.value.filename.endswith(MODEL_FILE) or e.value.filename.endswith("latent.csv")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "ok"


def test_metrics_csv_on_a_full_disk_does_not_fail_the_run(tmp_path):
    from vaebench.progress import MetricsWriter

    writer = MetricsWriter(Path("/dev/full"))
    for epoch in range(3):
        writer({"epoch": epoch, "val_recon_mse": 0.1})
    writer.close()
    assert len(writer.rows) == 3 and writer.failed.errno == 28 and writer.failed.filename == "/dev/full"


def test_run_log_on_a_full_disk_says_so_once_not_a_traceback_per_record(capsys):
    import logging

    from vaebench.progress import RunLog

    handler = RunLog("/dev/full")  # every write fails with "No space left on device"
    logger = logging.getLogger("vaebench.test_faults")
    logger.addHandler(handler)
    try:
        for i in range(3):
            logger.warning("line %d", i)
    finally:
        logger.removeHandler(handler)
        handler.close() if not handler.failed else None
    err = capsys.readouterr().err
    assert "Logging error" not in err and one_error_line(err).startswith("vaebench: warning: cannot write /dev/full")


def test_run_dir_that_is_an_existing_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "taken").write_text("")
    proc = run_cli(*SMALL, "hydra.run.dir=taken", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.startswith("vaebench: error: cannot write") and "taken" in line and "hydra.run.dir" in line


def test_a_sweep_into_a_read_only_file_system_is_one_line_and_exit_2(tmp_path):
    with tmpfs(tmp_path / "ro", "64k", readonly=True) as ro:
        proc = run_cli("-m", "lr=1e-3,1e-2", *SMALL, f"hydra.sweep.dir={ro}", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "Read-only file system" in line and "rerun the same command" in line


def test_aggregate_out_an_existing_file_is_one_line(tmp_path, capsys):
    from vaebench.aggregate import main as aggregate_main

    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit) as stop:
        aggregate_main([str(tmp_path), "--out", str(tmp_path / "taken")])
    assert stop.value.code == 2 and "is a file" in one_error_line(capsys.readouterr().err)


def test_the_summary_counts_jobs_whose_progress_line_could_not_be_written(tmp_path, monkeypatch, caplog):
    import logging

    from omegaconf import OmegaConf

    from vaebench import sweep

    monkeypatch.setenv(sweep.INVOCATION_ENV, json.dumps({"id": "x", "jobs": 3, "started": 0}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with caplog.at_level(logging.INFO, logger="vaebench.sweep"):
        sweep.SweepCallback().on_multirun_end(config)  # no progress file: the disk was full
    assert "sweep done: 3 jobs (3 unrecorded (the progress file could not be written))" in caplog.text


# ---- 1: a worker process that dies costs its job, not the sweep ------------------------------------------

def test_a_dead_worker_costs_its_job_only_and_a_fresh_worker_takes_its_place():
    from vaebench.workers import run_all

    parent = os.getpid()

    def job(n: int) -> tuple[int, int]:
        import os
        import signal
        import time

        if n == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
        time.sleep(0.2)
        return n * 10, os.getpid()

    deaths = []
    outcomes = run_all(job, [(n,) for n in range(5)], 2, lambda i, how: deaths.append((i, str(how))) or "dead")
    assert deaths == [(2, "worker died: signal 9 (SIGKILL, as the kernel's out-of-memory killer sends)")]
    assert [o if o == "dead" else o[0] for o in outcomes] == [0, 10, "dead", 30, 40]
    assert parent not in {o[1] for o in outcomes if o != "dead"}
    assert len({o[1] for o in outcomes if o != "dead"}) >= 2  # the jobs after the death ran on a fresh worker


def test_an_exception_outside_a_job_ends_the_pool_and_is_raised():
    from vaebench.workers import run_all

    def job(n: int) -> int:
        if n == 1:
            raise ValueError("not a job's failure")
        return n

    with pytest.raises(ValueError, match="not a job's failure"):
        run_all(job, [(n,) for n in range(3)], 2, lambda i, how: None)


@pytest.mark.slow  # a sweep of three training runs, one worker killed while both train
def test_kill_9_of_a_sweep_worker_records_its_job_and_the_others_finish(tmp_path):
    import psutil

    exe = str(Path(sys.executable).with_name("vaebench"))
    grid = ["-m", "lr=1e-3,1e-2,1e-1", "data.n_samples=600", "data.n_genes=100", "trainer.max_epochs=150",
            "trainer.rel_tol=0", "trainer.batch_size=64", "trainer.latent_metrics=false", "device=cpu",
            "hydra.sweep.dir=sweep", "hydra.launcher.n_jobs=2"]
    proc = subprocess.Popen([exe, *grid], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while len(list((tmp_path / "sweep").glob("*/metrics.csv"))) < 2 and time.time() < deadline:
            time.sleep(0.1)  # both workers are training
        workers = [p for p in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2
        os.kill(workers[0].pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 1 and "Traceback" not in err
    line = one_error_line(err)
    assert line.startswith("vaebench: error: job lr=") and "worker died: signal 9" in line and "rerun" in line
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/result.json")]
    assert sorted(r["status"] for r in results) == ["error", "ok", "ok"]
    dead = next(r for r in results if r["status"] == "error")
    assert dead["error"].startswith("worker died: signal 9") and f"lr={dead['lr']:g}" in line
    assert "sweep done: 3 jobs (1 error, 2 ok)" in out + err


# ---- 7: reasons for null scores, a warning, and a bound on latent_dim -----------------------------------

def test_one_label_for_every_validation_row_gives_null_scores_with_the_reason():
    from vaebench.latent import label_scores, too_few_rows

    y = np.array(["BRCA"] * 30)
    note = too_few_rows(y)
    assert note and "one label ('BRCA')" in note
    z = np.random.default_rng(0).normal(size=(30, 3))
    assert set(label_scores(z, y, z, y, 0).values()) == {None}


def test_latent_dim_as_wide_as_the_genes_has_a_null_pca_baseline_with_a_note_and_a_warning(tmp_path, caplog):
    import logging

    from conftest import make_config

    with caplog.at_level(logging.WARNING, logger="vaebench.precheck"):
        result = run(make_config("latent_dim=40", "trainer.max_epochs=1"), tmp_path)  # TINY: 40 genes
    assert result["status"] == "ok" and result["baseline_pca_mse"] is None
    assert "k = latent_dim = 40" in result["pca_note"] and "PCA baseline" in caplog.text
    assert run(make_config("latent_dim=5", "trainer.max_epochs=1"), tmp_path / "small")["pca_note"] is None


def test_a_latent_dim_ten_times_wider_than_the_genes_is_refused_before_training(tmp_path):
    from conftest import make_config

    with pytest.raises(UserError, match="config key 'latent_dim': 100000 is more than 10 times the 40 genes"):
        run(make_config("latent_dim=100000"), tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_a_sweep_checks_every_swept_latent_dim_against_the_genes_before_any_job(tmp_path):
    proc = run_cli("-m", "latent_dim=5,100000", *SMALL, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2 and "more than 10 times the 50 genes" in one_error_line(proc.stderr)
    assert not list((tmp_path / "sweep").rglob("run.log"))


# ---- 9: MLflow under faults: a new store met by parallel jobs, killed attempts, a dead server ------------

def tracker_for(uri: str, out_dir: Path):
    pytest.importorskip("mlflow", reason='logger=mlflow needs MLflow: pip install "vaebench[mlflow]"')
    from vaebench.results import Result
    from vaebench.tracking import MlflowTracker

    logger_cfg = types.SimpleNamespace(name="mlflow", tracking_uri=uri, experiment="faults")
    result = Result(model="vae", optimizer="adam", lr=1e-3, latent_dim=2, seed=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    return MlflowTracker(logger_cfg, {"lr": 1e-3}, result, out_dir, multirun=True)


def lock_held(lock: Path) -> bool:
    import fcntl

    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_a_new_sqlite_store_is_opened_and_migrated_under_the_lock(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason='logger=mlflow needs MLflow: pip install "vaebench[mlflow]"')
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = tmp_path / "mlflow.db"
    held = []
    real = SqlAlchemyStore.__init__

    def opening(self, *args, **kwargs):  # where MLflow creates and migrates a new store's tables
        held.append(lock_held(Path(str(db) + ".lock")))
        real(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "__init__", opening)
    tracker = tracker_for(f"sqlite:///{db}", tmp_path / "run")
    assert tracker.client and held and all(held)


def test_a_resumed_job_ends_the_run_its_killed_attempt_left_running(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = tracker_for(uri, tmp_path / "job")  # its process was killed: the run stays RUNNING
    again = tracker_for(uri, tmp_path / "job")
    client = again.client
    experiment = client.get_experiment_by_name("faults").experiment_id
    active = client.search_runs([experiment])
    assert [r.info.run_id for r in active] == [again.run_id] and active[0].info.status == "RUNNING"
    assert client.get_run(killed.run_id).info.status == "KILLED"
    assert client.get_run(killed.run_id).info.lifecycle_stage == "deleted"


def test_a_dead_server_costs_one_warning_line_and_no_retry_lines(tmp_path, capsys, caplog):
    import logging
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_log = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(run_log)
    try:
        with caplog.at_level(logging.INFO):
            tracker = tracker_for(f"http://127.0.0.1:{port}", tmp_path / "job")
    finally:
        logging.getLogger().removeHandler(run_log)
        run_log.close()
    assert tracker.client is False
    err = capsys.readouterr().err
    assert one_error_line(err).startswith("vaebench: warning: mlflow tracking at") and "Retrying" not in err
    assert "Retrying" not in caplog.text and "mlflow tracking at" not in caplog.text  # not twice on a console
    assert "mlflow tracking at" in (tmp_path / "run.log").read_text()  # run.log keeps its copy


# ---- 10: SLURM (Submitit): a resume submits only what is unfinished; a line per job; the summary counts all ----

def submitit_launcher_config(sweep_dir: Path, *overrides: str):
    """The main process's view of a Submitit sweep (the config and the loader Hydra hands the launcher)."""
    pytest.importorskip("submitit", reason="install vaebench[cluster]")
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext, RunMode

    from vaebench.cli import conf_dir
    from vaebench.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("config", overrides=["hydra/launcher=slurm_cpu", f"hydra.sweep.dir={sweep_dir}",
                                                                *overrides], run_mode=RunMode.MULTIRUN)
        return types.SimpleNamespace(config=config, hydra_context=HydraContext(config_loader=loader,
                                                                               callbacks=Callbacks()))


def test_a_resume_on_a_cluster_submits_only_the_unfinished_jobs(tmp_path):
    from omegaconf import open_dict, read_write

    from conftest import TINY
    from vaebench import cluster

    launcher = submitit_launcher_config(tmp_path / "sweep", "lr=1e-3,1e-2", *TINY)
    jobs = [["lr=0.001", *TINY], ["lr=0.01", *TINY]]
    assert cluster.finished_jobs(launcher, jobs) == {}  # a new sweep: nothing composed, everything submitted
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, jobs[1])
    out_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    with read_write(sweep_config), open_dict(sweep_config):
        del sweep_config["hydra"]
    result = run(sweep_config, out_dir, multirun=True)  # what the job did on its node
    assert result["status"] == "ok"
    found = cluster.finished_jobs(launcher, jobs)
    assert list(found) == [1] and found[1]["config_hash"] == result["config_hash"]
    again = submitit_launcher_config(tmp_path / "sweep", "lr=1e-3,1e-2", *TINY, "resume=false")
    assert cluster.finished_jobs(again, [[*job, "resume=false"] for job in jobs]) == {}


def test_a_collected_cluster_job_prints_its_progress_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit", reason="install vaebench[cluster]")
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from vaebench import cluster
    from vaebench.results import Result, write_result

    write_result(tmp_path, Result(status="ok", model="vae", optimizer="adam", lr=1e-3, latent_dim=2, seed=0,
                                  epochs_run=3, val_recon_mse=0.05))

    class Done:
        def results(self):
            return [JobReturn(overrides=["lr=0.001"], status=JobStatus.COMPLETED, _return_value=0.05,
                              hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}}))]

    monkeypatch.setattr(cluster, "total_jobs", 6)
    monkeypatch.setattr(cluster, "collected", 2)
    cluster.Collected(Done(), ["lr=0.001"]).results()
    assert capsys.readouterr().out.startswith("[3/6] vae adam lr=0.001 latent=2 seed=0 -> ok val_mse=0.05")


def test_the_summary_of_a_sweep_with_a_cancelled_job_counts_it(tmp_path, monkeypatch, caplog):
    import logging

    from omegaconf import OmegaConf

    from vaebench import cluster, sweep

    monkeypatch.setenv(sweep.INVOCATION_ENV, json.dumps({"id": "x", "jobs": 6, "started": 0}))
    (tmp_path / sweep.PROGRESS_FILE).write_text("".join(json.dumps({"status": "ok", "sweep": "x"}) + "\n" for _ in range(5)))
    monkeypatch.setattr(cluster, "unfinished_jobs", 1)
    with caplog.at_level(logging.INFO, logger="vaebench.sweep"):
        sweep.SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "sweep done: 6 jobs (1 no result, 5 ok)" in caplog.text


def test_the_cluster_extra_pins_the_submitit_versions_vaebench_patches():
    import re
    from importlib import metadata

    from packaging.specifiers import SpecifierSet

    from conftest import REPO

    text = (REPO / "pyproject.toml").read_text()
    pins = dict(re.findall(r'"(submitit|hydra-submitit-launcher)([^"]+)"', text.split("cluster = [", 1)[1].split("]", 1)[0]))
    assert set(pins) == {"submitit", "hydra-submitit-launcher"} and all("<" in p for p in pins.values())
    for name, pin in pins.items():
        try:
            assert metadata.version(name) in SpecifierSet(pin)
        except metadata.PackageNotFoundError:
            pass


@pytest.mark.slow  # two sweeps on Submitit's local executor: one process per job
def test_a_resumed_submitit_sweep_submits_nothing_finished_and_prints_a_line_per_job(tmp_path):
    import re

    from conftest import TINY

    grid = ["-m", "hydra/launcher=local", "lr=1e-3,1e-2", *TINY, "hydra.sweep.dir=sweep"]
    first = run_cli(*grid, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stdout.splitlines() if re.match(r"\[\d+/2\] ", line)]
    assert len(lines) == 2 and all("-> ok" in line for line in lines)
    submitted = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir())
    again = run_cli(*grid, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir()) == submitted  # nothing queued
    assert len([line for line in again.stdout.splitlines() if "-> skipped" in line]) == 2
    assert "sweep done: 2 jobs (2 skipped)" in again.stdout + again.stderr
