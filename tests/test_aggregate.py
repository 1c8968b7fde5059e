"""vaebench-aggregate on result directories written here with known values, and on one real tiny sweep."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from itertools import product
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_cli
from vaebench import aggregate as agg


def write_run(root: Path, name: str, **fields) -> Path:
    """A run dir with a result.json as vaebench.task writes it (only the fields aggregate reads)."""
    result = {"schema": 1, "status": "ok", "model": "vae", "optimizer": "adam", "lr": 1e-3, "latent_dim": 10,
              "seed": 0, "epochs_run": 5, "converged": True, "stop_reason": "converged", "val_recon_mse": 0.1,
              "failed_epoch": None, "error": None, "finished_at": "2026-01-01T00:00:00+00:00",
              "config": {"trainer": {"max_epochs": 30}, "model": {"hidden_dims": [256]}}}
    result.update(fields)
    if result["status"] != "ok":
        result.update(val_recon_mse=None, converged=False, stop_reason=result["status"], failed_epoch=1)
    if "config_hash" not in fields:  # one identity per swept configuration, as config_hash() gives
        key = json.dumps([result[k] for k in ("model", "optimizer", "lr", "latent_dim", "seed")])
        result["config_hash"] = hashlib.sha256(key.encode()).hexdigest()[:16]
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def table(root: Path) -> pd.DataFrame:
    found = agg.scan([root])
    return agg.tabulate(found.results)[0]


def md_tables(report: str) -> list[pd.DataFrame]:
    """Every Markdown table of a report, as text cells (header row = columns)."""
    tables, rows = [], []
    for line in report.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            tables.append(pd.DataFrame(rows[2:], columns=rows[0]))
            rows = []
    return tables


def sections(report: str) -> list[str]:
    return [line[3:] for line in report.splitlines() if line.startswith("## ")]


def table_with(report: str, column: str) -> pd.DataFrame:
    """The report's first table with that column."""
    return next(t for t in md_tables(report) if column in t.columns)


def number(cell: str) -> float:
    """A table cell's leading number: '0.333' -> 0.333, '-1 (n 4)' -> -1."""
    return float(cell.split()[0])


# ------------------------------------------------------------------------------------------ table

def test_known_values_give_known_table(tmp_path):
    write_run(tmp_path, "b", optimizer="sgd", lr=1e-2, val_recon_mse=0.3, epochs_run=12)
    write_run(tmp_path, "a", lr=1e-3, latent_dim=50, val_recon_mse=0.2, converged=False, stop_reason="max_epochs")
    write_run(tmp_path, "deep/sweep/c", optimizer="rmsprop", lr=1e-1, status="diverged")
    df = table(tmp_path)
    # Ordered by model, then the study's optimizer order (adam, rmsprop, sgd), lr, latent size, seed.
    assert df[["optimizer", "lr", "latent_dim", "status", "epochs_run"]].values.tolist() == [
        ["adam", 1e-3, 50, "ok", 5], ["rmsprop", 1e-1, 10, "diverged", 5], ["sgd", 1e-2, 10, "ok", 12]]
    assert df["val_recon_mse"].fillna(-1).tolist() == [0.2, -1, 0.3]  # a failed run is a row, its metric empty
    assert df["converged"].tolist() == [False, False, True]
    assert df["config.trainer.max_epochs"].tolist() == [30, 30, 30]
    assert df["config.model.hidden_dims"].tolist() == ["[256]"] * 3
    assert df["run_dir"].iloc[2] == str(tmp_path / "b")


def test_results_csv_round_trips(tmp_path):
    write_run(tmp_path / "runs", "a", val_recon_mse=0.25)
    write_run(tmp_path / "runs", "b", seed=1, val_recon_mse=0.5, status="oom")
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert csv[["seed", "status", "val_recon_mse"]].fillna("-").values.tolist() == [[0, "ok", 0.25], [1, "oom", "-"]]
    assert (tmp_path / "runs" / "aggregate").exists() is False  # --out was honoured


def test_an_earlier_results_csv_reports_like_its_result_files(tmp_path):
    """A study re-reported from its results.csv alone (no result.json) gives the same numbers."""
    additive_grid(tmp_path / "runs")
    write_run(tmp_path / "runs", "diverged", optimizer="sgd", lr=1e-1, seed=2, status="diverged")
    first = agg.aggregate([tmp_path / "runs"], tmp_path / "first", None, ["png"])
    again = agg.aggregate([tmp_path / "first" / "results.csv"], tmp_path / "again", None, ["png"])
    pd.testing.assert_frame_equal(first, again)
    # A table and the result files it came from, given together, count each run once.
    both = agg.aggregate([tmp_path / "runs", tmp_path / "first" / "results.csv"], tmp_path / "both", None, ["png"])
    pd.testing.assert_frame_equal(first, both)
    assert len(pd.read_csv(tmp_path / "both" / "results.csv")) == len(pd.read_csv(tmp_path / "first" / "results.csv"))
    report = (tmp_path / "again" / "report.md").read_text()
    assert "rows of results.csv tables" in report and "0 result files" not in report
    assert pd.read_csv(tmp_path / "again" / "results.csv", keep_default_na=False)["status"].tolist().count("diverged") == 1


def test_resumed_sweep_keeps_newest_finished_result(tmp_path):
    same = {"config_hash": "h1"}
    write_run(tmp_path, "first", val_recon_mse=0.4, finished_at="2026-01-01T00:00:00+00:00", **same)
    write_run(tmp_path, "second", val_recon_mse=0.3, finished_at="2026-01-02T00:00:00+00:00", **same)
    # Resume retries an `error`, so a later error does not replace a finished result.
    write_run(tmp_path, "third", status="error", finished_at="2026-01-03T00:00:00+00:00", **same)
    write_run(tmp_path, "other", seed=1, status="error")
    df, dropped = agg.tabulate(agg.scan([tmp_path]).results)
    assert dropped == 2
    assert sorted(zip(df["run_dir"].map(lambda p: Path(p).name), df["status"])) == [("other", "error"),
                                                                                     ("second", "ok")]
    assert df.loc[df["status"] == "ok", "val_recon_mse"].item() == 0.3


def test_one_hash_for_different_runs_keeps_both(tmp_path):
    # Results written while config_hash left out each group's chosen option: adam and sgd shared a hash.
    write_run(tmp_path, "adam", config_hash="same", val_recon_mse=0.2)
    write_run(tmp_path, "sgd", optimizer="sgd", config_hash="same", val_recon_mse=0.3)
    df, dropped = agg.tabulate(agg.scan([tmp_path]).results)
    assert dropped == 0 and sorted(df["optimizer"]) == ["adam", "sgd"]


def test_overlapping_paths_count_a_run_once(tmp_path):
    run = write_run(tmp_path / "sweep", "a")
    found = agg.scan([tmp_path, tmp_path / "sweep", run / "result.json"])
    assert len(found.results) == 1


