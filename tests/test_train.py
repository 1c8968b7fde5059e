"""The training loop and one job end to end, in-process on tiny data."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from conftest import make_config
from vaebench.config import validate
from vaebench.results import SCHEMA, read_result
from vaebench.task import run
from vaebench.data.split import split_indices
from vaebench.models import VAEConfig
from vaebench.train import batch_bounds, converged


def epoch(val_loss: float, val_recon: float) -> dict:
    return {"val_loss": val_loss, "val_recon": val_recon}


class TestStoppingRule:
    def test_needs_a_previous_epoch(self):
        assert not converged(None, epoch(1.0, 1.0), 0.01)

    def test_fires_when_loss_falls_and_recon_settles(self):
        assert converged(epoch(2.0, 1.000), epoch(1.9, 0.995), 0.01)

    def test_not_when_loss_rises(self):
        assert not converged(epoch(2.0, 1.000), epoch(2.1, 0.999), 0.01)

    def test_not_when_loss_is_flat(self):
        assert not converged(epoch(2.0, 1.0), epoch(2.0, 1.0), 0.01)

    def test_not_when_recon_still_moves(self):
        assert not converged(epoch(2.0, 1.0), epoch(1.5, 0.98), 0.01)  # 2 % change

    def test_relative_change_is_symmetric(self):
        assert converged(epoch(2.0, 1.000), epoch(1.9, 1.009), 0.01)
        assert not converged(epoch(2.0, 1.000), epoch(1.9, 1.011), 0.01)

    def test_non_finite_never_converges(self):
        assert not converged(epoch(2.0, 1.0), epoch(math.nan, 1.0), 0.01)

    def test_sequence_stops_at_the_first_settled_epoch(self):
        losses = [(5.0, 1.0), (4.0, 0.8), (4.5, 0.799), (3.0, 0.7), (2.9, 0.698), (2.8, 0.697)]
        rows = [epoch(*x) for x in losses]
        stop = next(i for i in range(1, len(rows)) if converged(rows[i - 1], rows[i], 0.01))
        assert stop + 1 == 5  # epoch 3 settled recon but its loss rose; epoch 5 is the first to satisfy both


class TestBatches:
    def test_keeps_the_remainder(self):
        assert batch_bounds(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]

    def test_drops_a_single_row_batch(self):
        assert batch_bounds(9, 4, drop_last=False) == [(0, 4), (4, 8)]

    def test_drop_last_as_the_study(self):
        assert batch_bounds(10, 4, drop_last=True) == [(0, 4), (4, 8)]
        assert batch_bounds(3, 4, drop_last=True) == []


class TestSplit:
    def test_ninety_ten_disjoint_and_seeded(self):
        train, val = split_indices(1000, None, 0.1, seed=3)
        assert len(val) == 100 and len(train) == 900
        assert not set(train) & set(val)
        again = split_indices(1000, None, 0.1, seed=3)
        assert np.array_equal(again[1], val)
        assert not np.array_equal(split_indices(1000, None, 0.1, seed=4)[1], val)

    def test_stratified_by_label(self):
        labels = ["a"] * 500 + ["b"] * 300 + ["c"] * 200
        _, val = split_indices(1000, labels, 0.1, seed=0)
        picked = [labels[i] for i in val]
        assert (picked.count("a"), picked.count("b"), picked.count("c")) == (50, 30, 20)


def test_kld_weight_auto_is_batch_over_n():
    def weights(**kw):
        return VAEConfig(**kw).kld_weights(1000, 9900, 1100)

    assert weights(loss_mode="paper") == pytest.approx((1000 / 9900, 1000 / 1100))
    assert weights(loss_mode="corrected") == pytest.approx((1000 / 9900, 1000 / 9900))
    assert weights(loss_mode="elbo") == (1.0, 1.0)  # the ELBO's KL weight
    assert weights(kld_weight=0.5) == (0.5, 0.5)
    assert weights(kld_weight=4, loss_mode="elbo") == (4.0, 4.0)  # a beta-VAE


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_each_model_trains_and_writes_a_valid_result(model, tmp_path):
    result = run(make_config(f"model={model}"), tmp_path)
    on_disk = read_result(tmp_path)
    assert on_disk == {**result, "schema": SCHEMA}
    assert result["status"] == "ok" and result["epochs_run"] == 2 and result["model"] == model
    assert 0 < result["val_recon_mse"] < 1
    assert result["n_train"] + result["n_val"] == 240 and result["n_features"] == 40
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["val_recon_mse"]) == pytest.approx(result["val_recon_mse"])
    assert json.loads((tmp_path / "result.json").read_text())["config"]["model"]["name"] == model


def epochs_without_timing(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_same_seed_same_numbers(tmp_path):
    a = run(make_config("model=infovae", "seed=7"), tmp_path / "a")
    b = run(make_config("model=infovae", "seed=7"), tmp_path / "b")
    c = run(make_config("model=infovae", "seed=8"), tmp_path / "c")
    assert a["val_loss"] == b["val_loss"] and a["val_recon_mse"] == b["val_recon_mse"]
    assert epochs_without_timing(tmp_path / "a") == epochs_without_timing(tmp_path / "b")
    assert c["val_loss"] != a["val_loss"]


def test_a_diverging_config_is_recorded_as_diverged(tmp_path):
    result = run(make_config("optimizer=sgd", "lr=1e4"), tmp_path)
    assert result["status"] == "diverged" and result["failed_epoch"] == 1 and result["epochs_run"] == 0
    assert result["val_recon_mse"] is None and "NaN" in result["error"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("fault, status, text", [("oom", "oom", "MemoryError"), ("error", "error", "RuntimeError"),
                                                 ("diverge", "diverged", "NaN")])
def test_injected_failures_become_results(fault, status, text, tmp_path):
    result = run(make_config(f"trainer.fault={fault}"), tmp_path)
    assert result["status"] == status and text in result["error"]
    assert read_result(tmp_path)["status"] == status
    assert result["failed_epoch"] == 1 and result["peak_memory_mb"] > 0


def test_a_real_cpu_out_of_memory_is_recorded_as_oom(tmp_path, monkeypatch):
    import vaebench.train as train

    def allocate_too_much(*args, **kwargs):  # what PyTorch's CPU allocator raises when memory runs out
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(train, "evaluate", allocate_too_much)
    result = run(make_config(), tmp_path)
    assert result["status"] == "oom" and "can't allocate memory" in result["error"]


def test_resume_skips_a_finished_run_and_reruns_errors(tmp_path):
    first = run(make_config(), tmp_path)
    stamp = (tmp_path / "result.json").stat().st_mtime_ns
    second = run(make_config(), tmp_path)
    assert second["skipped"] and second["val_recon_mse"] == first["val_recon_mse"]
    assert (tmp_path / "result.json").stat().st_mtime_ns == stamp
    forced = run(make_config("resume=false"), tmp_path)
    assert "skipped" not in forced
    changed = run(make_config("lr=1e-2"), tmp_path)  # another configuration in the same dir is not "finished"
    assert "skipped" not in changed

    failed = tmp_path / "failed"
    run(make_config("trainer.fault=error"), failed)
    assert "skipped" not in run(make_config("trainer.fault=error"), failed)  # `error` runs are retried


def test_range_errors_name_the_key():
    from vaebench.errors import UserError

    for override, key in [("latent_dim=0", "latent_dim"), ("lr=-1", "lr"), ("trainer.batch_size=1", "trainer.batch_size"),
                          ("model.hidden_dims=[]", "model.hidden_dims"),
                          ("model.kld_weight=abc", "model.kld_weight"), ("device=gpu", "device")]:
        with pytest.raises(UserError, match=f"'{key}'"):
            validate(make_config(override))


def test_cuda_requested_without_cuda_is_a_user_error(tmp_path):
    from vaebench.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="device"):
        run(make_config("device=cuda"), tmp_path)


def test_a_new_key_at_its_default_keeps_the_hash():
    """A later version adds a setting whose default keeps the old behaviour: the runs a sweep already
    finished keep their identity, so a resumed sweep skips them; set away from its default it is new."""
    import copy

    from omegaconf import OmegaConf

    from vaebench.config import schema_defaults
    from vaebench.results import config_hash

    cfg = make_config()
    typed = validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    defaults = schema_defaults(typed)
    before = config_hash(resolved, defaults)
    upgraded, upgraded_defaults = copy.deepcopy(resolved), copy.deepcopy(defaults)
    upgraded["trainer"]["new_knob"] = upgraded_defaults["trainer"]["new_knob"] = 1.0
    assert config_hash(upgraded, upgraded_defaults) == before
    upgraded["trainer"]["new_knob"] = 2.0
    assert config_hash(upgraded, upgraded_defaults) != before
    assert config_hash(resolved) != before  # without defaults every key counts (the old behaviour)


def test_paper_mode_averages_batches_unweighted_and_recon_mse_by_rows():
    from vaebench.train import EpochMeans

    for per_batch, expected_loss in ((True, (1.0 + 3.0) / 2), (False, (3 * 1.0 + 1 * 3.0) / 4)):
        sums = EpochMeans(per_batch)
        sums.add({"loss": torch.tensor(1.0), "recon_mse": torch.tensor(1.0)}, rows=3)
        sums.add({"loss": torch.tensor(3.0), "recon_mse": torch.tensor(3.0)}, rows=1)
        means = sums.means("val_")
        assert means["val_loss"] == pytest.approx(expected_loss)  # the study's unweighted mean in paper mode
        assert means["val_recon_mse"] == pytest.approx(1.5)  # always per row: compared with the baselines


class TestPatience:
    def stopper(self, patience, warmup=0):
        from vaebench.train import Stopper

        cfg = validate(make_config("trainer.stopping=patience", f"trainer.patience={patience}",
                                   f"model.kl_warmup_epochs={warmup}"))
        return Stopper(cfg)

    def test_stops_after_patience_epochs_without_improvement_and_reports_the_best(self):
        stopper, model = self.stopper(patience=2), torch.nn.Linear(1, 1)
        losses = [5.0, 4.0, 4.5, 4.2, 3.0]
        stopped_at = None
        history = []
        for epoch, loss in enumerate(losses, start=1):
            with torch.no_grad():
                model.weight.fill_(epoch)  # tells the epochs' weights apart
            history.append({"epoch": epoch, "val_loss": loss, "val_recon": loss})
            if stopper.update(history[-1], model):
                stopped_at = epoch
                break
        assert stopped_at == 4 and stopper.reason == "patience"  # epochs 3 and 4 did not beat epoch 2
        assert stopper.reported(history, model)["epoch"] == 2
        assert model.weight.item() == 2  # the best epoch's weights, not the last one's

    def test_waits_for_the_kl_warmup(self):
        stopper, model = self.stopper(patience=1, warmup=3), torch.nn.Linear(1, 1)
        rows = [{"epoch": e, "val_loss": v, "val_recon": v} for e, v in enumerate([1.0, 2.0, 3.0, 4.0], start=1)]
        assert [stopper.update(r, model) for r in rows] == [False, False, False, True]

    def test_a_run_records_why_it_stopped_and_its_best_epoch(self, tmp_path):
        result = run(make_config("trainer.stopping=patience", "trainer.patience=1", "trainer.max_epochs=15"),
                     tmp_path)
        assert result["stop_reason"] in ("patience", "max_epochs") and 1 <= result["best_epoch"] <= result["epochs_run"]
        with open(tmp_path / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        best = rows[result["best_epoch"] - 1]
        assert float(best["val_loss"]) == pytest.approx(min(float(r["val_loss"]) for r in rows))
        assert result["val_recon_mse"] == pytest.approx(float(best["val_recon_mse"]))  # the best epoch's numbers
        assert result["still_improving"] == (result["best_epoch"] == result["epochs_run"])


def test_split_seed_fixes_the_split_across_seeds():
    from vaebench.data.split import split_seed

    assert split_seed(validate(make_config("seed=4"))) == 4  # null: the run's seed, as before
    assert split_seed(validate(make_config("seed=4", "data.split_seed=0"))) == 0


def test_the_chosen_option_of_a_group_is_part_of_the_hash():
    """Every option's schema has its own name as default: vae and iwae, adam and sgd, each at its defaults,
    are still different runs (they were one identity, so the aggregate kept one of them)."""
    from omegaconf import OmegaConf

    from vaebench.config import schema_defaults
    from vaebench.results import config_hash

    def ident(*overrides):
        cfg = make_config(*overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        return config_hash(resolved, schema_defaults(validate(cfg)))

    hashes = {ident(f"model={m}", f"optimizer={o}") for m in ("vae", "iwae") for o in ("adam", "sgd")}
    assert len(hashes) == 4
    assert ident("model=vae", "optimizer=adam") == ident("model=vae", "optimizer=adam")
