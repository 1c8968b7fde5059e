"""What a run leaves to take away (model.pt, latent.csv, latent.h5ad), vaebench-embed, and the test split
(data.test_fraction) from the split to the aggregate's report. In-process and tiny."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import composed, make_config
from test_aggregate import table, write_run
from vaebench import aggregate as agg
from vaebench.artifacts import LATENT_FILE, LATENT_H5AD, MODEL_FILE, load_model
from vaebench.config import schema_defaults, validate
from vaebench.data.split import run_split, split_indices, split_rows
from vaebench.embed import main as embed_main
from vaebench.errors import UserError
from vaebench.latent import posterior
from vaebench.results import config_hash, read_result
from vaebench.task import run

QUICK = ["trainer.max_epochs=2", "trainer.batch_size=64", "device=cpu", "trainer.threads=1"]  # threads: as conftest.TINY
GENES = [f"gene{j}" for j in range(24)]


def counts_file(path, n=160, seed=0, genes=GENES):
    """A samples x genes table of counts with two kinds of sample (the label column), as a user's TSV."""
    rng = np.random.default_rng(seed)
    kind = np.arange(n) % 2
    x = rng.gamma(2.0, 20.0, size=(n, len(genes))) * (1 + 2 * kind[:, None] * (np.arange(len(genes)) % 3 == 0))
    frame = pd.DataFrame(np.round(x), columns=genes)
    frame.insert(0, "sample", [f"P{seed}-{i}" for i in range(n)])
    frame.to_csv(path, sep="\t", index=False)
    return frame