def test_lr_labels():
    assert [agg.fmt_lr(v) for v in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 3e-3, 5e-4)] == [
        "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "3e-3", "5e-4"]


# ------------------------------------------------------------------------------------------ numbers

OPT = {"adam": 0.0, "sgd": 1.0}
LR = {1e-3: -1.0, 1e-2: 0.0, 1e-1: 1.0}
LATENT = {10: 0.0, 50: 0.5}
SEED = {0: -0.1, 1: 0.1}


def additive_grid(root: Path) -> None:
    """ln(val_recon_mse) = -2 + effect(optimizer) + effect(lr) + effect(latent) + effect(seed), every cell."""
    for (o, a), (lr, b), (z, c), (s, d) in product(OPT.items(), LR.items(), LATENT.items(), SEED.items()):
        write_run(root, f"{o}_{lr}_{z}_{s}", optimizer=o, lr=lr, latent_dim=z, seed=s,
                  val_recon_mse=math.exp(-2 + a + b + c + d))


def test_an_exactly_additive_grid_is_named_and_shows_no_rounding_noise(tmp_path):
    additive_grid(tmp_path)
    df = table(tmp_path)
    result = agg.sensitivity(agg.successful(df, "val_recon_mse"), "val_recon_mse")
    # Balanced and additive: SS of a factor = N x population variance of its effects (N = 24 runs); the
    # interactions explain nothing and nothing is left over: exact, so partial eta squared is undefined.
    ss = {"optimizer": 24 * 0.25, "lr": 24 * 2 / 3, "latent_dim": 24 * 0.0625, "seed": 24 * 0.01}
    assert result.table["sum_sq"][list(ss)].to_dict() == pytest.approx(ss)
    interactions = ["optimizer x lr", "optimizer x latent_dim", "lr x latent_dim", "Residual"]
    assert (result.table.loc[interactions, "sum_sq"] == 0).all()  # not 1e-31
    assert result.exact and result.table["partial_eta_sq"].isna().all()
    agg.main([str(tmp_path), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "fit every run exactly" in report and "**lr** moves ln(val_recon_mse) most" in report
    tables = "\n".join(line for line in report.splitlines() if line.startswith("|"))
    assert not re.search(r"e-[1-9][0-9]", tables)  # no float noise (1e-31) in any table


def test_seed_spread_and_robustness_on_a_constructed_grid(tmp_path):
    additive_grid(tmp_path)
    df = table(tmp_path)
    spread = agg.seed_spread(agg.successful(df, "val_recon_mse"), "val_recon_mse")
    # Within a configuration the two seeds sit at -0.1 and +0.1: sd = sqrt(2 x 0.01 / 1) = 0.1414.
    assert spread.seed_sd == pytest.approx(math.sqrt(0.02))
    assert spread.n_cells == 12
    c = agg.cells(df, "val_recon_mse")
    best = agg.best_config(c, "val_recon_mse")
    assert (best["optimizer"], best["lr"], best["latent_dim"]) == ("adam", 1e-3, 10)
    assert best["mean"] == pytest.approx(math.exp(-3) * (math.exp(-0.1) + math.exp(0.1)) / 2)
    # adam at lr 1e-3, latent 50 is exp(0.5) = 1.65 times worse: only the best is within 10 %.
    rob = agg.robustness(c, best["mean"], ["adam", "sgd"], "val_recon_mse").set_index("optimizer")
    assert rob["within 10 %"].to_dict() == {"adam": 1, "sgd": 0}
    assert rob["share"]["adam"] == pytest.approx(1 / 6)


def test_a_configuration_with_a_failed_seed_is_neither_best_nor_robust(tmp_path):
    write_run(tmp_path, "fine", val_recon_mse=0.2)
    write_run(tmp_path, "lucky", latent_dim=50, val_recon_mse=0.1)  # the lowest value, but its other seed diverged
    write_run(tmp_path, "diverged", latent_dim=50, seed=1, status="diverged")
    c = agg.cells(table(tmp_path), "val_recon_mse")
    best = agg.best_config(c, "val_recon_mse")
    assert (best["latent_dim"], best["mean"]) == (10, 0.2)
    rob = agg.robustness(c, best["mean"], ["adam"], "val_recon_mse")
    assert rob[["configurations", "with a failure", "within 10 %"]].values.tolist() == [[2, 1, 1]]


def test_latent_scores_are_better_higher(tmp_path):
    for z, ari in ((10, 0.50), (20, 0.47), (50, 0.30)):
        write_run(tmp_path, f"z{z}", latent_dim=z, latent_ari=ari)
    c = agg.cells(table(tmp_path), "latent_ari")
    best = agg.best_config(c, "latent_ari")
    assert (best["latent_dim"], best["mean"]) == (10, 0.50)
    assert agg.within_best(c, best["mean"], "latent_ari").tolist() == [True, True, False]  # >= 0.45


def test_seed_variation_beside_each_factors_effect(tmp_path):
    additive_grid(tmp_path / "runs")
    effects = agg.factor_effects(agg.successful(table(tmp_path / "runs"), "val_recon_mse"), "val_recon_mse")
    assert effects.to_dict() == pytest.approx({"optimizer": 1.0, "lr": 2.0, "latent_dim": 0.5})
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    # The seed sd is sqrt(0.02) = 0.1414: lr moves ln(val_recon_mse) by 2, 14.1 times as much.
    effect = table_with(report, "× seed sd").set_index("factor")
    assert effect["levels"].to_dict() == {"optimizer": "2", "lr": "3", "latent_dim": "2"}
    assert effect["× seed sd"].map(number).to_dict() == pytest.approx(
        {f: e / math.sqrt(0.02) for f, e in {"optimizer": 1.0, "lr": 2.0, "latent_dim": 0.5}.items()}, rel=5e-3)


# ------------------------------------------------------------------------------------------ reconstruction vs latent

def latent_grid(root: Path, seeds=(0, 1)) -> None:
    """Four configurations (lr x latent size), val_recon_mse falling from the first to the last. latent_ari rises
    exactly as val_recon_mse falls, in every run. latent_nmi's configuration means rank 2, 1, 4, 3 against
    val_recon_mse's 4, 3, 2, 1 (lowest loss = rank 1): Spearman rho = 1 - 6 * 4 / (4 * 15) = +0.6."""
    configs = [(1e-3, 10), (1e-3, 50), (1e-2, 10), (1e-2, 50)]
    nmi = [0.3, 0.4, 0.1, 0.2]
    for i, ((lr, z), n) in enumerate(zip(configs, nmi)):
        for s in seeds:
            mse = 0.5 - 0.1 * i - 0.01 * s
            write_run(root, f"{i}_{s}", lr=lr, latent_dim=z, seed=s, val_recon_mse=mse, latent_ari=1 - mse,
                      latent_nmi=n + 0.001 * s)


def test_rank_correlation_of_reconstruction_and_latent_scores(tmp_path):
    latent_grid(tmp_path)
    corr = agg.recon_vs_latent(table(tmp_path)).set_index(["latent metric", "over"])
    assert corr.loc[("latent_ari", "configuration means"), ["n", "rho", "its rank"]].tolist() == [4, -1.0, 1]
    assert corr.loc[("latent_ari", "runs"), ["n", "rho", "its rank"]].tolist() == [8, -1.0, 1]
    assert corr.loc[("latent_nmi", "configuration means"), "rho"] == pytest.approx(0.6)
    # The lowest loss (lr 1e-2, latent 50) has the second-lowest nmi: third of four.
    assert corr.loc[("latent_nmi", "configuration means"), ["best recon", "its rank"]].tolist() == [
        "adam, lr 1e-2, latent 50", 3]
    assert "latent_silhouette" not in corr.index.get_level_values(0)  # not in these results: no row


def test_rank_correlation_sentences_read_the_sign(tmp_path):
    latent_grid(tmp_path / "runs")
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    summary = table_with(report, "latent_nmi").set_index("over")  # the summary's model x score table
    assert summary.loc["configuration means", ["latent_ari", "latent_nmi"]].map(number).tolist() == [-1, 0.6]
    head = {line.split("**")[1]: line for line in report.splitlines() if line.startswith("- **latent_")}
    # ARI falls as the loss rises (rho -1: they agree); NMI's rho +0.6 means the lower loss has the lower NMI.
    assert "strongly agree" in head["latent_ari"] and "chance" not in head["latent_ari"]
    assert "moderately disagree" in head["latent_nmi"] and "p = 0.4" in head["latent_nmi"]


def test_rank_correlation_with_one_seed_and_with_too_few_configurations(tmp_path):
    latent_grid(tmp_path / "one", seeds=(0,))
    corr = agg.recon_vs_latent(table(tmp_path / "one"))
    assert corr["over"].unique().tolist() == ["runs"]  # one seed: the runs are the configurations
    write_run(tmp_path / "two", "a0", latent_ari=0.5, val_recon_mse=0.2)
    write_run(tmp_path / "two", "a1", seed=1, latent_ari=0.4, val_recon_mse=0.3)
    write_run(tmp_path / "two", "b0", lr=1e-2, latent_ari=0.2, val_recon_mse=0.4)
    write_run(tmp_path / "two", "b1", lr=1e-2, seed=1, latent_ari=0.1, val_recon_mse=0.5)
    corr = agg.recon_vs_latent(table(tmp_path / "two")).set_index("over")
    assert math.isnan(corr.loc["configuration means", "rho"])  # two points would always give ±1
    assert corr.loc["runs", "rho"] == pytest.approx(-1.0)
    lines = agg.rho_lines(agg.recon_vs_latent(table(tmp_path / "two")))
    head = next(line for line in lines if line.startswith("- **latent_ari**"))
    assert "over 4 runs" in head and "too few configurations" in head  # says which rho it reads, and why


def test_no_latent_scores_no_correlation(tmp_path, capsys):
    write_run(tmp_path / "runs", "a")
    write_run(tmp_path / "runs", "b", lr=1e-2, val_recon_mse=0.2)
    write_run(tmp_path / "runs", "c", lr=1e-1, val_recon_mse=0.3)
    assert agg.recon_vs_latent(table(tmp_path / "runs")).empty  # fields absent
    # Data without labels: every run records the fields as null.
    nulls = dict.fromkeys(agg.LATENT_SCORES)
    for name, lr in (("a", 1e-3), ("b", 1e-2), ("c", 1e-1)):
        write_run(tmp_path / "unlabelled", name, lr=lr, **nulls)
    df = table(tmp_path / "unlabelled")
    assert agg.recon_vs_latent(df).empty
    assert "latent_ari" in agg.numeric_fields(df)  # all null is still a number field: the error says why
    agg.main([str(tmp_path / "unlabelled"), "--out", str(tmp_path / "out")])
    assert "Spearman" not in capsys.readouterr().out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Spearman" not in report and "Reconstruction against the latent space" not in report
    with pytest.raises(SystemExit):
        agg.main([str(tmp_path / "unlabelled"), "--metric", "latent_ari", "--out", str(tmp_path / "out2")])
    assert "no successful run has a value for it" in capsys.readouterr().err


def test_failure_rates(tmp_path):
    write_run(tmp_path, "a", lr=1e-3)
    write_run(tmp_path, "b", lr=1e-1, status="diverged")
    write_run(tmp_path, "c", lr=1e-1, seed=1, status="oom")
    write_run(tmp_path, "d", lr=1e-1, seed=2)
    rates = agg.failure_rates(table(tmp_path), "lr")
    assert rates.loc[1e-1, ["runs", "ok", "diverged", "oom", "error"]].tolist() == [3, 1, 1, 1, 0]
    assert rates["failure rate"].to_dict() == pytest.approx({1e-3: 0.0, 1e-1: 2 / 3})


def rss(y: np.ndarray, *blocks: np.ndarray) -> float:
    """Residual sum of squares of least squares on an intercept and the given dummy blocks."""
    x = np.column_stack([np.ones(len(y)), *blocks])
    return float(((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum())


def test_report_numbers_recompute_from_results_csv(tmp_path):
    """Partial eta squared by another route (type II sums of squares as differences of residual sums of squares of
    nested least-squares fits on dummies), from results.csv alone."""
    rng = np.random.default_rng(0)
    for i, (o, lr, z, s) in enumerate(product(["adam", "sgd", "rmsprop"], [1e-4, 1e-3, 1e-2], [10, 50], [0, 1])):
        status = "nan" if (o, lr) == ("rmsprop", 1e-2) else "ok"
        write_run(tmp_path / "runs", str(i), optimizer=o, lr=lr, latent_dim=z, seed=s, status=status,
                  val_recon_mse=float(rng.uniform(0.05, 0.2)))
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    ok = csv[csv["status"] == "ok"]
    y = np.log(ok["val_recon_mse"].to_numpy())

    def dummies(*factors: str) -> np.ndarray:
        return pd.get_dummies(ok[list(factors)].astype(str).agg("|".join, axis=1), drop_first=True).to_numpy(float)

    main = {f: dummies(f) for f in ("optimizer", "lr", "latent_dim", "seed")}
    pairs = {"optimizer x lr": dummies("optimizer", "lr"), "optimizer x latent_dim": dummies("optimizer", "latent_dim"),
             "lr x latent_dim": dummies("lr", "latent_dim")}
    full = rss(y, *main.values(), *pairs.values())
    # Type II: a main effect is added last to every term that does not contain it; an interaction to all others.
    without_lr = rss(y, main["optimizer"], main["latent_dim"], main["seed"], pairs["optimizer x latent_dim"])
    with_lr = rss(y, main["optimizer"], main["lr"], main["latent_dim"], main["seed"], pairs["optimizer x latent_dim"])
    ss = {"lr": without_lr - with_lr,
          "optimizer x lr": rss(y, *main.values(), pairs["optimizer x latent_dim"], pairs["lr x latent_dim"]) - full}
    report = (tmp_path / "out" / "report.md").read_text()
    terms = table_with(report, "partial η²").set_index("term")
    for term, value in ss.items():
        assert number(terms.loc[term, "partial η²"]) == pytest.approx(value / (value + full), rel=5e-3)
    assert number(terms.loc["residual", "sum of squares"]) == pytest.approx(full, rel=5e-3)
    assert "rest (interactions, noise)" not in report
    per_optimizer = table_with(report, "failure rate").set_index("optimizer")
    assert per_optimizer.loc["rmsprop", ["runs", "ok", "diverged", "oom", "error"]].map(number).tolist() == [12, 8, 4, 0, 0]
    assert number(per_optimizer.loc["rmsprop", "failure rate"]) == pytest.approx(1 / 3, rel=5e-3)
    # Failures in one optimizer x lr pair only: the pair table and the logistic test of the interaction.
    pairs_table = table_with(report, "1e-2").set_index("optimizer")
    assert pairs_table.loc["rmsprop", "1e-2"] == "4/4" and pairs_table.loc["adam", "1e-2"] == "0/4"
    assert "Does failure depend on optimizer x lr" in report and "df = 4" in report


# ------------------------------------------------------------------------------------------ figures

def failing_grid(root: Path) -> None:
    write_run(root, "ok", lr=1e-3)
    write_run(root, "limit", lr=1e-2, converged=False, stop_reason="max_epochs", epochs_run=30)
    write_run(root, "nan", lr=1e-1, status="diverged")
    write_run(root, "oom", latent_dim=50, status="oom")
    write_run(root, "error", optimizer="sgd", status="error")
    write_run(root, "mixed0", optimizer="sgd", lr=1e-2, val_recon_mse=0.2)  # one seed fine, one diverged
    write_run(root, "mixed1", optimizer="sgd", lr=1e-2, seed=1, status="diverged")


def test_failed_runs_are_in_the_figure_data(tmp_path):
    failing_grid(tmp_path)
    c = agg.cells(table(tmp_path), "val_recon_mse").set_index(["optimizer", "lr", "latent_dim"])
    assert c.loc[("adam", 1e-1, 10), ["n_ok", "failure"]].tolist() == [0, "diverged"]
    assert c.loc[("adam", 1e-3, 50), ["n_ok", "failure"]].tolist() == [0, "oom"]
    assert c.loc[("sgd", 1e-3, 10), ["n_ok", "failure"]].tolist() == [0, "error"]
    assert c.loc[("sgd", 1e-2, 10), ["n_ok", "n_diverged", "mean"]].tolist() == [1, 1, 0.2]
    assert c["hit_limit"].to_dict() == {k: k == ("adam", 1e-2, 10) for k in c.index}


def markers(fig) -> dict[str, list[tuple[float, float]]]:
    """Each labelled scatter of the figure -> its points (x = latent index, y = lr index)."""
    out: dict[str, list] = {}
    for ax in fig.axes:
        for coll in ax.collections:
            if coll.get_label() and not coll.get_label().startswith("_"):
                out.setdefault(f"{ax.get_title()}|{coll.get_label()}", []).extend(map(tuple, coll.get_offsets()))
    return out


def test_failures_are_drawn_as_marked_cells(tmp_path):
    failing_grid(tmp_path)
    df = table(tmp_path)
    lvl = agg.levels(df)  # lr 1e-3, 1e-2, 1e-1 -> y 0, 1, 2; latent 10, 50 -> x 0, 1
    fig = agg.plot_model(agg.cells(df, "val_recon_mse"), lvl, "vae", "val_recon_mse")
    drawn = markers(fig)
    assert drawn["vae · adam (2 failed)|diverged"] == [(0, 2)]
    assert drawn["vae · adam (2 failed)|oom"] == [(1, 0)]
    assert drawn["vae · sgd (2 failed)|error"] == [(0, 0)]
    assert drawn["vae · sgd (2 failed)|diverged (some seeds)"] == [(0.3, 1.3)]  # beside the surviving seed's dot
    assert sorted(drawn["vae · adam (2 failed)|ok"]) == [(0, 0), (0, 1)]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {agg.FAILURE_LABELS[s] for s in ("diverged", "oom", "error")} <= set(legend)
    assert "ring: hit epoch limit, not converged" in legend
    title = fig.get_suptitle().replace("\n", " ")  # issue 16: it said "epochs to converge", which a ringed dot did not
    assert "size = epochs trained (ring: hit the epoch limit, not converged)" in title and "to converge" not in title
    agg.plt.close(fig)


def test_fractional_mean_epochs_draw_a_size_legend(tmp_path):
    # Seeds ran 2 and 3 epochs (mean 2.5), another cell 4: the legend's "2 epochs" lies below the range.
    write_run(tmp_path, "a0", epochs_run=2)
    write_run(tmp_path, "a1", seed=1, epochs_run=3)
    write_run(tmp_path, "b0", lr=1e-2, epochs_run=4)
    write_run(tmp_path, "b1", lr=1e-2, seed=1, epochs_run=4)
    df = table(tmp_path)
    fig = agg.plot_model(agg.cells(df, "val_recon_mse"), agg.levels(df), "vae", "val_recon_mse")
    sizes = {h.get_label(): h.get_markersize() for h in fig.legends[0].legend_handles if "epochs" in h.get_label()}
    assert list(sizes) == ["2 epochs", "3 epochs", "4 epochs"]
    assert (sizes["2 epochs"], sizes["4 epochs"]) == pytest.approx((math.sqrt(40), math.sqrt(300)))  # the extremes
    agg.plt.close(fig)


def colour_bar_label(fig) -> str:
    return next(ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>")


def test_latent_score_with_non_positive_values_is_drawn_on_a_linear_scale(tmp_path):
    # ARI below 0 (worse than chance) in one cell, two seeds in each: mean and sd per cell, on a linear scale.
    for seed, (a, b) in enumerate(((-0.06, 0.40), (0.0, 0.50))):
        write_run(tmp_path, f"poor{seed}", seed=seed, latent_ari=a)
        write_run(tmp_path, f"good{seed}", lr=1e-2, seed=seed, latent_ari=b)
    df = table(tmp_path)
    c = agg.cells(df, "latent_ari").set_index("lr")
    assert c["mean"].to_dict() == pytest.approx({1e-3: -0.03, 1e-2: 0.45})
    assert c["sd"].to_dict() == pytest.approx({1e-3: math.sqrt(0.0018), 1e-2: math.sqrt(0.005)})
    fig = agg.plot_model(agg.cells(df, "latent_ari"), agg.levels(df), "vae", "latent_ari")
    assert colour_bar_label(fig) == "mean latent_ari\n(linear scale: a score that can be ≤ 0)"
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    # Each cell's value, and the sd itself: relative to a mean near 0 it would be meaningless.
    assert texts == ["-0.0300", "0.450", "±0.042", "±0.071"]
    assert "\n" in fig.get_suptitle()  # one narrow panel: the title is wrapped, not clipped at the edges
    agg.plt.close(fig)
    # The ANOVA of the score itself, never of its logarithm: the same numbers as the linear colour scale.
    result = agg.sensitivity(agg.successful(df, "latent_ari"), "latent_ari")
    assert result.table.loc["lr", "sum_sq"] == pytest.approx(4 * 0.24 ** 2)


def test_positive_latent_scores_stay_linear_and_losses_go_log(tmp_path):
    write_run(tmp_path, "a", latent_ari=0.2, val_recon_mse=0.1)
    write_run(tmp_path, "b", lr=1e-2, latent_ari=0.6, val_recon_mse=0.3)
    df = table(tmp_path)
    for metric, label in (("latent_ari", "linear scale: a score that can be ≤ 0"), ("val_recon_mse", "log scale")):
        fig = agg.plot_model(agg.cells(df, metric), agg.levels(df), "vae", metric)
        assert colour_bar_label(fig) == f"mean {metric}\n({label})"
        agg.plt.close(fig)


def test_figures_are_files_that_open(tmp_path):
    failing_grid(tmp_path / "runs")
    agg.main([str(tmp_path / "runs"), "--format", "png,svg,pdf"])
    out = tmp_path / "runs" / "aggregate"  # the default: <first PATH>/aggregate
    for stem in ("dotplot_vae",):
        with Image.open(out / f"{stem}.png") as im:
            im.load()
            assert im.width > 400 and im.height > 200
        assert ET.parse(out / f"{stem}.svg").getroot().tag.endswith("svg")
        pdf = (out / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:]
    report = (out / "report.md").read_text()
    assert "![vae: dot-plot](dotplot_vae.png)" in report
    # One model: an overview would repeat its figure, so there is none (issue 22).
    assert not (out / "overview.png").exists() and "overview" not in report


def test_an_overview_for_two_models_and_every_title_says_objective_and_data(tmp_path):
    for model in ("vae", "iwae"):
        for lr in (1e-3, 1e-2):
            write_run(tmp_path / "runs", f"{model}{lr}", model=model, lr=lr, n_train=180, n_val=20, n_features=50,
                      loss_mode="elbo", config={"trainer": {"max_epochs": 30},
                                                "model": {"loss_mode": "elbo", "decoder_variance": "gene"},
                                                "data": {"name": "table", "path": "/data/brca.tsv.gz"}})
    agg.main([str(tmp_path / "runs")])
    out = tmp_path / "runs" / "aggregate"
    assert (out / "overview.png").exists() and "![all models](overview.png)" in (out / "report.md").read_text()
    df = table(tmp_path / "runs")
    assert agg.runs_context(df) == "objective calibrated, data table brca.tsv.gz (200 x 50)"
    lvl, c = agg.levels(df), agg.cells(df, "val_recon_mse")
    for fig in (agg.plot_model(c[c.model == "vae"], lvl, "vae", "val_recon_mse", agg.runs_context(df)),
                agg.plot_overview(c, lvl, "val_recon_mse", agg.runs_context(df))):
        title = fig.get_suptitle().replace("\n", " ")
        assert "objective calibrated" in title and "brca.tsv.gz (200 x 50)" in title
        agg.plt.close(fig)
    assert "objective calibrated, data table brca.tsv.gz (200 x 50)" in (out / "report.md").read_text()
    for variance, name in (("fixed", "elbo_fixed"), ("shared", "calibrated (one shared variance)")):
        assert agg.collect.objective_text(df.assign(**{"config.model.decoder_variance": variance})) == f"objective {name}"
    assert agg.collect.objective_text(df.assign(**{"config.model.loss_mode": "paper"})) == "objective paper"


def test_each_value_is_printed_and_the_colour_ticks_span_the_data(tmp_path):
    # Issue 22: the demo's bar labelled only 0.9 and 1 while the data ran from 1.0 to 1.22, and no value was printed.
    values = {(1e-4, 10): 1.003, (1e-4, 50): 1.012, (1e-3, 10): 1.09, (1e-3, 50): 1.216}
    for (lr, z), v in values.items():
        write_run(tmp_path, f"{lr}{z}", lr=lr, latent_dim=z, recon_vs_mean=v, collapsed=True, epochs_run=2)
    df = table(tmp_path)
    fig = agg.plot_model(agg.cells(df, "recon_vs_mean"), agg.levels(df), "vae", "recon_vs_mean")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1.00", "1.01", "1.09", "1.22"]
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    ticks = [t for t in bar.get_yticks() if bar.get_ylim()[0] <= t <= bar.get_ylim()[1]]
    assert min(ticks) == pytest.approx(1.003) and max(ticks) == pytest.approx(1.216)  # the data's ends are labelled
    assert len(ticks) >= 4  # and round values between them
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert "1.22" in labels and all("10^" not in t and "times" not in t for t in labels)
    agg.plt.close(fig)


def test_collapsed_short_runs_stay_visible_under_their_bar(tmp_path):
    # Issue 22: the bar was drawn over the smallest dots and hid them. Now it lies behind, longer than the dot.
    write_run(tmp_path, "short", recon_vs_mean=1.01, collapsed=True, epochs_run=1)
    write_run(tmp_path, "long", lr=1e-2, recon_vs_mean=0.5, collapsed=False, epochs_run=20)
    df = table(tmp_path)
    fig = agg.plot_model(agg.cells(df, "recon_vs_mean"), agg.levels(df), "vae", "recon_vs_mean")
    ax = fig.axes[0]
    dots = next(c for c in ax.collections if c.get_label() == "ok")
    bar = next(c for c in ax.collections if c.get_label() == "collapsed")
    assert bar.get_zorder() < dots.get_zorder()
    dot_size = dots.get_sizes()[list(map(tuple, dots.get_offsets())).index((0, 0))]
    assert math.sqrt(bar.get_sizes()[0]) > math.sqrt(dot_size) + 5  # reaches out of the dot on both sides
    agg.plt.close(fig)


# ------------------------------------------------------------------------------------------ did the models learn?

def baseline_grid(root: Path) -> None:
    """Schema 2: vae learns in half its runs, iwae in none (every run near or above the mean predictor)."""
    vae = [(1e-3, 10, 0.50, 1.5, 10, False), (1e-3, 50, 0.90, 3.0, 8, False), (1e-2, 10, 0.96, 4.0, 2, False),
           (1e-2, 50, 1.02, 5.0, 0, True)]
    for lr, z, vs_mean, vs_pca, active, collapsed in vae:
        write_run(root, f"vae_{lr}_{z}", schema=2, lr=lr, latent_dim=z, recon_vs_mean=vs_mean, recon_vs_pca=vs_pca,
                  val_recon_mse=0.1 * vs_mean, active_units=active, collapsed=collapsed,
                  latent_ari=0.6, latent_ari_untrained=0.4 if z == 10 else 0.7, latent_ari_pca=0.5)
    for lr in (1e-3, 1e-2):
        write_run(root, f"iwae_{lr}", schema=2, model="iwae", lr=lr, recon_vs_mean=1.0, recon_vs_pca=6.0,
                  val_recon_mse=0.1, active_units=0, collapsed=True, latent_ari=0.3, latent_ari_untrained=0.4,
                  latent_ari_pca=0.5)
    write_run(root, "iwae_failed", schema=2, model="iwae", lr=1e-1, status="diverged")


def test_did_the_models_learn_in_numbers(tmp_path):
    baseline_grid(tmp_path)
    df = table(tmp_path)
    learned = agg.learning(df).set_index("model")
    share = next(c for c in learned.columns if c.startswith("share"))
    assert learned.loc["vae", ["ok runs", share, "collapsed", "median active units"]].tolist() == [4, 0.5, 1, 5]
    assert learned.loc["vae", ["best run's recon_vs_mean", "at", "best run's recon_vs_pca", "at latent"]].tolist() == [
        0.5, "adam, lr 1e-3, latent 10", 1.5, 10]
    assert learned.loc["iwae", ["ok runs", share, "collapsed", "median active units"]].tolist() == [2, 0, 2, 0]
    refs = agg.latent_against_references(df).set_index("model")
    assert refs.loc["vae", ["latent score", "runs", "trained", "untrained", "pca", "trained > untrained"]].tolist() == [
        "latent_ari", 4, 0.6, 0.55, 0.5, 0.5]
    assert refs.loc["iwae", "trained > untrained"] == 0


def test_report_opens_with_did_the_models_learn(tmp_path, capsys):
    baseline_grid(tmp_path / "runs")
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "metric: recon_vs_mean" in printed  # the default when every ok run has baselines
    # Issue 22: the totals the README quotes for a demo are printed, not only per-model rows.
    total = "All models: 2 of 7 runs beat the mean predictor by 5 % or more, 3 are marked collapsed, 1 failed"
    assert total in printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert total in report
    assert sections(report)[:2] == ["Did the models learn?", "Summary"]
    learned, refs = md_tables(report)[:2]
    assert learned[["model", "ok runs", "collapsed"]].values.tolist() == [["vae", "4", "1"], ["iwae", "2", "2"]]
    assert refs["model"].tolist() == ["vae", "iwae"] and refs["trained > untrained"].tolist() == ["0.5", "0"]
    section = report.split("## Did the models learn?")[1].split("## Summary")[0]
    assert "**iwae: no run beats the mean predictor" in section
    # Issue 22: the warning appeared only when every run collapsed; now whenever a real share (here 1 of 4) did.
    assert "**vae: 1 of 4 successful runs (25%) did not learn (collapsed).**" in section
    summary = md_tables(report)[2]
    assert summary.columns[-1] == "best recon_vs_mean"


def test_dots_coloured_by_the_ratio_to_the_mean_predictor_and_collapse_marked(tmp_path):
    baseline_grid(tmp_path)
    df = table(tmp_path)
    metric = agg.default_metric(df)
    assert metric == "recon_vs_mean"
    fig = agg.plot_model(agg.cells(df, metric), agg.levels(df), "vae", metric)
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    low, high = sorted(bar.get_ylim())
    assert low < 0.5 and high > 1.0  # the mean predictor (1) is on the bar although every dot of vae is below it...
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in bar.get_lines())  # ...and drawn as a line
    assert markers(fig)["vae · adam|collapsed"] == [(1, 1)]  # lr 1e-2, latent 50
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert agg.COLLAPSED_LABEL in legend
    agg.plt.close(fig)


def test_results_without_baselines_aggregate_as_before(tmp_path):
    write_run(tmp_path / "old", "a", collapsed=None)
    write_run(tmp_path / "old", "b", lr=1e-2, val_recon_mse=0.2)
    df = table(tmp_path / "old")
    assert agg.default_metric(df) == "val_recon_mse" and not agg.has_baselines(df)
    assert agg.cells(df, "val_recon_mse")["n_collapsed"].tolist() == [0, 0]
    # A mix of old and new results: the ratio is not in every run, so the default stays val_recon_mse.
    baseline_grid(tmp_path / "mixed")
    write_run(tmp_path / "mixed", "old", seed=5)
    assert agg.default_metric(table(tmp_path / "mixed")) == "val_recon_mse"
    agg.main([str(tmp_path / "old"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Metric: `val_recon_mse`" in report and sections(report)[0] == "Summary"


# ------------------------------------------------------------------------------------------ mixed experiments, all failed

def test_runs_on_different_data_never_share_a_cell(tmp_path, capsys):
    # The same grid point, seed 0 both times: once on the built-in data, once on a table.
    for name, fingerprint, source, mse in (("synthetic", "aaaa", "synthetic", 0.1), ("table", "bbbb", "table", 0.4)):
        for lr in (1e-3, 1e-2):
            write_run(tmp_path / "runs", f"{name}_{lr}", lr=lr, val_recon_mse=mse * (1 + lr), data_fingerprint=fingerprint,
                      config={"data": {"name": source}, "trainer": {"max_epochs": 30}})
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "2 experiments, which differ in data_fingerprint, config.data.name" in out
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(zip(csv["experiment"], csv["data_fingerprint"])) == [(1, "aaaa"), (1, "aaaa"), (2, "bbbb"), (2, "bbbb")]
    index = md_tables((tmp_path / "out" / "report.md").read_text())[0]
    assert index[["experiment", "runs", "data_fingerprint", "data.name"]].values.tolist() == [
        ["1", "2", "aaaa", "synthetic"], ["2", "2", "bbbb", "table"]]
    for n, mse in ((1, 0.1), (2, 0.4)):
        sub = tmp_path / "out" / f"experiment-{n}"
        summary = md_tables((sub / "report.md").read_text())[0]
        assert summary[["runs", "best val_recon_mse"]].values.tolist() == [["2", agg.fmt.fmt(mse * 1.001, 3)]]
        assert len(pd.read_csv(sub / "results.csv")) == 2 and (sub / "dotplot_vae.png").exists()


def test_a_differing_setting_outside_the_grid_splits_too(tmp_path):
    for epochs in (30, 100):
        write_run(tmp_path, f"e{epochs}", config={"trainer": {"max_epochs": epochs}}, data_fingerprint="same",
                  config_hash=f"h{epochs}")
    df = table(tmp_path)
    split = agg.experiments(df)
    assert split.differ_in == ["config.trainer.max_epochs"] and sorted(split.number) == [1, 2]
    write_run(tmp_path / "one", "a", data_fingerprint="same")
    write_run(tmp_path / "one", "b", lr=1e-2, data_fingerprint="same")
    assert agg.experiments(table(tmp_path / "one")).differ_in == []


def test_a_key_that_does_nothing_under_the_stopping_rule_does_not_split(tmp_path):
    """Issue 22: trainer.patience was listed as a difference between runs under the study's rule, where it is unused."""
    for patience in (5, 10):
        for stopping in ("study", "patience"):
            write_run(tmp_path / stopping, f"p{patience}", data_fingerprint="same", config_hash=f"{stopping}{patience}",
                      config={"trainer": {"max_epochs": 30, "stopping": stopping, "patience": patience}})
    assert agg.experiments(table(tmp_path / "study")).differ_in == []
    assert agg.experiments(table(tmp_path / "patience")).differ_in == ["config.trainer.patience"]


def test_every_run_failed_is_still_a_report(tmp_path, capsys):
    write_run(tmp_path / "runs", "a", status="nan")  # written before issue 16: read as "diverged"
    write_run(tmp_path / "runs", "b", lr=1e-1, status="oom")
    write_run(tmp_path / "runs", "c", optimizer="sgd", status="error")
    agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])  # no SystemExit: exit status 0
    assert "every run failed (3 runs)" in capsys.readouterr().out
    out = tmp_path / "out"
    # A plain read_csv (pandas, R) keeps every status: none of them reads as a missing value.
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["diverged", "oom", "error"]
    tables = md_tables((out / "report.md").read_text())
    assert tables[0][["runs", "ok", "failed"]].values.tolist() == [["3", "0", "3"]]
    per_optimizer = next(t for t in tables if t.columns[0] == "optimizer" and "failure rate" in t.columns)
    assert per_optimizer[["optimizer", "runs", "failure rate"]].values.tolist() == [["adam", "2", "1"],
                                                                                     ["sgd", "1", "1"]]
    assert (out / "dotplot_vae.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------ bad input

def test_corrupt_and_unfinished_results_are_reported_and_skipped(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "good")
    (runs / "corrupt").mkdir()
    (runs / "corrupt" / "result.json").write_text('{"status": "ok", "model": "va')
    (runs / "no_fields").mkdir()
    (runs / "no_fields" / "result.json").write_text('{"status": "ok", "model": "vae"}')
    (runs / "killed_writing").mkdir()
    (runs / "killed_writing" / ".result.json.x1.tmp").write_text("{")
    (runs / "running" / ".hydra").mkdir(parents=True)
    (runs / "running" / ".hydra" / "config.yaml").write_text("lr: 0.001\n")
    agg.main([str(runs)])
    err = capsys.readouterr().err
    assert "corrupt" in err and str(runs / "corrupt" / "result.json") in err
    out = runs / "aggregate"
    assert len(pd.read_csv(out / "results.csv")) == 1
    found = agg.scan([runs])
    assert (len(found.corrupt), len(found.partial), len(found.missing)) == (2, 1, 1)
    report = (out / "report.md").read_text()
    listed = report.split("## Not counted")[-1]  # every one of them, with its path, at the end
    assert "lacks optimizer, lr, latent_dim, seed" in listed
    for name in ("corrupt", "no_fields", "killed_writing", "running"):
        assert str(runs / name) in listed


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nowhere"], "no such file or directory"),
    (["{tmp}/runs", "--metric", "accuracy"], "--metric accuracy: not a numeric result field"),
    (["{tmp}/runs", "--metric", "status"], "not a numeric result field"),
    (["{tmp}/runs", "--metric", "error"], "not a numeric result field"),  # text, though null in every run
    (["{tmp}/runs", "--metric", "failed_epoch"], "no successful run has a value"),
    (["{tmp}/runs", "--format", "png,gif"], "--format png,gif"),
    (["{tmp}/runs", "--colour", "red"], "unrecognized arguments"),
    (["{tmp}/empty"], "no readable result.json"),
])
def test_bad_arguments_end_in_one_line_and_status_2(tmp_path, capsys, args, message):
    write_run(tmp_path / "runs", "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        agg.main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_any_numeric_field_is_a_metric(tmp_path):
    write_run(tmp_path / "runs", "a", wall_time_s=3.0)
    write_run(tmp_path / "runs", "b", seed=1, wall_time_s=5.0)
    table_ = agg.aggregate([tmp_path / "runs"], tmp_path / "out", "wall_time_s", ["png"])
    assert table_["best wall_time_s"].item() == pytest.approx(4.0)


# ------------------------------------------------------------------------------------------ real sweep

def command(name: str, *args: str, cwd: Path, cache: Path,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, timeout=300, entry=name, env={**(env or os.environ), "VAEBENCH_CACHE": str(cache)})


@pytest.mark.long(5)
def test_real_results_through_the_installed_command(tmp_path):
    """Results as vaebench.task writes them (in this process: cheap), read by the installed command, which never
    imports torch (a third of its start-up)."""
    from conftest import make_config, poisoned
    from vaebench.task import run

    for optimizer in ("adam", "sgd"):
        run(make_config(f"optimizer={optimizer}", "resume=false", "data.n_types=3"), tmp_path / "runs" / optimizer)
    done = command("vaebench-aggregate", str(tmp_path / "runs"), cwd=tmp_path, cache=tmp_path / "cache",
                   env=poisoned(tmp_path / "poisoned", "torch"))
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "runs" / "aggregate"
    csv = pd.read_csv(out / "results.csv")
    assert sorted(csv["optimizer"]) == ["adam", "sgd"] and csv["status"].eq("ok").all()
    assert csv["n_features"].eq(40).all() and csv["latent_ari"].notna().all()  # the built-in data has labels
    assert "experiment" not in csv  # one data set, one setting: one experiment
    summary = table_with((out / "report.md").read_text(), "best configuration")
    assert summary[["model", "runs", "ok"]].values.tolist() == [["vae", "2", "2"]]
    assert (out / "dotplot_vae.png").stat().st_size > 0


@pytest.mark.slow  # a real sweep through both commands; test_real_results_through_the_installed_command and
# tests/test_cli.py's sweeps cover the same path in less time
def test_real_tiny_sweep_through_the_cli(tmp_path):
    sweep = tmp_path / "sweep"
    ran = command("vaebench", "-m", "model=vae", "optimizer=adam,sgd", "lr=1e-3,1e-1", "data.n_samples=300",
                  "data.n_genes=50", "data.n_types=3", "trainer.max_epochs=2", "device=cpu", f"hydra.sweep.dir={sweep}",
                  cwd=tmp_path, cache=tmp_path / "cache")
    assert ran.returncode == 0, ran.stderr[-2000:]
    done = command("vaebench-aggregate", str(sweep), cwd=tmp_path, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    out = sweep / "aggregate"
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 4 and set(csv["optimizer"]) == {"adam", "sgd"} and set(csv["lr"]) == {1e-3, 1e-1}
    assert csv["config.data.n_genes"].eq(50).all() and csv["n_features"].eq(50).all()
    for name in ("dotplot_vae.png", "report.md"):
        assert (out / name).stat().st_size > 0
    assert not (out / "overview.png").exists()  # one model: the overview would repeat its figure
    assert "| vae | 4 |" in done.stdout  # the summary table is printed too
    # The synthetic data has labels: every run has latent scores, so the correlation is reported and printed.
    assert csv["latent_ari"].notna().all()
    assert "Spearman rho, val_recon_mse against latent scores" in done.stdout
    assert "### Reconstruction against the latent space" in (out / "report.md").read_text()
    agg.aggregate([sweep], tmp_path / "ari", "latent_ari", ["png"])
    assert "Metric: `latent_ari` (higher is better)" in (tmp_path / "ari" / "report.md").read_text()
    assert (tmp_path / "ari" / "dotplot_vae.png").stat().st_size > 0


def test_results_written_before_the_rename_read_nan_as_diverged(tmp_path):
    """Issue 16: a diverged run was "nan", which pandas and R read as missing; old files still read."""
    from vaebench.results import finished_result

    old = write_run(tmp_path, "old", status="nan", config_hash="h")
    assert finished_result(old, "h")["status"] == "diverged"  # a resumed sweep still skips it
    assert finished_result(old, "h")["stop_reason"] == "diverged"
    csv = tmp_path / "results.csv"
    csv.write_text("model,status,stop_reason,val_recon_mse\nvae,nan,nan,\nvae,ok,converged,0.1\n")
    runs = agg.read_table(csv)
    assert runs["status"].tolist() == ["diverged", "ok"] and runs["stop_reason"].tolist() == ["diverged", "converged"]
    assert runs["val_recon_mse"].isna().tolist() == [True, False]


# ------------------------------------------------------------------------------------------ issue 22: the report

def brca_like_grid(root: Path) -> None:
    """As on BRCA: SGD collapsed everywhere (about the mean predictor), Adam and RMSprop learned, lr matters."""
    for opt, lr, z in product(("adam", "rmsprop", "sgd"), (1e-4, 1e-3, 1e-2), (10, 50)):
        learned = opt != "sgd"
        value = (0.5 + 0.1 * [1e-4, 1e-3, 1e-2].index(lr) + 0.01 * (z == 50) + 0.02 * (opt == "rmsprop")
                 + 0.003 * ((z == 50) == (lr == 1e-3))) if learned else 1.0 + 0.001 * (z == 50)
        write_run(root, f"{opt}_{lr}_{z}", schema=2, optimizer=opt, lr=lr, latent_dim=z, recon_vs_mean=value,
                  val_recon_mse=0.02 * value, collapsed=not learned, active_units=5 if learned else 0)


def test_the_anova_uses_the_runs_that_learned_and_counts_the_collapsed_apart(tmp_path):
    brca_like_grid(tmp_path / "runs")
    agg.main([str(tmp_path / "runs")])
    report = (tmp_path / "runs" / "aggregate" / "report.md").read_text()
    assert "Over the 12 successful runs that learned: the 6 that collapsed" in report
    anova = table_with(report, "partial η²").set_index("term")
    assert "Factorial ANOVA of ln(recon_vs_mean) over 12 successful runs" in report
    # Without SGD's collapsed runs the optimizer no longer "matters most" (it did, only saying that SGD collapsed):
    # two optimizers are left (1 df), and the learning rate moves the metric most. 12 runs leave 2 residual df: no p.
    assert anova.loc["optimizer", "df"] == "1" and "By partial η², **lr** moves ln(recon_vs_mean) most" in report
    per_opt = table_with(report, "of them collapsed").set_index("optimizer")
    assert per_opt.loc["sgd", ["of them collapsed", "did not learn"]].tolist() == ["6", "1"]
    assert "Runs failed or collapsed per optimizer x learning rate:" in report
    summary = table_with(report, "best configuration").set_index("model")
    assert summary.loc["vae", "collapsed"] == "6"


def test_no_p_value_from_too_few_residual_degrees_of_freedom(tmp_path):
    # 2 optimizers x 2 lr x 2 latent sizes, one seed: the two-way interactions leave 1 residual df.
    for opt, lr, z in product(("adam", "rmsprop"), (1e-3, 1e-2), (10, 50)):
        write_run(tmp_path, f"{opt}{lr}{z}", optimizer=opt, lr=lr, latent_dim=z,
                  val_recon_mse=0.1 * (1 + (opt == "rmsprop")) * (1 + 0.5 * (lr == 1e-2)) * (1 + 0.01 * (z == 50))
                  * (1.003 if (opt, lr, z) == ("adam", 1e-3, 10) else 1))
    df = table(tmp_path)
    result = agg.sensitivity(agg.successful(df, "val_recon_mse"), "val_recon_mse")
    assert result.residual_df == 1 and not result.tested
    assert result.table["p"].isna().all() and result.table["partial_eta_sq"].drop("Residual").notna().all()
    agg.main([str(tmp_path)])
    report = (tmp_path / "aggregate" / "report.md").read_text()
    anova = table_with(report, "partial η²")
    assert set(anova["p"]) == {"—"} and set(anova["F"]) == {"—"}
    assert "No F test and no p-value: the residual has 1 degree of freedom" in report
    assert "p = " not in report.split("### What explains")[1].split("### Failures")[0]


def test_the_best_configuration_is_flagged_when_it_hit_the_epoch_limit_still_improving(tmp_path):
    config = {"trainer": {"max_epochs": 15}, "model": {"hidden_dims": [256]}}
    write_run(tmp_path, "best", val_recon_mse=0.05, epochs_run=15, converged=False, stop_reason="max_epochs",
              still_improving=True, config=config)
    write_run(tmp_path, "other", lr=1e-2, val_recon_mse=0.2, epochs_run=6, config=config)
    agg.main([str(tmp_path)])
    report = (tmp_path / "aggregate" / "report.md").read_text()
    flag = "hit the epoch limit (15 of 15 epochs), still improving at its last epoch"
    assert f"**⚠ The best configuration {flag}:**" in report
    assert table_with(report, "best configuration")["best configuration"].tolist() == [
        f"adam, lr 1e-3, latent 10 ⚠ {flag}"]


def test_the_held_out_likelihood_is_reported_and_can_be_the_metric(tmp_path):
    for lr, nll, ppca in ((1e-3, -1.20, -1.10), (1e-2, -0.90, -1.10)):
        write_run(tmp_path, f"r{lr}", schema=2, lr=lr, recon_vs_mean=0.4, collapsed=False, val_nll_is=nll,
                  baseline_ppca_nll=ppca, nll_vs_ppca=nll - ppca, kl_units_90=7)
    write_run(tmp_path, "old", schema=2, lr=1e-4, recon_vs_mean=0.5, collapsed=False)  # written before the field
    df = table(tmp_path)
    learned = agg.learning(df).set_index("model")
    assert learned.loc["vae", ["best val_nll_is", "baseline_ppca_nll there", "share beating PPCA (nll_vs_ppca < 0)",
                               "median kl_units_90"]].tolist() == pytest.approx([-1.2, -1.1, 0.5, 7])
    agg.main([str(tmp_path), "--metric", "val_nll_is", "--out", str(tmp_path / "nll")])
    report = (tmp_path / "nll" / "report.md").read_text()
    assert "Metric: `val_nll_is` (lower is better)" in report
    assert table_with(report, "best configuration")["best val_nll_is"].tolist() == ["-1.2"]
    for metric in ("val_nll_is", "nll_vs_ppca"):  # log-likelihoods: a linear scale, whatever their sign
        fig = agg.plot_model(agg.cells(df, metric), agg.levels(df), "vae", metric)
        assert "linear scale: a log-likelihood" in colour_bar_label(fig)
        agg.plt.close(fig)
    fig = agg.plot_model(agg.cells(df, "nll_vs_ppca"), agg.levels(df), "vae", "nll_vs_ppca")
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in bar.get_lines())  # 0 = probabilistic PCA
    agg.plt.close(fig)


def test_latent_scores_are_led_by_the_balanced_probe_accuracy(tmp_path):
    # Tumour / normal at 1104 / 114: k-means' ARI is near 0 where a linear probe separates them.
    for lr, ari, probe in ((1e-3, 0.04, 0.99), (1e-2, 0.21, 0.97), (1e-4, 0.10, 0.98)):
        write_run(tmp_path, f"r{lr}", schema=2, lr=lr, recon_vs_mean=0.4, latent_ari=ari, latent_nmi=ari,
                  latent_probe_balanced_accuracy=probe, latent_ari_untrained=0.0, latent_ari_pca=0.05,
                  latent_probe_balanced_accuracy_untrained=0.8, latent_probe_balanced_accuracy_pca=0.95)
    df = table(tmp_path)
    assert agg.latent_against_references(df)["latent score"].tolist() == ["latent_probe_balanced_accuracy", "latent_ari"]
    assert agg.recon_vs_latent(df)["latent metric"].drop_duplicates().tolist() == [
        "latent_probe_balanced_accuracy", "latent_ari", "latent_nmi"]
