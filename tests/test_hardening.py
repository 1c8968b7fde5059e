"""Issue 12: each way a hostile-but-realistic user got a wrong result, a traceback or a lost run, reproduced.
Item numbers are the issue's."""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, UNSCORED, make_config, run_cli
from test_data import SYNTHETIC, refused, rng_matrix, table, write_table
from vaebench.data import cache, load_dataset
from vaebench.data.config import SyntheticDataConfig
from vaebench.data.split import split_indices
from vaebench.results import Result, read_result, write_result
from vaebench.latent import FIELDS, label_scores, too_few_rows
from vaebench.task import run


# ---- 2: a tiny validation set gave perfect latent scores ---------------------------------------------

@pytest.mark.parametrize("n, n_labels", [(60, 30), (600, 30), (11000, 30), (50, 1), (37, 5)])
def test_split_has_val_fraction_of_the_rows_however_many_labels(n, n_labels):
    labels = [f"t{i}" for i in np.random.default_rng(n).integers(0, n_labels, n)]
    train, val = split_indices(n, labels, 0.1, seed=0)
    assert len(val) == round(0.1 * n)  # stratum by stratum rounding gave 2 of 60 (issue: n_val = 2)
    assert sorted([*train, *val]) == list(range(n))
    assert set(np.asarray(labels)[train]) == set(labels)  # every label keeps a training row


def test_too_few_validation_rows_or_one_row_per_label_give_null_scores_with_a_reason():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((40, 3))
    two = np.array(["a", "b"])
    assert label_scores(z, np.tile(two, 20), z[:4], np.tile(two, 2), seed=0) == dict.fromkeys(FIELDS)
    assert "4 validation rows" in too_few_rows(np.tile(two, 2))
    one_each = np.array([f"s{i}" for i in range(12)])  # one label per sample scored ARI 1.0
    assert label_scores(z, np.tile(two, 20), z[:12], one_each, seed=0) == dict.fromkeys(FIELDS)
    assert "12 of 12 labels have fewer than 2 validation rows" in too_few_rows(one_each)
    assert too_few_rows(np.repeat(two, 6)) is None


def test_a_run_with_tiny_strata_records_null_scores_and_the_note(tmp_path):
    result = run(make_config("data.n_samples=60", "data.n_types=30"), tmp_path)
    assert result["n_val"] == 6 and result["status"] == "ok"
    assert all(result[f] is None for f in FIELDS) and "validation rows" in result["latent_note"]
    ok = run(make_config("data.n_types=3"), tmp_path / "fine")
    assert all(isinstance(ok[f], float) for f in FIELDS) and ok["latent_note"] is None


# ---- 3 and 9: seeds and values no consumer accepts are config errors ----------------------------------

@pytest.mark.parametrize("override, says", [
    ("seed=4294967296", "config key 'seed': must be in 0 ... 4294967295"),
    ("lr=inf", "config key 'lr': must be a finite number, got inf"),
    ("lr=1e300", "config key 'lr': must be > 0 and fit a float32"),
    ("trainer.rel_tol=nan", "config key 'trainer.rel_tol': must be a finite number"),
    ("model.kld_weight=inf", "config key 'model.kld_weight': must be a finite number"),
])
def test_out_of_range_seed_and_non_finite_values_exit_2_with_one_line(override, says, tmp_path):
    proc = run_cli(override, *TINY, cwd=tmp_path)
    assert proc.returncode == 2
    assert says in proc.stderr and len((proc.stdout + proc.stderr).strip().splitlines()) == 1  # 21: said once
    assert not list(tmp_path.rglob("result.json")) and "Traceback" not in proc.stderr


def test_largest_seed_trains_and_scores(tmp_path):
    result = run(make_config("seed=4294967295", "data.n_types=3"), tmp_path)
    assert result["status"] == "ok" and isinstance(result["latent_ari"], float)


