"""Latent-space scores against labels: known answers on constructed spaces, null without labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import make_config
from vaebench.latent import FIELDS, label_scores
from vaebench.task import run


def clusters(n_per: int, centres: int, dim: int, spread: float, rng) -> tuple[np.ndarray, np.ndarray]:
    means = rng.normal(0, 50, size=(centres, dim))
    y = np.repeat(np.arange(centres), n_per)
    return means[y] + spread * rng.standard_normal((len(y), dim)), y.astype(str)


def test_separated_clusters_score_one():
    rng = np.random.default_rng(0)
    z_train, y_train = clusters(40, 4, 5, 0.1, rng)
    z_val, y_val = clusters(10, 4, 5, 0.1, np.random.default_rng(0))  # same centres, new points
    scores = label_scores(z_train, y_train, z_val, y_val, seed=0)
    assert scores["latent_ari"] == pytest.approx(1.0)
    assert scores["latent_nmi"] == pytest.approx(1.0)
    assert scores["latent_probe_balanced_accuracy"] == pytest.approx(1.0)
    assert scores["latent_silhouette"] > 0.9


def test_shuffled_labels_score_about_zero():
    rng = np.random.default_rng(1)
    z_train, y_train = clusters(100, 4, 5, 0.1, rng)
    z_val, y_val = clusters(100, 4, 5, 0.1, np.random.default_rng(1))
    scores = label_scores(z_train, rng.permutation(y_train), z_val, rng.permutation(y_val), seed=0)
    assert abs(scores["latent_ari"]) < 0.05 and scores["latent_nmi"] < 0.05
    assert abs(scores["latent_probe_balanced_accuracy"] - 0.25) < 0.1  # chance with 4 classes
    assert abs(scores["latent_silhouette"]) < 0.1


def test_one_label_or_non_finite_latents_give_null():
    z = np.random.default_rng(0).standard_normal((20, 3))
    assert label_scores(z, np.array(["a"] * 20), z, np.array(["a"] * 20), seed=0) == dict.fromkeys(FIELDS)
    bad = z.copy()
    bad[0, 0] = np.nan
    assert label_scores(bad, np.array(["a", "b"] * 10), z, np.array(["a", "b"] * 10), seed=0) == dict.fromkeys(FIELDS)


def test_a_run_on_labelled_data_records_the_scores(tmp_path):
    result = run(make_config("data.n_types=3"), tmp_path)
    assert all(isinstance(result[f], float) for f in FIELDS) and result["latent_seconds"] >= 0
    off = run(make_config("data.n_types=3", "trainer.latent_metrics=false"), tmp_path / "off")
    assert all(off[f] is None for f in FIELDS)


def test_a_collapsed_latent_space_scores_without_convergence_warnings():
    """Issue 16: k-means' ConvergenceWarning on collapsed runs leaked into every sweep's output."""
    from sklearn.exceptions import ConvergenceWarning

    y = np.repeat(np.array(["a", "b", "c", "d"]), 10)
    z = np.zeros((40, 3))
    z[::2] = 1.0  # two distinct points for four labels: k-means finds 2 clusters where it was asked for 4
    with pytest.warns() as caught:
        warnings.warn("sentinel")  # pytest.warns needs one warning; the scores must add none of their own
        scores = label_scores(z, y, z, y, seed=0)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)], [str(w.message) for w in caught]
    assert scores["latent_ari"] is not None


def test_the_probe_reports_each_labels_recall_and_the_worst():
    """Issue 22: on imbalanced labels the small label's recall is the number that says whether it is found."""
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    big, small = 190, 10
    # the small label sits half inside the big one: the probe finds about half of it
    z = np.concatenate([rng.normal(0, 1, (big, 2)), rng.normal([1.0, 0], 1, (small, 2))])
    y = np.array(["tumour"] * big + ["normal"] * small)
    scores = label_scores(z[::2], y[::2], z[1::2], y[1::2], seed=0)
    recall = scores["latent_probe_recall"]
    assert set(recall) == {"tumour", "normal"}
    assert scores["latent_probe_min_recall"] == min(recall.values()) == recall["normal"] < 0.5 < recall["tumour"]
    assert scores["latent_probe_balanced_accuracy"] == pytest.approx(np.mean(list(recall.values())))
    # the same number sklearn's balanced accuracy gives for that probe
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(z[::2])
    pred = LogisticRegression(max_iter=500).fit(scaler.transform(z[::2]), y[::2]).predict(scaler.transform(z[1::2]))
    assert scores["latent_probe_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[1::2], pred))
