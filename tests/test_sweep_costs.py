"""What a sweep worker does once and shares between its jobs (issue 23) gives the numbers of doing each part on
its own, and every job says what its parts cost (result.json `timing`, run.log's last line)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import make_config
from vaebench import baselines
from vaebench.config import validate
from vaebench.latent import label_scores, posterior
from vaebench.models.base import row_variance
from vaebench.precheck import checked_data
from vaebench.task import run
from vaebench.train import fit

# Parts that are times or where the run was written, not numbers it computed.
NOT_NUMBERS = ("timing", "wall_time_s", "baseline_seconds", "nll_seconds", "latent_seconds", "started_at",
               "finished_at", "peak_memory_mb")


@pytest.fixture(scope="module")
def trained():
    typed = validate(make_config("trainer.max_epochs=3", "data.n_samples=400", "data.n_types=4"))
    data, split = checked_data(typed)
    x = torch.tensor(np.asarray(data.x))
    outcome = fit(typed, x, split.train, split.val)
    return typed, data, split, x, outcome


def test_shared_scoring_gives_the_fields_of_each_part_computed_alone(trained):
    typed, data, split, x, outcome = trained
    model, batch = outcome.model, typed.trainer.batch_for(len(split.train))
    key = baselines.split_key(data.fingerprint, split.train, split.val)

    def assess():
        return baselines.assess(model, typed.model, x, data.labels, key, split.train, split.val,
                                outcome.final["val_recon_mse"], batch, typed.seed, latent_scores=True, nll_samples=8)

    baselines._cache.clear()
    shared = assess()
    assert shared["latent_ari"] is not None and shared["val_nll_is"] is not None  # every part ran
    # Each part on its own, nothing kept from the call above: the validation rows encoded by the diagnostics and
    # again by the latent scores, as before they shared one posterior.
    baselines._cache.clear()
    pca = baselines.fit_pca(x, split.train, model.latent_dim)
    alone = {**baselines.posterior_diagnostics(*posterior(model, x[torch.as_tensor(split.val)], batch)),
             **baselines.likelihood_scores(model, x, pca, key, split.val, 8, batch, typed.seed),
             **baselines.latent_scores_with_references(model, typed.model, x, data.labels, key, pca, split.train,
                                                       split.val, batch, typed.seed)}
    compared = [k for k in alone if k not in NOT_NUMBERS]
    assert len(compared) > 20
    assert {k: shared[k] for k in compared} == {k: alone[k] for k in compared}
    # and from the worker's cache (a later job of the same split): the same again
    again = assess()
    assert {k: v for k, v in again.items() if k not in NOT_NUMBERS} == {
        k: v for k, v in shared.items() if k not in NOT_NUMBERS}


def test_the_decoder_variance_kept_per_split_trains_the_same_bits(trained):
    typed, _, split, x, _ = trained
    assert typed.model.learned_variance  # the default objective's calibrated decoder
    kept = row_variance(x, torch.as_tensor(split.train))
    plain, shared = fit(typed, x, split.train, split.val), fit(typed, x, split.train, split.val, gene_variance=kept)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in plain.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in shared.history]
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, shared.model.state_dict()[name]), name


def test_latent_scores_are_the_same_with_the_blas_held_to_one_thread():
    rng = np.random.default_rng(0)
    y = np.array([f"t{i}" for i in rng.integers(0, 5, 300)])
    z = rng.normal(size=(300, 8)) + 0.5 * np.array([int(t[1:]) for t in y])[:, None]
    threads = torch.get_num_threads()
    try:
        scores = []
        for n in (1, 2):  # a sweep worker's one thread (BLAS limited to it), a single run's two
            torch.set_num_threads(n)
            scores.append(label_scores(z[:240], y[:240], z[240:], y[240:], seed=0))
    finally:
        torch.set_num_threads(threads)
    assert scores[0] == scores[1] and scores[0]["latent_probe_balanced_accuracy"] is not None


def test_a_workers_second_job_gives_the_first_jobs_numbers_and_both_say_what_their_parts_cost(tmp_path, caplog):
    baselines._cache.clear()
    cfg = make_config("data.n_samples=300", "data.n_types=4")
    with caplog.at_level(logging.INFO, logger="vaebench.task"):
        first, second = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")  # the second from the worker's caches
    assert first["status"] == second["status"] == "ok"
    assert {k: v for k, v in first.items() if k not in NOT_NUMBERS} == {
        k: v for k, v in second.items() if k not in NOT_NUMBERS}
    for result in (first, second):
        timing = result["timing"]
        assert {"setup", "data", "epochs", "training_other", "baselines", "nll", "latent"} <= set(timing)
        assert min(timing.values()) >= 0 and timing["epochs"] > 0
    assert second["timing"]["imports"] == 0  # a process imports once, its first job says so
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("timing ")]
    assert len(lines) == 2 and all('"result"' in line for line in lines)  # the log's copy adds the result's write


def test_a_sweeps_jobs_compose_as_hydra_composes_each_one_and_a_bad_value_gets_hydras_error():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from conftest import GROUPS
    from vaebench.cli import conf_dir
    from vaebench.config import register_configs
    from vaebench.sweep import compose_jobs

    jobs = [["model=iwae", "lr=0.01"], ["+experiment=demo", "seed=2"], ["data=table", "data.path=/x/m.tsv"],
            ["data.n_samples=300", "trainer.batch_size=auto", "model=infovae"], ["model.hidden_dims=[64,32]"],
            ["objective=paper", "optimizer=sgd", "lr=0.1"], ["logger=mlflow", "logger.tracking_uri=http://h:5000"]]
    hydra_calls = []
    register_configs()

    def hydra(overrides: list[str]):
        hydra_calls.append(overrides)
        return compose(config_name="config", overrides=overrides)

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        for job, cfg in zip(jobs, compose_jobs(jobs, hydra, GROUPS)):
            whole = compose(config_name="config", overrides=job)
            assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(whole) and OmegaConf.is_struct(cfg), job
        assert ["data.n_samples=300", "trainer.batch_size=auto", "model=infovae"] not in hydra_calls  # a copy's changes
        with pytest.raises(ConfigCompositionException, match="Error merging override lr=abc"):
            compose_jobs([["lr=abc"]], hydra, GROUPS)
        # A setting changed before another override adds it: Hydra applies them in order and refuses the change.
        for job in (["newkey=2", "+newkey=1"], ["newkey.x=2", "+newkey={x: 1}"]):
            with pytest.raises(ConfigCompositionException):
                compose(config_name="config", overrides=job)
            with pytest.raises(ConfigCompositionException):
                compose_jobs([job], hydra, GROUPS)
        (added,) = compose_jobs([["+newkey=1", "newkey=2"]], hydra, GROUPS)  # in this order Hydra takes both
        assert added.newkey == compose(config_name="config", overrides=["+newkey=1", "newkey=2"]).newkey == 2


def test_hydras_check_of_a_batch_composes_each_set_of_group_options_once_with_hydras_error():
    """Before it launches a batch, Hydra checks that every job composes (Sweeper.validate_batch_is_legal; a sweep
    installs vaebench.sweep.check_batch for it): each distinct set of group options is composed once, not each job."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from vaebench.cli import conf_dir
    from vaebench.config import register_configs
    from vaebench.sweep import check_batch

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        master = compose(config_name="config", return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        composed = []

        def load_sweep_config(master_config, sweep_overrides):
            composed.append(sweep_overrides)
            return loader.load_sweep_config(master_config, sweep_overrides)

        sweeper = SimpleNamespace(config=master, hydra_context=SimpleNamespace(
            config_loader=SimpleNamespace(load_sweep_config=load_sweep_config)))
        grid = [[f"lr={lr}", f"latent_dim={d}", f"seed={s}"] for lr in (1e-3, 1e-2) for d in (5, 10) for s in (0, 1)]
        check_batch(sweeper, grid + [["model=iwae", "lr=0.1"], ["model=iwae", "lr=0.2"]])
        assert composed == [[], ["model=iwae"]]  # 10 jobs, 2 compositions
        with pytest.raises(ConfigCompositionException, match="Error merging override lr=abc"):
            check_batch(sweeper, [["lr=0.1"], ["lr=abc"]])


def test_a_sweep_installs_that_check_for_hydras_sweeper(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.plugins.sweeper import Sweeper

    from conftest import TINY
    from vaebench import sweep
    from vaebench.cli import conf_dir
    from vaebench.config import register_configs

    monkeypatch.setattr(Sweeper, "validate_batch_is_legal", Sweeper.validate_batch_is_legal)  # Hydra's, afterwards
    monkeypatch.setenv(sweep.INVOCATION_ENV, "")  # what on_multirun_start sets for the jobs, restored after
    monkeypatch.setattr(sweep, "current_dir", None)
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        config = compose(config_name="config", overrides=[*TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         return_hydra_config=True)
        sweep.SweepCallback().on_multirun_start(config)
    assert Sweeper.validate_batch_is_legal is sweep.check_batch