# ---- 5: result.json was written 0600 ------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_result_and_cache_files_get_the_umask_permissions(umask, tmp_path):
    old = os.umask(umask)
    try:
        write_result(tmp_path, Result(status="ok"))
        cache.save(tmp_path / "cache", "k", SYNTHETIC)
    finally:
        os.umask(old)
    for path in (tmp_path / "result.json", tmp_path / "cache" / "k.npy", tmp_path / "cache" / "k.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# ---- data files: 6, 7, 10, 12, 16, 17, 18, 21 --------------------------------------------------------

def test_table_without_an_id_column_is_refused_not_short_of_a_gene(tmp_path):
    x = rng_matrix(8, 5)
    path = tmp_path / "noids.csv"
    path.write_text("\n".join([",".join(f"G{j}" for j in range(5))] +
                              [",".join(format(float(v), ".6g") for v in row) for row in x]) + "\n")
    refused(table(tmp_path, path), "first column ('G0') holds numbers", "add a column of ids")
    frame = pd.DataFrame(x, columns=[f"G{j}" for j in range(5)])
    frame.to_parquet(tmp_path / "noids.parquet")
    refused(table(tmp_path, tmp_path / "noids.parquet"), "first column ('G0') holds numbers")
    numbered = write_table(tmp_path / "numbered.csv", x, samples=[str(i + 1) for i in range(8)], sep=",")
    assert load_dataset(table(tmp_path, numbered)).shape == (8, 5)  # whole-number ids 1..8 are ids


def test_matrix_where_no_gene_varies_is_refused_and_many_constant_genes_warn(tmp_path, caplog):
    refused(table(tmp_path, write_table(tmp_path / "zero.tsv", np.zeros((8, 4), np.float32))),
            "no gene varies", "each of its 4 kept genes")
    x = rng_matrix(8, 4)
    x[:, 1] = 3.0
    with caplog.at_level(logging.WARNING):
        data = load_dataset(table(tmp_path, write_table(tmp_path / "some.tsv", x)))
    assert "1 of 4 genes are constant" in caplog.text and data.preprocessing["constant_genes"] == 1


def test_complex_and_object_npy_are_refused_for_what_they_are(tmp_path):
    np.save(tmp_path / "c.npy", rng_matrix(6, 3) * (1 + 1j))
    refused(table(tmp_path, tmp_path / "c.npy"), "holds complex numbers (complex64)", "np.abs(x) or x.real")
    np.save(tmp_path / "o.npy", np.array([[1, "a"], [2, "b"]] * 3, dtype=object), allow_pickle=True)
    message = refused(table(tmp_path, tmp_path / "o.npy"), "holds Python objects")
    assert "download" not in message


def latin1_table(path: Path, at_row: int, rows: int = 400) -> Path:
    x = rng_matrix(rows, 30)
    text = write_table(path, x).read_bytes()
    return path.write_bytes(text.replace(f"\nS{at_row}\t".encode(), f"\nSé{at_row}\t".encode("latin-1"))) and path


@pytest.mark.parametrize("at_row", [2, 300])  # in the header block, and past the first 8 KB (a traceback)
def test_latin1_table_is_named_as_an_encoding_problem_with_the_fix(at_row, tmp_path):
    path = latin1_table(tmp_path / "lat.tsv", at_row)
    refused(table(tmp_path, path), "is not UTF-8 text", f"line {at_row + 2} holds the byte 0xe9",
            "iconv -f latin1 -t utf-8")


def test_parquet_with_numbers_stored_as_text_names_the_column_type(tmp_path):
    frame = pd.DataFrame({"id": [f"S{i}" for i in range(6)], "G0": [f"{v:.1f}" for v in range(6)],
                          "G1": np.arange(6.0)})
    frame.to_parquet(tmp_path / "text.parquet")
    message = refused(table(tmp_path, tmp_path / "text.parquet"), "column 'G0' is stored as text", "astype(float)")
    assert "not a number" not in message


def test_one_sample_is_singular_and_refused_files_are_not_said_to_be_cached(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        refused(table(tmp_path, write_table(tmp_path / "one.tsv", rng_matrix(1, 3))), "holds 1 sample;")
    assert "cached" not in caplog.text


# ---- 8 and 13: the data cache ------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [np.nan, 7.5])
def test_cache_entry_overwritten_since_it_was_written_is_rebuilt(overwrite, tmp_path, caplog):
    cfg = SyntheticDataConfig(n_samples=40, n_genes=8, n_types=2, cache_dir=str(tmp_path))
    clean = np.array(load_dataset(cfg).x)
    (npy,) = tmp_path.glob("*.npy")
    np.save(npy, np.full_like(clean, overwrite))
    cache._verified.clear()  # a new process: nothing checked yet
    with caplog.at_level(logging.WARNING):
        again = load_dataset(cfg)
    assert "does not match its checksum" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.x), clean)


def test_unwritable_cache_runs_uncached_with_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("")  # below a file: no directory can be made, even by root (who ignores modes)
    with caplog.at_level(logging.WARNING):
        result = run(make_config(f"data.cache_dir={tmp_path / 'file' / 'cache'}"), tmp_path / "run")
    assert "cannot write the data cache" in caplog.text
    assert result["status"] == "ok" and read_result(tmp_path / "run")["status"] == "ok"


# ---- 4 and 15: SIGTERM / Ctrl-C stop the whole sweep, workers too ------------------------------------

