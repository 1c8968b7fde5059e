"""The built-in data set: TCGA-like shape and range, seeded, cached once and memory-mapped after."""

from __future__ import annotations

import numpy as np
import pytest

from vaebench.data import load_dataset, synthetic
from vaebench.data.config import SyntheticDataConfig


def config(tmp_path, **kw) -> SyntheticDataConfig:
    return SyntheticDataConfig(n_samples=400, n_genes=120, cache_dir=str(tmp_path), **kw)


def test_matrix_is_bounded_labelled_and_low_rank(tmp_path):
    data = load_dataset(config(tmp_path, n_types=5))
    x = np.asarray(data.x)
    assert x.shape == (400, 120) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and np.allclose(x.min(0), 0) and np.allclose(x.max(0), 1)
    assert len(data.labels) == 400 and len(set(data.labels)) == 5
    assert len(set(data.sample_ids)) == 400 and len(set(data.gene_names)) == 120
    spectrum = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    assert spectrum[:12].sum() / spectrum.sum() > 0.6  # a low-rank programme, not noise


def test_same_seed_same_matrix_other_seed_other_matrix(tmp_path):
    a = synthetic.generate(300, 50, 4, 6, 0.35, seed=1)
    b = synthetic.generate(300, 50, 4, 6, 0.35, seed=1)
    c = synthetic.generate(300, 50, 4, 6, 0.35, seed=2)
    assert np.array_equal(a.x, b.x) and a.labels == b.labels
    assert not np.array_equal(a.x, c.x)


def test_second_load_comes_from_the_cache_memory_mapped(tmp_path, monkeypatch):
    first = load_dataset(config(tmp_path))
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: pytest.fail("regenerated despite the cache"))
    second = load_dataset(config(tmp_path))
    assert isinstance(second.x, np.memmap)
    assert np.array_equal(np.asarray(first.x), np.asarray(second.x))
    assert second.fingerprint == first.fingerprint and second.labels == first.labels


def test_other_parameters_make_another_entry(tmp_path):
    a = load_dataset(config(tmp_path))
    b = load_dataset(config(tmp_path, seed=1))
    assert a.fingerprint != b.fingerprint
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob("*.tmp"))


def test_a_corrupt_entry_is_rebuilt(tmp_path):
    expected = np.array(load_dataset(config(tmp_path)).x)
    (npy,) = tmp_path.glob("*.npy")
    npy.unlink()  # a new file, not an in-place write: the first load's memory map still points at the old one
    npy.write_bytes(b"garbage")
    assert np.array_equal(np.asarray(load_dataset(config(tmp_path)).x), expected)
