"""Data from files: every format, the preparation steps, the cache, and a clear refusal of each bad input.
Every test writes its own small files under tmp_path; test_data_real.py reads real TCGA files from $VAEBENCH_REAL_DATA."""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import composed, run_cli
from vaebench.data import files, load_dataset, synthetic
from vaebench.data.config import (H5adDataConfig, Mad, NanPolicy, ScalerFit, Scaling, TableDataConfig,
                                  XenaDataConfig)
from vaebench.errors import UserError
from vaebench.data.split import split_indices


def write_table(path: Path, x: np.ndarray, samples=None, genes=None, sep="\t", extra: dict | None = None,
                id_header="sample_id") -> Path:
    """samples x genes as text, float32 values written with 9 significant digits (an exact round trip)."""
    samples = samples or [f"S{i}" for i in range(x.shape[0])]
    genes = genes or [f"G{j}" for j in range(x.shape[1])]
    extra = extra or {}
    lines = [sep.join([id_header, *genes, *extra])]
    for i, row in enumerate(x):
        cells = [format(float(v), ".9g") if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append(sep.join([samples[i], *cells, *(str(col[i]) for col in extra.values())]))
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def table(tmp_path: Path, path: Path, **options) -> TableDataConfig:
    return TableDataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **options)


def cache_entries(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def refused(cfg, *fragments: str, names: str | None = None) -> str:
    """Loading cfg fails with one line naming the file and each fragment, and adds nothing to the cache."""
    before = cache_entries(Path(cfg.cache_dir).parent)
    with pytest.raises(UserError) as caught:
        load_dataset(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert (names or cfg.path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert cache_entries(Path(cfg.cache_dir).parent) == before
    return message


def rng_matrix(n: int, g: int, seed: int = 0, low: float = 0.0, high: float = 10.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=(n, g)).astype(np.float32)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    span = x.max(axis=0) - x.min(axis=0)
    return ((x - x.min(axis=0)) / np.where(span == 0, 1, span)).astype(np.float32)


def assert_scaled(actual: np.ndarray, x: np.ndarray) -> None:
    """actual is x min-max scaled per gene (to float32 rounding: the loader multiplies where this divides)."""
    np.testing.assert_allclose(np.asarray(actual), minmax(x), rtol=0, atol=1e-7)


# ---- formats ------------------------------------------------------------------------------------------

SYNTHETIC = synthetic.generate(n_samples=60, n_genes=25, n_types=3, rank=3, noise=0.35, seed=0)


@pytest.mark.parametrize("name", ["m.tsv", "m.csv", "m.tsv.gz", "m.csv.gz", "m.parquet"])
def test_synthetic_matrix_written_as_a_table_loads_back_equal(tmp_path, name):
    s = SYNTHETIC
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame = pd.DataFrame(s.x, index=pd.Index(s.sample_ids, name="sample_id"), columns=s.gene_names)
        frame["type"] = s.labels
        frame.to_parquet(path)
    else:
        write_table(path, s.x, s.sample_ids, s.gene_names, sep="," if ".csv" in name else "\t",
                    extra={"type": s.labels})
    data = load_dataset(table(tmp_path, path, label_column="type"))
    assert np.array_equal(np.asarray(data.x), s.x)  # bit for bit: scaling an already scaled matrix changes nothing
    assert (data.sample_ids, data.gene_names, data.labels) == (s.sample_ids, s.gene_names, s.labels)
    assert data.x.dtype == np.float32 and data.preprocessing["labels"]["column"] == "type"


def test_header_without_a_name_for_the_id_column_as_r_writes_it(tmp_path):
    x = rng_matrix(6, 3)
    path = write_table(tmp_path / "m.tsv", x)
    path.write_text(path.read_text().replace("sample_id\t", "", 1))
    data = load_dataset(table(tmp_path, path))
    assert data.gene_names == ["G0", "G1", "G2"] and data.sample_ids[0] == "S0"
    assert_scaled(data.x, x)


def test_npy_matrix_with_labels_by_row_number(tmp_path):
    x = rng_matrix(8, 5)
    np.save(tmp_path / "m.npy", x)
    (tmp_path / "labels.tsv").write_text("row\ttype\n" + "".join(f"{i}\t{'ab'[i % 2]}\n" for i in range(8)))
    data = load_dataset(table(tmp_path, tmp_path / "m.npy", labels_path=str(tmp_path / "labels.tsv")))
    assert_scaled(data.x, x)
    assert data.sample_ids == [str(i) for i in range(8)] and data.labels == list("abababab")


def write_xena(path: Path, x_genes_by_samples: np.ndarray, gene_ids: list[str], samples: list[str]) -> Path:
    lines = ["\t".join(["sample", *samples])]
    lines += ["\t".join([g, *(format(float(v), ".9g") for v in row)]) for g, row in zip(gene_ids, x_genes_by_samples)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_xena_matrix_is_transposed_and_its_gene_ids_cleaned_as_tybalt_did(tmp_path):
    ids = ["A|1", "B|2", "?|3", "C|4", "C|5", "D|6"]
    x = rng_matrix(6, 7)  # genes x samples
    x[2, 0] = np.nan  # in the '?' row, which is dropped before NaNs are looked for
    path = write_xena(tmp_path / "HiSeqV2.gz", x, ids, [f"TCGA-{i}" for i in range(7)])
    data = load_dataset(XenaDataConfig(path=str(path), n_genes=None, cache_dir=str(tmp_path / "cache")))
    assert data.gene_names == ["A", "B", "D"] and data.sample_ids == [f"TCGA-{i}" for i in range(7)]
    assert_scaled(data.x, x[[0, 1, 5]].T)
    assert data.preprocessing["xena_dropped_unknown_genes"] == 1
    assert data.preprocessing["xena_dropped_duplicated_genes"] == 2


def compose_data(*overrides: str):
    return OmegaConf.to_object(composed(*overrides).data)


def tybalt_reference(path: Path, n_genes: int) -> pd.DataFrame:
    """greenelab/tybalt process_data.py, step for step (pandas<2's DataFrame.mad spelt out; sklearn's
    MinMaxScaler arithmetic spelt out, as neither exists here)."""
    rnaseq_df = pd.read_table(path, index_col=0)
    rnaseq_df.index = rnaseq_df.index.map(lambda x: x.split("|")[0])
    rnaseq_df.columns = rnaseq_df.columns.str.slice(start=0, stop=15)
    rnaseq_df = rnaseq_df.drop("?").fillna(0).sort_index(axis=1)
    rnaseq_df = rnaseq_df.drop("DUP", axis=0).T
    mad_genes = (rnaseq_df - rnaseq_df.mean()).abs().mean().sort_values(ascending=False, kind="stable")
    subset = rnaseq_df.loc[:, mad_genes.iloc[:n_genes].index]
    span = subset.max() - subset.min()
    scale = 1 / span.where(span != 0, 1)
    return subset * scale + (0 - subset.min() * scale)


def test_data_tybalt_reproduces_tybalts_preparation(tmp_path):
    rng = np.random.default_rng(3)
    samples = [f"TCGA-{rng.integers(10, 99)}-{i:04d}-0{i % 2 + 1}A-11R-A00Z-07" for i in range(40)]
    rng.shuffle(samples)
    genes = [f"GENE{j}|{j}" for j in range(30)] + ["?|100", "DUP|7", "DUP|8"]
    x = rng.normal(8, 2, size=(len(genes), 40)) * rng.uniform(0.1, 3, size=(len(genes), 1))
    x[4, 7] = x[31, 2] = np.nan
    x[9] = 5.0  # a constant gene
    path = write_xena(tmp_path / "HiSeqV2", x, genes, samples)
    path = path.rename(tmp_path / "HiSeqV2.gz")
    data = load_dataset(compose_data("data=tybalt", f"data.path={path}", "data.n_genes=12",
                                     f"data.cache_dir={tmp_path / 'cache'}"))
    expected = tybalt_reference(path, 12)
    assert data.gene_names == list(expected.columns) and data.sample_ids == list(expected.index)
    assert np.array_equal(np.asarray(data.x), expected.to_numpy().astype(np.float32))
    assert data.preprocessing["nan_replaced"] == 1  # the other NaN was in the '?' row


def test_h5ad_with_sparse_x_obs_labels_and_layers(tmp_path):
    anndata = pytest.importorskip("anndata", reason="anndata is the optional extra vaebench[h5ad]")
    from scipy import sparse

    x = rng_matrix(12, 6)
    x[x < 3] = 0
    adata = anndata.AnnData(X=sparse.csr_matrix(x), layers={"counts": np.round(x * 10)})
    adata.obs_names = [f"cell{i}" for i in range(12)]
    adata.var_names = [f"g{j}" for j in range(6)]
    adata.obs["cell_type"] = pd.Categorical(["t", "b", "nk"] * 4)
    adata.write_h5ad(tmp_path / "a.h5ad")
    cfg = H5adDataConfig(path=str(tmp_path / "a.h5ad"), label_column="cell_type", n_genes=None,
                         cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg)
    assert_scaled(data.x, x)
    assert data.sample_ids == list(adata.obs_names) and data.gene_names == list(adata.var_names)
    assert data.labels == ["t", "b", "nk"] * 4
    cfg.layer = "counts"
    assert_scaled(load_dataset(cfg).x, np.round(x * 10))
    cfg.layer = "spliced"
    refused(cfg, "no layer 'spliced' (layers: counts)", "data.layer")


def test_h5ad_without_anndata_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "a.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    monkeypatch.setitem(sys.modules, "anndata", None)  # import anndata now raises ImportError
    refused(H5adDataConfig(path=str(tmp_path / "a.h5ad"), cache_dir=str(tmp_path / "cache")),
            "needs the optional package anndata", "pip install -e '.[h5ad]' in the vaebench clone")


# ---- labels -------------------------------------------------------------------------------------------

def test_labels_from_a_side_file_in_any_order_with_extra_rows(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(6, 3))
    rows = [("S5", "x", "p"), ("S0", "y", "q"), ("OTHER", "z", "r"), ("S1", "x", "p"), ("S2", "y", "q"),
            ("S3", "x", "p"), ("S4", "y", "q")]
    labels = tmp_path / "labels.csv"
    labels.write_text("sample_id,cohort,sample_type\n" + "".join(",".join(r) + "\n" for r in rows))
    data = load_dataset(table(tmp_path, path, labels_path=str(labels), label_column="sample_type"))
    assert data.labels == ["q", "p", "q", "p", "q", "p"]
    refused(table(tmp_path, path, labels_path=str(labels)), "2 label columns (cohort, sample_type)",
            "data.label_column", names=str(labels))


def test_labels_file_that_does_not_match_the_samples_is_refused(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(6, 3))
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\ttype\n" + "".join(f"S{i}\tt\n" for i in range(4)))
    refused(table(tmp_path, path, labels_path=str(labels)), "no row for 2 of the 6 samples (first: 'S4')",
            names=str(labels))
    labels.write_text("id\ttype\n" + "".join(f"S{i}\tt\n" for i in [0, 1, 2, 3, 4, 5, 3]))
    refused(table(tmp_path, path, labels_path=str(labels)), "duplicated sample id", "'S3'", names=str(labels))
    labels.write_text("id\ttype\n" + "".join(f"S{i}\t{'t' if i != 2 else ''}\n" for i in range(6)))
    refused(table(tmp_path, path, labels_path=str(labels)), "sample 'S2' has an empty label", names=str(labels))


def test_tybalt_labels_match_sample_ids_cut_to_15_characters_and_spelt_with_dots(tmp_path):
    """Issue 16: tybalt's preparation cuts sample ids to 15 characters; label tables spell them in full, and
    R writes TCGA-22-4593-01 as TCGA.22.4593.01. Labels match once both are spelt the same way."""
    samples = [f"TCGA.22.459{i}.01" for i in range(6)]  # a matrix written by R: '.' for '-'
    xena = write_xena(tmp_path / "x.gz", rng_matrix(3, 6), ["A|1", "B|2", "C|3"], samples)
    labels = tmp_path / "labels.tsv"
    labels.write_text("sampleID\ttype\n" + "".join(f"TCGA-22-459{i}-01A\t{'ab'[i % 2]}\n" for i in range(6)))
    cfg = XenaDataConfig(path=str(xena), n_genes=None, sample_id_length=15, labels_path=str(labels),
                         cache_dir=str(tmp_path / "cache"))
    assert load_dataset(cfg).labels == ["a", "b", "a", "b", "a", "b"]
    labels.write_text("sampleID\ttype\n" + "".join(f"TCGA-99-459{i}-01A\tt\n" for i in range(6)))
    refused(cfg, "has no row for 6 of the 6 samples (first: 'TCGA.22.4590.01')",
            "cut to data.sample_id_length=15 characters", "this file's first id: 'TCGA-99-4590-01A'",
            names=str(labels))


def test_label_column_missing_from_the_table_is_refused(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(6, 3))
    refused(table(tmp_path, path, label_column="cancer_type"), "no column 'cancer_type'", "data.labels_path")


# ---- preparation --------------------------------------------------------------------------------------

def test_log1p_then_top_genes_by_median_mad_largest_first(tmp_path):
    rng = np.random.default_rng(1)
    spreads = np.array([1, 50, 5, 500, 0, 20], dtype=np.float64)  # gene 4 is constant
    counts = np.round(100 + spreads * rng.random((40, 6)) * 10)
    path = write_table(tmp_path / "counts.tsv", counts.astype(np.float32))
    data = load_dataset(table(tmp_path, path, log1p=True, n_genes=3))
    logged = np.log1p(counts)
    mad = np.median(np.abs(logged - np.median(logged, axis=0)), axis=0)
    top = list(np.argsort(-mad)[:3])
    assert data.gene_names == [f"G{j}" for j in top] and top[0] == 3
    assert_scaled(data.x, logged[:, top])
    assert data.preprocessing["log1p"] and data.preprocessing["n_genes_in_file"] == 6


def test_median_and_mean_mad_rank_an_outlier_gene_differently(tmp_path):
    x = np.zeros((20, 2), dtype=np.float32)
    x[:, 0] = np.tile([0.0, 1.0], 10)  # spread everywhere: MAD 0.5 both ways
    x[:, 1] = 0.3
    x[0, 1] = 100.0  # one outlier: median AD 0, mean AD about 9.5
    path = write_table(tmp_path / "m.tsv", x)
    assert load_dataset(table(tmp_path, path, n_genes=1)).gene_names == ["G0"]
    assert load_dataset(table(tmp_path, path, n_genes=1, mad=Mad.mean)).gene_names == ["G1"]


def test_constant_gene_scales_to_zero_and_fewer_genes_than_asked_warns(tmp_path, caplog):
    x = rng_matrix(10, 3)
    x[:, 1] = 7.0
    path = write_table(tmp_path / "m.tsv", x)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(table(tmp_path, path, n_genes=5000))
    assert "data.n_genes=5000, but" in caplog.text and "has 3 genes: using all of them" in caplog.text
    assert data.gene_names == ["G0", "G1", "G2"] and not np.asarray(data.x)[:, 1].any()
    assert np.asarray(data.x).min() == 0 and np.asarray(data.x).max() == 1


def test_nan_policy_zero_reads_missing_values_as_zero(tmp_path):
    x = rng_matrix(8, 3, low=1)
    path = tmp_path / "m.tsv"
    write_table(path, x)
    path.write_text(path.read_text().replace(format(float(x[2, 1]), ".9g"), "NA", 1))
    data = load_dataset(table(tmp_path, path, nan_policy=NanPolicy.zero))
    filled = x.copy()
    filled[2, 1] = 0
    assert_scaled(data.x, filled)
    assert data.preprocessing["nan_replaced"] == 1


def test_scaling_none_keeps_a_unit_range_file_and_refuses_others(tmp_path):
    x = rng_matrix(8, 3, high=1)
    data = load_dataset(table(tmp_path, write_table(tmp_path / "unit.tsv", x), scaling=Scaling.none))
    assert np.array_equal(np.asarray(data.x), x)
    refused(table(tmp_path, write_table(tmp_path / "big.tsv", x * 3), scaling=Scaling.none),
            "data.scaling=none, but its values run from", "set data.scaling=zeroone")


def test_scaler_fit_on_the_training_split_only(tmp_path):
    x = rng_matrix(50, 4)
    labels = [f"t{i % 3}" for i in range(50)]
    path = write_table(tmp_path / "m.tsv", x, extra={"type": labels})
    cfg = table(tmp_path, path, label_column="type", scaler_fit=ScalerFit.train)
    with pytest.raises(ValueError, match="val_fraction and seed"):
        load_dataset(cfg)
    data = load_dataset(cfg, val_fraction=0.2, seed=7)
    train, val = split_indices(50, labels, 0.2, 7)
    low, high = x[train].min(axis=0), x[train].max(axis=0)
    expected = np.clip((x.astype(np.float32) - low) * (np.float32(1) / (high - low)), 0, 1)
    np.testing.assert_allclose(np.asarray(data.x), expected, atol=1e-6)
    assert np.asarray(data.x)[train].min() == 0 and np.asarray(data.x)[train].max() == 1
    assert not np.array_equal(np.asarray(data.x)[val], minmax(x)[val])  # validation rows fit nothing
    other = load_dataset(cfg, val_fraction=0.2, seed=8)
    assert other.fingerprint != data.fingerprint
    assert data.preprocessing["scaler_fit"] == "train" and data.preprocessing["split_seed"] == 7
    assert len(cache_entries(tmp_path)) == 2  # one entry (.npy + .json) serves every split


# ---- cache --------------------------------------------------------------------------------------------

def test_cache_hit_memory_maps_without_reading_the_file(tmp_path, monkeypatch):
    path = write_table(tmp_path / "m.tsv.gz", rng_matrix(20, 5))
    first = load_dataset(table(tmp_path, path))
    assert len(cache_entries(tmp_path)) == 2

    def no_reading(*args, **kwargs):
        raise AssertionError("the cached matrix should have been used")

    monkeypatch.setattr(files, "read_table", no_reading)
    second = load_dataset(table(tmp_path, path))
    assert isinstance(second.x, np.memmap) and np.array_equal(second.x, np.asarray(first.x))
    assert (second.fingerprint, second.preprocessing) == (first.fingerprint, first.preprocessing)


def test_the_split_keys_reuse_the_cache_entry(tmp_path):
    """Issue 22: data.test_fraction=0.2 on the same file and preparation wrote a second entry of the same
    fingerprint; the split's keys choose rows of the prepared matrix after the cache."""
    path = write_table(tmp_path / "m.tsv", rng_matrix(20, 5))
    first = load_dataset(table(tmp_path, path))
    entries = cache_entries(tmp_path)
    for options in ({"test_fraction": 0.2}, {"split_seed": 3}):
        assert load_dataset(table(tmp_path, path, **options)).fingerprint == first.fingerprint
        assert cache_entries(tmp_path) == entries


def test_changed_file_or_setting_makes_a_new_entry(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(20, 5))
    first = load_dataset(table(tmp_path, path))
    stat = path.stat()
    write_table(path, rng_matrix(20, 5, seed=1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even within the same clock tick
    second = load_dataset(table(tmp_path, path))
    assert second.fingerprint != first.fingerprint and not np.array_equal(second.x, first.x)
    load_dataset(table(tmp_path, path, n_genes=2))
    assert len(cache_entries(tmp_path)) == 6


def test_runs_that_start_together_build_one_whole_entry(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(300, 200))
    cfg = table(tmp_path, path)
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:  # spawn: no copy of this process
        prints = [data.fingerprint for data in pool.map(load_dataset, [cfg] * 3)]
    assert len(set(prints)) == 1
    assert [p.rsplit(".", 1)[1] for p in cache_entries(tmp_path)] == ["json", "npy"]  # no temp file left
    assert load_dataset(cfg).fingerprint == prints[0]


# ---- bad input ----------------------------------------------------------------------------------------

def test_missing_file_directory_and_empty_file_are_refused(tmp_path):
    refused(table(tmp_path, tmp_path / "nope.tsv"), "does not exist", "check data.path")
    refused(table(tmp_path, tmp_path), "is not a file")
    (tmp_path / "empty.tsv").write_text("")
    refused(table(tmp_path, tmp_path / "empty.tsv"), "is empty (0 bytes)")
    (tmp_path / "empty.tsv.gz").write_bytes(gzip.compress(b""))
    refused(table(tmp_path, tmp_path / "empty.tsv.gz"), "has no header line")
    (tmp_path / "header.tsv").write_text("sample_id\tG0\tG1\n")
    refused(table(tmp_path, tmp_path / "header.tsv"), "has a header but no data rows")
    labels = tmp_path / "labels.tsv"
    refused(table(tmp_path, write_table(tmp_path / "m.tsv", rng_matrix(6, 2)), labels_path=str(labels)),
            "labels file", "does not exist", "check data.labels_path", names=str(labels))


def test_corrupt_gzip_is_refused(tmp_path):
    good = write_table(tmp_path / "good.tsv.gz", rng_matrix(400, 30)).read_bytes()
    (tmp_path / "cut.tsv.gz").write_bytes(good[: len(good) // 2])
    refused(table(tmp_path, tmp_path / "cut.tsv.gz"), "cannot be read to the end", "download it again")
    (tmp_path / "junk.tsv.gz").write_bytes(b"\x1f\x8b" + b"junk" * 50)
    refused(table(tmp_path, tmp_path / "junk.tsv.gz"), "is not a readable gzip file", "download it again")


def test_non_numeric_cell_is_named_by_row_and_column(tmp_path):
    x = rng_matrix(3000, 4).astype(object)  # the bad cell deep in the file: found by a second, text-only read
    x[2500, 2] = "n/a?"
    message = refused(table(tmp_path, write_table(tmp_path / "m.tsv", x)),
                      "row 'S2500' (line 2502), column 'G2' holds 'n/a?', which is not a number")
    assert "data.label_column" in message  # the hint for a label column that was not declared


def test_ragged_row_is_refused(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(5, 3))
    path.write_text(path.read_text() + "S9\t1\t2\n")
    refused(table(tmp_path, path), "not a well-formed tab-separated table", "Expected 4 columns, got 3")


def test_nan_and_inf_are_counted_and_located(tmp_path):
    path = tmp_path / "m.tsv"
    x = rng_matrix(6, 4, low=1)
    write_table(path, x)
    text = path.read_text()
    for i, j in [(1, 2), (4, 0)]:
        text = text.replace(format(float(x[i, j]), ".9g"), "nan", 1)
    path.write_text(text)
    refused(table(tmp_path, path), "2 missing (NaN) values, first at sample 'S1', gene 'G2'", "data.nan_policy=zero")
    path.write_text(text.replace("nan", "inf", 1))
    refused(table(tmp_path, path, nan_policy=NanPolicy.zero), "1 infinite values, first at sample 'S1', gene 'G2'")


def test_duplicated_sample_ids_or_gene_names_are_refused(tmp_path):
    x = rng_matrix(5, 3)
    refused(table(tmp_path, write_table(tmp_path / "s.tsv", x, samples=["A", "B", "A", "C", "D"])),
            "1 duplicated sample ids (first: 'A')")
    refused(table(tmp_path, write_table(tmp_path / "g.tsv", x, genes=["TP53", "EGFR", "TP53"])),
            "1 duplicated gene names (first: 'TP53')")
    xena = write_xena(tmp_path / "x.gz", x.T, ["A|1", "B|2", "C|3"], ["TCGA-01-0001-01A", "TCGA-01-0001-01B",
                                                                      "P2", "P3", "P4"])
    refused(XenaDataConfig(path=str(xena), sample_id_length=15, cache_dir=str(tmp_path / "cache")),
            "duplicated sample id (cut to data.sample_id_length=15 characters)", "'TCGA-01-0001-01'")


def test_too_few_samples_and_negative_values_under_log1p_are_refused(tmp_path):
    refused(table(tmp_path, write_table(tmp_path / "few.tsv", rng_matrix(3, 4))), "holds 3 samples",
            "at least 4")
    x = rng_matrix(6, 3, low=-1, high=5)
    x[0, 0] = 2.0
    x[1, 2] = -0.5
    refused(table(tmp_path, write_table(tmp_path / "log.tsv", x), log1p=True),
            "data.log1p=true, but", "first at sample 'S", "set data.log1p=false")


def test_file_of_another_format_is_pointed_to_its_loader(tmp_path):
    (tmp_path / "a.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    refused(table(tmp_path, tmp_path / "a.h5ad"), "is an HDF5 file", "data=h5ad")
    path = write_table(tmp_path / "m.tsv", rng_matrix(6, 2))
    refused(H5adDataConfig(path=str(path), cache_dir=str(tmp_path / "cache")), "not an HDF5 (.h5ad) file",
            "data=table")


@pytest.mark.long(3)
def test_cli_refuses_a_bad_file_with_one_line_and_exit_2(tmp_path):
    path = write_table(tmp_path / "m.tsv", rng_matrix(6, 2))
    path.write_text(path.read_text().replace("\t", "\tx", 1).replace("S3\t", "S3\tgarbage", 1))
    done = run_cli("data=table", f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vaebench: error: data file '{path}': row 'S3' (line 5)") and "not a number" in last
    assert "Traceback" not in done.stderr and cache_entries(tmp_path) == []


@pytest.mark.slow  # test_scaler_fit_on_the_training_split_only checks the same in-process
def test_cli_trains_on_a_table_with_the_scaler_fit_on_the_training_split(tmp_path):
    labels = [f"t{i % 2}" for i in range(40)]
    path = write_table(tmp_path / "m.csv", rng_matrix(40, 6), sep=",", extra={"kind": labels})
    done = run_cli("data=table", f"data.path={path}", "data.label_column=kind", "data.scaler_fit=train", "seed=3",
                   f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1", "trainer.batch_size=16",
                   "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok", result["error"]
    assert result["n_features"] == 6
    assert result["data"]["scaler_fit"] == "train" and result["data"]["split_seed"] == 3
    assert result["data"]["n_fit_samples"] == result["n_train"]


def test_raw_counts_without_log1p_warn_with_the_fix_on_every_load(tmp_path, caplog):
    """Issue 16: BRCA RSEM values up to 1e6 trained without data.log1p and without a word."""
    rng = np.random.default_rng(0)
    counts = rng.negative_binomial(2, 0.002, size=(30, 8)).astype(np.float32)  # reads: whole, up to thousands
    path = write_table(tmp_path / "counts.tsv", counts)
    for _ in range(2):  # the first load builds the cache entry, the second reads it: both warn
        caplog.clear()
        load_dataset(table(tmp_path, path))
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and str(path) in warned[0] and "set data.log1p=true" in warned[0], warned
        assert "100% whole numbers" in warned[0] and "\n" not in warned[0]
    tpm = counts * rng.uniform(0.5, 1.5, size=counts.shape).astype(np.float32)  # not whole, still heavy-tailed
    tpm[0, 0] = 100 * counts.max()
    for quiet, x in (("log1p", counts), ("logged", np.log2(counts + 1)), ("scaled", rng_matrix(30, 8, high=1))):
        caplog.clear()
        load_dataset(table(tmp_path, write_table(tmp_path / f"{quiet}.tsv", x), log1p=quiet == "log1p"))
        assert not [r for r in caplog.records if r.levelname == "WARNING"], quiet
    caplog.clear()
    load_dataset(table(tmp_path, write_table(tmp_path / "tpm.tsv", tpm)))
    assert "x the median positive value" in caplog.text and "set data.log1p=true" in caplog.text