LONG_GRID = ["-m", "lr=1e-4,1e-3,1e-2,1e-1", "data.n_samples=1500", "data.n_genes=300", "trainer.max_epochs=500",
             "trainer.rel_tol=0", "trainer.batch_size=128", "device=cpu", "hydra.sweep.dir=sweep",
             "hydra.launcher.n_jobs=2"]


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays in /proc until its new parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.long(10)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_sweep_and_its_workers_with_one_line(signum, tmp_path):
    exe = str(Path(sys.executable).with_name("vaebench"))
    proc = subprocess.Popen([exe, *LONG_GRID], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 600  # a loaded machine takes minutes to start a sweep
    while len(list((tmp_path / "sweep").rglob("metrics.csv"))) < 2 and time.time() < deadline:
        time.sleep(0.1)  # both workers are training
    workers = children(proc.pid)
    assert len(workers) >= 2
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: the terminal signals the whole process group
    else:
        proc.send_signal(signum)  # kill PID: the main process only; its workers trained on before
    try:
        _, err = proc.communicate(timeout=15)  # workers holding the pipes open would hang this
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err
    assert err.startswith(f"vaebench: interrupted by {signum.name}: stopped the sweep into sweep") and "resume" in err
    time.sleep(1)
    assert not [w for w in workers if running(w)]
    assert not list((tmp_path / "sweep").rglob("result.json"))  # nothing finished, nothing written after


# ---- 11: two identical sweeps into one directory -----------------------------------------------------

@pytest.mark.long(7)
def test_two_identical_sweeps_train_each_job_once_and_count_to_their_total(tmp_path):
    grid = ["-m", "lr=1e-3,1e-2", *UNSCORED, "hydra.sweep.dir=sweep", "hydra.launcher.n_jobs=1"]
    exe = str(Path(sys.executable).with_name("vaebench"))
    procs = [subprocess.Popen([exe, *grid], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    logs = [d.read_text() for d in (tmp_path / "sweep").glob("*/run.log")]
    assert len(logs) == 2
    assert all(log.count("-> ok") == 1 and log.count("skipped:") == 1 for log in logs)  # trained once each
    for out, _ in outs:
        counters = re.findall(r"^\[(\d+)/(\d+)\]", out, re.M)
        assert sorted(counters) == [("1", "2"), ("2", "2")], out


# ---- 14: a job whose directory cannot be written -----------------------------------------------------

@pytest.mark.long(6)
def test_a_job_that_cannot_write_its_directory_costs_one_line_and_the_others_run(tmp_path):
    (tmp_path / "sweep").mkdir()
    # The job's directory name: its overrides, sorted, without device (hydra.job.config.override_dirname.exclude_keys)
    blocked = ",".join(sorted(["lr=0.01", *(o for o in UNSCORED if not o.startswith("device="))]))
    (tmp_path / "sweep" / blocked).write_text("")  # a file where the directory should be: even root cannot write
    # n_jobs=1: the jobs in the launcher's process, where the blocked job's failure must not stop the next one either
    # (launcher.execute_job guards both paths; a worker's outcome coming back is every parallel sweep's).
    proc = run_cli("-m", "lr=0.001,0.01,0.1", *UNSCORED, "hydra.sweep.dir=sweep", "hydra.launcher.n_jobs=1", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vaebench: error:")]
    assert len(errors) == 1 and "job lr=0.01" in errors[0] and "cannot write its output" in errors[0]
    assert sorted(r["lr"] for r in map(read_result, (tmp_path / "sweep").glob("*")) if r) == [0.001, 0.1]


# ---- 20: found before launch, not after jobs started -------------------------------------------------

def test_drop_last_without_a_full_batch_is_a_config_error_before_any_job(tmp_path):
    proc = run_cli("-m", "trainer.drop_last=true", "trainer.batch_size=64,512", *TINY[:3], "device=cpu",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("vaebench: error: config key 'trainer.drop_last': 216 training rows")
    assert not (tmp_path / "sweep").exists() or not list((tmp_path / "sweep").rglob("run.log"))


def test_bad_file_among_swept_data_paths_stops_the_sweep_before_any_job(tmp_path):
    good = write_table(tmp_path / "good.tsv", rng_matrix(40, 6))
    bad = tmp_path / "bad.tsv"
    bad.write_text(good.read_text().replace("\tG2", "\tG1"))  # a duplicated gene name
    proc = run_cli("-m", "data=table", f"data.path={good},{bad}", f"data.cache_dir={tmp_path / 'cache'}",
                   "trainer.max_epochs=1", "trainer.batch_size=16", "device=cpu", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"vaebench: error: data file '{bad}'") and "duplicated" in proc.stderr
    assert not list((tmp_path / "sweep").rglob("run.log"))
