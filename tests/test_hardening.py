"""Issue 12: each way a hostile-but-realistic user got a wrong result, a traceback or a lost run, reproduced.
Item numbers are the issue's."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, make_config, run_cli
from vaebench.data.split import split_indices
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
    assert proc.stderr.strip() == f"vaebench: error: {says}" or says in proc.stderr
    assert not list(tmp_path.rglob("result.json")) and "Traceback" not in proc.stderr


def test_largest_seed_trains_and_scores(tmp_path):
    result = run(make_config("seed=4294967295", "data.n_types=3"), tmp_path)
    assert result["status"] == "ok" and isinstance(result["latent_ari"], float)
