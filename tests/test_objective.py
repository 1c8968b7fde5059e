"""The objective group: the calibrated ELBO is the default, the study's objective one override away, and the
study's experiments train exactly as before the default changed (their config hashes pinned)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import composed, make_config
from vaebench.config import schema_defaults, validate
from vaebench.models import LossMode
from vaebench.models.base import DecoderVariance
from vaebench.config import Stopping
from vaebench.results import config_hash, device_identity
from vaebench.task import run


def cpu_hash(*overrides: str) -> str:
    cfg = composed(*overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return config_hash(device_identity(resolved, "cpu"), schema_defaults(validate(cfg)))


def test_the_default_objective_is_the_calibrated_elbo():
    typed = validate(composed())
    assert typed.model.loss_mode is LossMode.elbo and typed.model.decoder_variance is DecoderVariance.gene
    assert typed.trainer.stopping is Stopping.patience and typed.trainer.batch_size == "auto"
    for model in ("iwae", "infovae", "logcosh"):  # every model, not only the one the defaults name
        assert validate(composed(f"model={model}")).model.decoder_variance is DecoderVariance.gene


def test_the_study_objective_is_one_override_away():
    typed = validate(composed("objective=paper"))
    assert typed.model.loss_mode is LossMode.paper and typed.trainer.stopping is Stopping.study
    assert typed.trainer.batch_size == 1000 and typed.model.decoder_variance is DecoderVariance.fixed
    fixed = validate(composed("objective=elbo_fixed"))
    assert fixed.model.loss_mode is LossMode.elbo and fixed.model.decoder_variance is DecoderVariance.fixed


@pytest.mark.parametrize("overrides,pinned", [
    # hashes that commit d3a11c5 (before the default objective changed) gave the same command lines
    (["+experiment=paper_grid", "lr=1e-3", "latent_dim=20", "optimizer=rmsprop", "model=iwae"], "f561431d2b414c88"),
    (["+experiment=study_tcga11", "data.path=a.tsv", "data.labels_path=b.tsv", "lr=1e-2", "latent_dim=10",
      "optimizer=adam", "seed=1"], "2a78109c6f0e9cf7"),
    (["+experiment=study_tcga11_elbo", "data.path=a.tsv", "data.labels_path=b.tsv", "lr=1e-2", "latent_dim=10",
      "optimizer=adam", "seed=1", "model=logcosh"], "fb7d20a82bd86a37"),
])
def test_the_study_experiments_keep_their_config_hashes(overrides, pinned):
    # Same hash: the same resolved configuration, so the same training and numbers, and old sweeps resume.
    assert cpu_hash(*overrides) == pinned


def test_a_default_run_learns_and_records_its_likelihood(tmp_path):
    # The default objective and batch size (auto), on data a little larger than the tests' tiny set.
    out = tmp_path / "run"
    run(make_config("data.n_samples=300", "data.n_genes=60", "trainer.max_epochs=8", "trainer.batch_size=auto"), out)
    result = json.loads((out / "result.json").read_text())
    assert result["batch_size"] == 27  # auto: a tenth of the 270 training rows
    assert result["recon_vs_mean"] < 0.9 and not result["collapsed"]
    assert result["decoder_variance"] is not None and result["nll_is_samples"] == 64
    assert result["val_nll_is"] is not None and result["baseline_ppca_nll"] is not None
    assert result["nll_vs_ppca"] == pytest.approx(result["val_nll_is"] - result["baseline_ppca_nll"])
    assert 1 <= result["kl_units_90"] <= 20
