"""The sensitivity statistics on fabricated grids whose effects are known exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from vaebench.aggregate.collect import AXES as FACTORS
from vaebench.anova import BLOCK, factorial_anova, failure_interaction, failure_lines, variation_lines

OPT = {"adam": -1.0, "rmsprop": -0.5, "sgd": 1.5}  # main effects, each summing to zero
LR = {1e-4: 1.0, 1e-3: -0.25, 1e-2: -0.75}
LATENT = {10: 0.0, 100: 0.0}  # no effect at all
OPT_X_LR = {("sgd", 1e-2): 2.0, ("sgd", 1e-4): -2.0, ("adam", 1e-2): -2.0, ("adam", 1e-4): 2.0}  # rows, columns sum to 0
SEED = {0: 0.1, 1: -0.1}


def grid(three_way: float) -> pd.DataFrame:
    """Every combination once per seed; y is the sum of the effects above plus a three-way pattern (the 'noise':
    no term of the model can explain it, so all of it lands in the residual)."""
    rows = []
    for (i, o), (j, lr), (k, z), s in itertools.product(enumerate(OPT), enumerate(LR), enumerate(LATENT), SEED):
        noise = three_way * ((-1) ** k) * (1 if i == j else -0.5) * ((-1) ** s)
        rows.append({"optimizer": o, "lr": lr, "latent_dim": z, "seed": s, "noise": noise,
                     "y": OPT[o] + LR[lr] + LATENT[z] + OPT_X_LR.get((o, lr), 0.0) + SEED[s] + noise})
    return pd.DataFrame(rows)


def test_partial_eta_squared_matches_the_known_effects():
    df = grid(three_way=0.4)
    result = factorial_anova(df, "y", ["optimizer", "lr", "latent_dim"], block="seed")
    t = result.table
    n = len(df)
    # On a balanced grid each term's sum of squares is n times the mean square of its effect over the runs,
    # and the residual is exactly the three-way pattern (orthogonal to every term fitted).
    ss = {"optimizer": n * np.mean([v ** 2 for v in OPT.values()]),
          "lr": n * np.mean([v ** 2 for v in LR.values()]),
          "optimizer x lr": n / (len(OPT) * len(LR)) * sum(v ** 2 for v in OPT_X_LR.values()),
          "seed": n * np.mean([v ** 2 for v in SEED.values()])}
    residual = float((df["noise"] ** 2).sum())
    assert t.loc["Residual", "sum_sq"] == pytest.approx(residual)
    for term, expected in ss.items():
        assert t.loc[term, "sum_sq"] == pytest.approx(expected), term
        assert t.loc[term, "partial_eta_sq"] == pytest.approx(expected / (expected + residual)), term
    for term in ("latent_dim", "optimizer x latent_dim", "lr x latent_dim"):  # no effect: nothing explained
        assert t.loc[term, "partial_eta_sq"] == pytest.approx(0.0, abs=1e-12), term
    assert result.n == n and result.dropped == []
    # On a balanced grid the model comparisons are statsmodels' own type II table.
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    fit = smf.ols("y ~ (C(optimizer) + C(lr) + C(latent_dim)) ** 2 + C(seed)", data=df).fit()
    theirs = anova_lm(fit, typ=2)
    assert theirs.loc["C(optimizer):C(lr)", "F"] == pytest.approx(t.loc["optimizer x lr", "F"])
    assert theirs.loc["C(lr)", "PR(>F)"] == pytest.approx(t.loc["lr", "p"])


def test_a_missing_cell_leaves_the_other_terms_estimable():
    df = grid(three_way=0.4)
    df = df[~((df["optimizer"] == "sgd") & (df["lr"] == 1e-2))]  # every run of one pair failed
    result = factorial_anova(df, "y", ["optimizer", "lr", "latent_dim"], block="seed")
    t = result.table
    assert t.loc["optimizer x lr", "df"] == 3 and t.loc["Residual", "df"] == 32 - 1 - 2 - 2 - 1 - 3 - 2 - 2 - 1
    assert t.loc["Residual", "sum_sq"] == pytest.approx(float((df["noise"] ** 2).sum()), rel=0.5)
    assert t["partial_eta_sq"].drop("Residual").between(0, 1).all()


def test_a_factor_with_one_level_is_left_out():
    df = grid(three_way=0.4)
    df = df[df["latent_dim"] == 10]
    result = factorial_anova(df, "y", ["optimizer", "lr", "latent_dim"], block="seed")
    assert result.dropped == ["latent_dim"]
    assert "optimizer x lr" in result.table.index and "latent_dim" not in result.table.index


def test_interactions_are_dropped_when_nothing_is_left_to_estimate_the_noise():
    df = grid(three_way=0.4)
    df = df[(df["seed"] == 0) & (df["latent_dim"] == 10)]  # one run per optimizer x lr cell
    result = factorial_anova(df, "y", ["optimizer", "lr", "latent_dim"], block="seed")
    assert "optimizer x lr" in result.dropped and "optimizer x lr" not in result.table.index
    assert set(result.table.index) == {"optimizer", "lr", "Residual"}


def failures(rate: dict[tuple[str, float], int], runs: int = 20) -> tuple[pd.DataFrame, pd.Series]:
    rows = [{"optimizer": o, "lr": lr, "failed": i < k} for (o, lr), k in rate.items() for i in range(runs)]
    df = pd.DataFrame(rows)
    return df, df["failed"]


def test_failures_that_cross_are_an_interaction():
    # SGD fails at the highest lr, Adam at the lowest: no per-optimizer and per-lr odds can give both. (A single
    # failing cell could: on the logit scale it is two main effects that only add up to failure together.)
    counts = {(o, lr): 2 for o in OPT for lr in LR} | {("sgd", 1e-2): 18, ("adam", 1e-4): 18}
    runs, failed = failures(counts)
    test = failure_interaction(runs, failed)
    assert test.df == 4 and test.p < 1e-6
    cell = test.cells.set_index(["optimizer", "lr"])
    assert cell.loc[("sgd", 1e-2), "failure rate"] == 0.9 and cell["failed"].sum() == 7 * 2 + 2 * 18


def test_failures_that_add_up_on_the_logit_scale_are_no_interaction():
    # Odds multiply: a failure odds ratio of 3 for sgd and of 3 per lr step, no more; counts out of 80 are exact.
    odds = {(o, lr): (3.0 if o == "sgd" else 1.0) * 3.0 ** j / 9 for o in OPT for j, lr in enumerate(LR)}
    counts = {c: odd / (1 + odd) for c, odd in odds.items()}
    runs = 8000
    rows, flags = failures({c: round(p * runs) for c, p in counts.items()}, runs=runs)
    test = failure_interaction(rows, flags)
    assert test.lr_statistic < 1.0 and test.p > 0.5


def test_no_failure_test_with_one_optimizer():
    runs, failed = failures({("adam", 1e-3): 2, ("adam", 1e-2): 5})
    assert failure_interaction(runs, failed) is None


def lines(result, n_ok: int = 36) -> str:
    return "\n".join(variation_lines(result, n_ok, "ln(val_recon_mse)", lambda t: t.to_string()))


def test_report_lines_name_the_interaction_and_its_test():
    df = grid(three_way=0.4)
    text = lines(factorial_anova(df, "y", FACTORS, block=BLOCK))
    assert "optimizer x lr" in text and "over 36 successful runs" in text and "residual" in text
    # The interaction's SS (36/9 x 16 = 64) exceeds optimizer's (36 x 7/6 = 42), which exceeds lr's (36 x 0.875).
    assert "**optimizer matters most** (partial η² = 0.94, p < 0.001), then lr (0.87), latent_dim (0.00)." in text
    assert "The optimizer x lr interaction explains even more" in text and "the best lr depends on the optimizer" in text
    counts = {(o, lr): 2 for o in OPT for lr in LR} | {("sgd", 1e-2): 18, ("adam", 1e-4): 18}
    runs, failed = failures(counts)
    text = "\n".join(failure_lines(runs, failed, lambda t: t.to_string(), lambda lr: f"{lr:g}"))
    assert "18/20" in text and "df = 4" in text and "Yes: failure depends on the pair" in text


def test_degenerate_designs_are_said_in_words():
    df = grid(three_way=0.4)
    one_optimizer = df[df["optimizer"] == "adam"]
    text = lines(factorial_anova(one_optimizer, "y", FACTORS, block=BLOCK), len(one_optimizer))
    assert "Only one level among the successful runs, so left out: optimizer." in text and "lr matters most" in text
    one_seed = df[df["seed"] == 0]
    text = lines(factorial_anova(one_seed, "y", FACTORS, block=BLOCK), len(one_seed))
    assert "so left out: seed." in text and "seed  " not in text
    assert lines(None, 1) == "1 successful run: too few for an analysis of variance.\n"
    assert "do not vary enough" in lines(factorial_anova(df.assign(y=1.0), "y", FACTORS, block=BLOCK), 36)
    # Failures: none, one optimizer, every run.
    runs, failed = failures({(o, lr): 2 for o in OPT for lr in LR})
    assert failure_lines(runs, failed & False, str, str) == ["No run failed: nothing to model.", ""]
    runs, failed = failures({("adam", 1e-3): 2, ("adam", 1e-2): 5})
    assert "One optimizer or one learning rate" in "".join(failure_lines(runs, failed, str, str))
    runs, failed = failures({(o, lr): 20 for o in OPT for lr in LR})
    text = "\n".join(failure_lines(runs, failed, lambda t: t.to_string(), str))
    assert "Every run failed" in text and "G²" not in text


def test_an_exact_fit_shows_no_rounding_noise():
    df = grid(three_way=0.0)  # the terms explain everything: the residual is rounding (about 1e-30)
    result = factorial_anova(df, "y", FACTORS, block=BLOCK)
    assert result.exact and result.table.loc["Residual", "sum_sq"] == 0.0
    assert (result.table.loc[["latent_dim", "lr x latent_dim"], "sum_sq"] == 0.0).all()
    text = lines(result)
    assert "fit every run exactly" in text and "e-" not in text


def test_no_effect_beyond_the_noise_is_said():
    rng = np.random.default_rng(3)  # pure noise: every p > 0.3
    df = grid(three_way=0.0).assign(y=lambda d: rng.normal(size=len(d)))
    text = lines(factorial_anova(df, "y", FACTORS, block=BLOCK))
    assert "No hyper-parameter moves ln(val_recon_mse) beyond what the seed and the noise do" in text


def test_the_failure_verdict_reads_the_table_when_pairs_never_or_always_fail():
    runs, failed = failures({(o, lr): 0 for o in OPT for lr in LR} | {("sgd", 1e-2): 20})  # one pair fails always
    text = "".join(failure_lines(runs, failed, lambda t: "", str))
    assert "G² = 0, df = 4, p = 1. Not beyond what odds per optimizer and per lr can fit" in text
    odds = {(o, lr): (3.0 if o == "sgd" else 1.0) * 3.0 ** j / 9 for o in OPT for j, lr in enumerate(LR)}
    runs, failed = failures({c: round(odd / (1 + odd) * 800) for c, odd in odds.items()}, runs=800)
    assert "No: odds per optimizer and per lr, multiplied, explain" in "".join(failure_lines(runs, failed, str, str))