def table_config(path, *overrides):
    return composed(*QUICK, "data=table", f"data.path={path}", "data.log1p=true", "data.n_genes=16", *overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One single run on a counts table with a test split: its directory, result and input frame."""
    root = tmp_path_factory.mktemp("trained")
    frame = counts_file(root / "counts.tsv")
    out = root / "run"
    result = run(table_config(root / "counts.tsv", "data.test_fraction=0.2"), out)
    return out, result, frame, root


def test_a_single_run_saves_model_and_latent_table_by_default(trained):
    out, result, frame, _ = trained
    assert result["status"] == "ok" and (out / MODEL_FILE).is_file() and (out / LATENT_FILE).is_file()
    latent = pd.read_csv(out / LATENT_FILE)
    assert list(latent["sample_id"]) == list(frame["sample"])  # every sample once, in the data's order
    assert latent["split"].value_counts().to_dict() == {"train": result["n_train"], "val": result["n_val"],
                                                        "test": result["n_test"]}
    k = result["latent_dim"]
    assert [c for c in latent.columns if c.startswith(("mu_", "log_var_"))] == (
        [f"mu_{d}" for d in range(1, k + 1)] + [f"log_var_{d}" for d in range(1, k + 1)])


def test_the_saved_model_reloads_and_gives_the_same_latent_means(trained, tmp_path):
    out, result, _, _ = trained
    model, saved = load_model(out / MODEL_FILE)
    assert (saved["model"], saved["latent_dim"], saved["n_genes"]) == ("vae", result["latent_dim"], 16)
    assert saved["preparation"]["log1p"] and len(saved["preparation"]["genes"]) == 16
    # The training matrix as the run prepared it (from the cache), through the reloaded encoder.
    from vaebench.data import load_dataset

    typed = validate(table_config(out.parent / "counts.tsv", "data.test_fraction=0.2"))
    data = load_dataset(typed.data)
    assert saved["preparation"]["genes"] == data.gene_names
    mu, log_var = posterior(model, torch.from_numpy(np.array(data.x)), 64)
    latent = pd.read_csv(out / LATENT_FILE)
    # 9 significant digits give back each float32 value exactly.
    assert np.array_equal(latent.filter(like="mu_").to_numpy(np.float32), mu.astype(np.float32))
    assert np.array_equal(latent.filter(like="log_var_").to_numpy(np.float32), log_var.astype(np.float32))


def test_embed_prepares_a_new_matrix_like_the_training_data(trained, tmp_path, capsys):
    out, _, frame, _ = trained
    # The same samples in another file: genes in another order, an extra gene, a subset of rows.
    new = frame.iloc[::3][["sample", *GENES[::-1]]].assign(extra_gene=1.0)
    new.to_csv(tmp_path / "new.csv", index=False)
    embed_main([str(out), str(tmp_path / "new.csv"), "--out", str(tmp_path / "emb.csv")])
    assert "of 54 samples" in capsys.readouterr().out.strip().splitlines()[-1]
    emb = pd.read_csv(tmp_path / "emb.csv")
    latent = pd.read_csv(out / LATENT_FILE).set_index("sample_id").loc[emb["sample_id"]]
    assert np.allclose(emb.filter(like="mu_").to_numpy(), latent.filter(like="mu_").to_numpy(), atol=1e-6)
    # Truly new samples: values beyond the training range are clipped to [0, 1] by the saved scaler, no error.
    counts_file(tmp_path / "other.tsv", n=10, seed=5)
    embed_main([str(out / MODEL_FILE), str(tmp_path / "other.tsv"), "--out", str(tmp_path / "other.csv")])
    assert len(pd.read_csv(tmp_path / "other.csv")) == 10


def test_embed_refuses_a_matrix_without_the_models_genes(trained, tmp_path, capsys):
    out, _, frame, _ = trained
    model, saved = load_model(out / MODEL_FILE)
    missing = saved["preparation"]["genes"][3]
    frame.drop(columns=[missing]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(SystemExit) as stop:
        embed_main([str(out), str(tmp_path / "short.csv"), "--out", str(tmp_path / "x.csv")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks 1 of the model's 16 genes" in err[0] and f"'{missing}'" in err[0]
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit) as stop:  # no model there
        embed_main([str(tmp_path), str(tmp_path / "short.csv")])
    assert stop.value.code == 2 and "no saved model" in capsys.readouterr().err


def test_a_sweep_job_saves_nothing_unless_asked_and_resume_then_writes_it(tmp_path):
    cfg = make_config()
    first = run(cfg, tmp_path, multirun=True)
    assert not (tmp_path / MODEL_FILE).exists() and not (tmp_path / LATENT_FILE).exists()
    assert run(cfg, tmp_path, multirun=True).get("skipped")  # nothing asked for: the finished run is kept
    again = run(make_config("trainer.save_model=true"), tmp_path, multirun=True)
    assert "skipped" not in again and again["config_hash"] == first["config_hash"]  # same run, now with its model
    assert (tmp_path / MODEL_FILE).is_file() and not (tmp_path / LATENT_FILE).exists()
    assert run(make_config("trainer.save_model=true"), tmp_path, multirun=True).get("skipped")


def test_h5ad_input_gets_the_posterior_in_obsm(tmp_path):
    anndata = pytest.importorskip("anndata", reason="anndata is the optional extra vaebench[h5ad]")
    rng = np.random.default_rng(1)
    adata = anndata.AnnData(X=rng.random((120, 12)).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(120)]
    adata.var_names = [f"g{j}" for j in range(12)]
    adata.write_h5ad(tmp_path / "a.h5ad")
    cfg = composed(*QUICK, "data=h5ad", f"data.path={tmp_path / 'a.h5ad'}", "latent_dim=3")
    run(cfg, tmp_path / "run")
    latent = anndata.read_h5ad(tmp_path / "run" / LATENT_H5AD)
    assert list(latent.obs_names) == list(adata.obs_names)
    assert latent.obsm["X_vaebench"].shape == (120, 3) and latent.obsm["vaebench_log_var"].shape == (120, 3)
    table = pd.read_csv(tmp_path / "run" / LATENT_FILE)
    assert np.array_equal(latent.obsm["X_vaebench"], table.filter(like="mu_").to_numpy(np.float32))
    assert set(latent.obs["split"]) == {"train", "val"}


# ---- the test split ------------------------------------------------------------------------------------

def test_test_rows_are_disjoint_fixed_by_split_seed_and_the_same_for_every_seed():
    labels = [f"t{i % 5}" for i in range(300)]
    a = split_rows(300, labels, 0.1, seed=1, test_fraction=0.2, holdout_seed=0)
    assert len(a.test) == 60 and abs(len(a.val) - 30) <= 1
    assert not set(a.test) & set(a.train) and not set(a.test) & set(a.val) and not set(a.train) & set(a.val)
    assert len(a.train) + len(a.val) + len(a.test) == 300
    b = split_rows(300, labels, 0.1, seed=2, test_fraction=0.2, holdout_seed=0)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.val, b.val)  # the seed moves train/val only
    assert not np.array_equal(a.test, split_rows(300, labels, 0.1, 1, 0.2, holdout_seed=3).test)
    # Through the config: test rows by data.split_seed (0 when null), never by the run's seed.
    seeds = [run_split(validate(make_config(f"seed={s}", "data.test_fraction=0.25")), 240, None).test for s in (0, 7)]
    assert np.array_equal(*seeds)
    other = run_split(validate(make_config("data.split_seed=4", "data.test_fraction=0.25")), 240, None).test
    assert not np.array_equal(seeds[0], other)


def test_no_test_fraction_is_the_old_split_and_the_old_hash():
    for labels in (None, [f"t{i % 7}" for i in range(500)]):
        old_train, old_val = split_indices(500, labels, 0.1, 3)
        new = split_rows(500, labels, 0.1, 3)
        assert np.array_equal(new.train, old_train) and np.array_equal(new.val, old_val) and len(new.test) == 0
    cfg = make_config()
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    defaults = schema_defaults(validate(cfg))
    without_new_keys = copy.deepcopy(resolved)  # the config as it was before these keys existed
    del without_new_keys["data"]["test_fraction"]
    del without_new_keys["trainer"]["save_model"], without_new_keys["trainer"]["save_latent"]
    assert config_hash(resolved, defaults) == config_hash(without_new_keys, defaults)
    explicit = make_config("data.test_fraction=0", "trainer.save_model=true", "trainer.save_latent=false")
    assert config_hash(OmegaConf.to_container(explicit, resolve=True, enum_to_str=True), defaults) == \
        config_hash(resolved, defaults)
    assert config_hash(OmegaConf.to_container(make_config("data.test_fraction=0.1"), resolve=True,
                                              enum_to_str=True), defaults) != config_hash(resolved, defaults)


@pytest.mark.parametrize("override, says", [("data.test_fraction=1", "[0, 1)"),
                                            ("data.test_fraction=0.9", "leaves no training rows")])
def test_bad_test_fraction_names_the_key(override, says):
    with pytest.raises(UserError, match="data.test_fraction") as e:
        validate(make_config(override))
    assert says in str(e.value)


def test_a_test_split_of_one_row_is_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="240 samples give 1 test rows"):
        run(make_config("data.test_fraction=0.001"), tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_a_run_with_test_rows_records_test_scores_and_never_trains_on_them(trained):
    out, result, _, _ = trained
    assert result["n_test"] == 32 and result["n_train"] + result["n_val"] + result["n_test"] == 160
    for name in ("test_recon_mse", "test_baseline_mean_mse", "test_recon_vs_mean"):
        assert result[name] is not None and np.isfinite(result[name])
    assert result["test_recon_vs_mean"] == pytest.approx(result["test_recon_mse"] / result["test_baseline_mean_mse"])
    assert read_result(out)["n_test"] == 32
    without = make_config()
    plain = run(without, out.parent / "plain", multirun=True)
    assert plain["n_test"] == 0 and plain["test_recon_mse"] is None


def test_aggregate_scores_the_best_configuration_on_its_test_rows(tmp_path, capsys):
    # The best on validation (adam, lr 1e-3) is not the best on test: the report quotes its own test score.
    for opt, lr, val, test in [("adam", 1e-3, 0.50, 0.70), ("adam", 1e-2, 0.60, 0.55), ("sgd", 1e-3, 0.90, 0.92)]:
        for seed in (0, 1):
            write_run(tmp_path, f"{opt}-{lr}-{seed}", optimizer=opt, lr=lr, seed=seed, val_recon_mse=val,
                      recon_vs_mean=val, test_recon_mse=test / 10, test_recon_vs_mean=test + 0.01 * seed, n_test=40)
    table = agg.aggregate([tmp_path], tmp_path / "agg", None, ["png"])
    assert table.loc[0, "best's test_recon_vs_mean"] == pytest.approx(0.705)
    report = (tmp_path / "agg" / "report.md").read_text()
    assert "On the test rows (40 samples held out" in report and "test_recon_vs_mean = 0.705" in report
    assert "which read validation rows only" in report and "Test rows (data.test_fraction > 0)" in report
    # Results without test rows: no test column, no test sentence.
    plain = tmp_path / "plain"
    write_run(plain, "a", recon_vs_mean=0.5)
    table = agg.aggregate([plain], plain / "agg", None, ["png"])
    assert not any("test" in c for c in table.columns)
    assert "test rows" not in (plain / "agg" / "report.md").read_text()


def test_embed_reuses_a_scaler_fitted_on_the_training_rows_only(tmp_path):
    """data.scaler_fit=train scales in float32 with the training rows' range (test rows excluded): embedding the
    training file gives back latent.csv's numbers exactly."""
    counts_file(tmp_path / "counts.tsv")
    result = run(table_config(tmp_path / "counts.tsv", "data.scaler_fit=train", "data.test_fraction=0.25"),
                 tmp_path / "run")
    assert result["data"]["n_fit_samples"] == result["n_train"] == 104
    embed_main([str(tmp_path / "run"), str(tmp_path / "counts.tsv"), "--out", str(tmp_path / "emb.csv")])
    saved, again = pd.read_csv(tmp_path / "run" / LATENT_FILE), pd.read_csv(tmp_path / "emb.csv")
    assert np.array_equal(saved.filter(like="mu_").to_numpy(), again.filter(like="mu_").to_numpy())


def test_results_from_before_test_fraction_share_an_experiment_with_test_fraction_zero(tmp_path):
    """A sweep resumed after an upgrade keeps its old results (no data.test_fraction, no trainer.save_model in
    their config) beside new ones: one experiment, as the key's default is the old behaviour; 0.2 is another."""
    new = {"trainer": {"max_epochs": 30, "save_model": None}, "data": {"test_fraction": 0.0},
           "model": {"hidden_dims": [256]}}
    write_run(tmp_path, "old", seed=0)
    write_run(tmp_path, "new", seed=1, config=new)
    write_run(tmp_path, "saved", seed=2, config={**new, "trainer": {"max_epochs": 30, "save_model": True}})
    # Nor do keys outside a run's identity (results.NOT_IDENTITY): GPU sharing, the tracking server.
    write_run(tmp_path, "shared-gpu", seed=4, config={**new, "jobs_per_gpu": 2, "logger": {"experiment": "x"}})
    assert agg.experiments(table(tmp_path)).differ_in == []
    write_run(tmp_path, "held-out", seed=3, config={**new, "data": {"test_fraction": 0.2}})
    split = agg.experiments(table(tmp_path))
    assert split.differ_in == ["config.data.test_fraction"] and sorted(split.number) == [1, 1, 1, 1, 2]


def test_a_failed_save_keeps_the_trained_result(tmp_path, monkeypatch):
    """Saving model.pt / latent.csv can fail (disk, anndata); the run's result.json is written all the same."""
    frame_path = tmp_path / "counts.tsv"
    counts_file(frame_path)

    def broken_save(*args, **kwargs):
        raise ValueError("no space for latent.csv")

    monkeypatch.setattr("vaebench.artifacts.save", broken_save)
    result = run(table_config(frame_path, "trainer.save_model=true"), tmp_path / "run")
    assert result["status"] == "ok" and result["artifact_error"] == "ValueError: no space for latent.csv"
    assert read_result(tmp_path / "run")["artifact_error"] == result["artifact_error"]
    assert not (tmp_path / "run" / MODEL_FILE).exists()
