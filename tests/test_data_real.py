"""Real TCGA matrices, from the directory the environment variable VAEBENCH_REAL_DATA names (the files below,
outside the repository); skipped, with the reason, where it is not set or lacks them:

    VAEBENCH_REAL_DATA=/path/to/data .venv/bin/pytest tests/test_data_real.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vaebench.data import load_dataset
from vaebench.data.config import TableDataConfig, XenaDataConfig
from vaebench.errors import UserError

ENV = "VAEBENCH_REAL_DATA"
SHARED = Path(os.environ.get(ENV) or "/nonexistent")
PAIRED, BRCA = "tcga11_paired_metagsca", "tcga_brca_gsalightning"
FILES = [f"{PAIRED}.tsv.gz", f"{PAIRED}.xena.tsv.gz", f"{PAIRED}.labels.tsv", f"{BRCA}.tsv.gz", f"{BRCA}.labels.tsv"]
pytestmark = pytest.mark.skipif(
    not all((SHARED / f).is_file() for f in FILES),
    reason=(f"set {ENV} to a directory with the real TCGA files ({', '.join(FILES)})" if not os.environ.get(ENV)
            else f"{ENV}={SHARED} lacks some of {', '.join(FILES)}"))


def test_table_and_xena_layouts_of_the_same_data_prepare_the_same_matrix(tmp_path):
    common = dict(labels_path=str(SHARED / f"{PAIRED}.labels.tsv"), label_column="cohort", n_genes=500,
                  cache_dir=str(tmp_path))
    samples_by_genes = load_dataset(TableDataConfig(path=str(SHARED / f"{PAIRED}.tsv.gz"), **common))
    genes_by_samples = load_dataset(XenaDataConfig(path=str(SHARED / f"{PAIRED}.xena.tsv.gz"), **common))
    assert samples_by_genes.shape == (1204, 500) and len(set(samples_by_genes.labels)) == 11
    assert np.array_equal(samples_by_genes.x, genes_by_samples.x)
    assert samples_by_genes.fingerprint == genes_by_samples.fingerprint
    assert samples_by_genes.preprocessing["n_genes_in_file"] == 3341


def test_log1p_on_raw_counts_and_refused_on_log_values(tmp_path):
    brca = load_dataset(TableDataConfig(path=str(SHARED / f"{BRCA}.tsv.gz"), log1p=True, n_genes=300,
                                        labels_path=str(SHARED / f"{BRCA}.labels.tsv"), cache_dir=str(tmp_path)))
    assert brca.shape == (1218, 300) and sorted(set(brca.labels)) == ["Control", "Experiment"]
    assert brca.x.min() == 0 and brca.x.max() == 1
    with pytest.raises(UserError, match="values are negative .* set data.log1p=false"):
        load_dataset(TableDataConfig(path=str(SHARED / f"{PAIRED}.tsv.gz"), log1p=True, cache_dir=str(tmp_path)))
