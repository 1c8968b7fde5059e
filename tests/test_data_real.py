"""Real TCGA matrices from shared/data beside the repository (see its README); skipped where absent."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from vaebench.data import load_dataset
from vaebench.data.config import TableDataConfig, XenaDataConfig
from vaebench.errors import UserError

SHARED = REPO.parent / "shared" / "data"
PAIRED, BRCA = "tcga11_paired_metagsca", "tcga_brca_gsalightning"
pytestmark = pytest.mark.skipif(not (SHARED / f"{PAIRED}.xena.tsv.gz").is_file(),
                                reason=f"the real TCGA files are not there ({SHARED}); they live outside the repo")


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
