"""hydra/sweeper=optuna (issue 22): a failed run is a failed trial, the progress has a total, and vaebench-aggregate
reads a search, which has no factorial design."""

from __future__ import annotations

import math

import pytest
import yaml

from conftest import TINY, run_cli
from test_aggregate import table, table_with, write_run
from vaebench import aggregate as agg
from vaebench.search import objective_value


def test_a_successful_run_returns_its_value_and_a_failed_one_no_number():
    assert objective_value({"status": "ok", "val_recon_mse": 0.0123}) == 0.0123
    failed = objective_value({"status": "diverged", "failed_epoch": 3, "error": "loss is NaN\nmore"})
    # The Optuna sweeper float()s the return value: the ValueError it gets makes the trial FAIL, with this text.
    with pytest.raises(ValueError, match=r"^diverged in epoch 3: loss is NaN \(the trial failed"):
        float(failed)
    assert str(failed).startswith("diverged in epoch 3") and failed != 0 and failed is not None
    with pytest.raises(ValueError, match="^oom"):
        float(objective_value({"status": "oom", "failed_epoch": 1, "error": "CUDA out of memory"}))


def test_the_aggregate_reads_a_search_without_a_factorial_anova(tmp_path):
    # Eight trials, each its own learning rate (as Optuna's TPE draws them), two latent sizes.
    for i, lr in enumerate((1.1127e-4, 3.2341e-4, 7.7005e-4, 1.4413e-3, 2.9208e-3, 6.1852e-3, 1.3001e-2, 4.4517e-2)):
        write_run(tmp_path / "search", f"{i}", lr=lr, latent_dim=(5, 20)[i % 2], val_recon_mse=0.01 * (1 + abs(math.log10(lr) + 2.5)))
    agg.main([str(tmp_path / "search")])
    report = (tmp_path / "search" / "aggregate" / "report.md").read_text()
    assert "No factorial ANOVA: lr takes 8 values in 8 runs, most of them once: the runs are a search" in report
    effects = table_with(report, "Spearman ρ with y").set_index("hyper-parameter")
    assert effects.loc["lr", "values"] == "8" and effects.loc["latent_dim", "values"] == "2"
    assert "partial η²" not in report.split("## vae")[1].split("### Failures")[0]
    summary = table_with(report, "best configuration")
    assert summary["partial η² lr"].tolist() == ["—"]  # no number where there is no design
    assert agg.sensitivity(agg.successful(table(tmp_path / "search"), "val_recon_mse"), "val_recon_mse") is None
    # A grid's round values, one run each, are still a grid (its ANOVA says what it cannot estimate).
    assert agg.no_design(table(tmp_path / "search").assign(lr=[1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2])) is None


@pytest.mark.slow  # two trials through Optuna (about 10 s on 2 idle cores)
def test_an_optuna_search_reports_a_diverged_trial_as_failed_with_a_total(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='install vaebench[optuna] (pip install -e ".[optuna]")')
    # TPE with seed 0 tries 1e30 first (it diverges in its first step), then 1e-3. (The grid sampler would try both
    # too, but hydra-optuna-sweeper 1.3.0 raises "Study.stop is supposed to be invoked inside an objective function"
    # when the grid's last trial fails.)
    proc = run_cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.n_jobs=1", "lr=choice(1e-3, 1e30)", *TINY, "hydra.sweep.dir=search", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "search: 2 trials into search" in out
    assert "[1/2]" in out and "[2/2]" in out  # the progress has its total
    assert "Failed experiment: " in out and "Got 'diverged in epoch 1" in out  # a FAIL trial, with the run's status
    assert "setup plugin alembic" not in out and "A new study created" not in out  # optuna's noise kept off
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"lr": 1e-3}
    done = run_cli(str(tmp_path / "search"), cwd=tmp_path, entry="vaebench-aggregate")
    assert done.returncode == 0, done.stderr
    runs = table(tmp_path / "search")
    assert sorted(runs["status"]) == ["diverged", "ok"]


def test_a_failed_runs_progress_line_names_the_epoch_it_failed_in():
    """Issue 22: the line said `oom epochs=0` where the result said failed_epoch 1."""
    from vaebench.results import describe

    line = describe({"model": "vae", "optimizer": "adam", "lr": 1e-3, "latent_dim": 20, "seed": 0, "status": "oom",
                     "epochs_run": 0, "failed_epoch": 1, "wall_time_s": 1.0})
    assert "-> oom in epoch 1 (1.0 s)" in line and "epochs=0" not in line
    ok = describe({"model": "vae", "optimizer": "adam", "lr": 1e-3, "latent_dim": 20, "seed": 0, "status": "ok",
                   "epochs_run": 14, "val_recon_mse": 0.0123, "wall_time_s": 12.3})
    assert ok.endswith("-> ok val_mse=0.0123 epochs=14 (12.3 s)")
