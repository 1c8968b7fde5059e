"""Sensitivity statistics fitted with statsmodels: a factorial ANOVA of a metric and a model of failure.

`factorial_anova` fits y ~ the hyper-parameters, their two-way interactions and seed as a block (ordinary least
squares, every factor categorical) and gives each term's partial eta squared, SS_term / (SS_term + SS_residual):
the share of the variation left after the other terms that the term explains. Type II sums of squares, so on an
unbalanced grid (failed runs) each main effect is adjusted for the others, not for the interactions that contain it.

`failure_interaction` asks whether the failure rate depends on optimizer x lr beyond each factor on its own: the
table of failures per cell, and a likelihood-ratio test of the additive logistic model (failure ~ optimizer + lr)
against the model with one rate per cell. The latter needs no fit (its maximum is each cell's own rate), so cells
that always or never fail, common in a sweep, do not break it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

FACTORS = ("optimizer", "lr", "latent_dim")  # the study's grid
BLOCK = "seed"


@dataclass
class Anova:
    table: pd.DataFrame  # one row per term (and Residual): df, sum_sq, F, p, partial_eta_sq
    n: int  # observations fitted
    dropped: list[str]  # terms left out: a factor with one level, or too few observations for the interactions


def _term(factors: Sequence[str]) -> str:
    return ":".join(f"C({f})" for f in factors)


def term_name(factors: Sequence[str]) -> str:
    """How a term reads in the table: `optimizer`, `optimizer x lr`."""
    return " x ".join(factors)


def factorial_anova(df: pd.DataFrame, y: str, factors: Sequence[str], block: Optional[str] = None) -> Optional[Anova]:
    """Main effects and two-way interactions of `factors` on column `y`, plus `block` as a main effect only.

    Factors with one level carry no information and are left out; interactions are left out when the data has
    too few observations to estimate them with a residual left over. None when not even the main effects fit.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = df[[y, *factors, *([block] if block else [])]].dropna().copy()
    data.columns = [f"c{i}" for i in range(data.shape[1])]  # any column name works in the formula
    name = dict(zip(data.columns[1:], [*factors, *([block] if block else [])]))
    varying = [c for c in data.columns[1:] if data[c].nunique() > 1]
    mains = [(c,) for c in varying if name[c] != block]
    pairs = list(itertools.combinations([c for (c,) in mains], 2))
    blocks = [(c,) for c in varying if name[c] == block]
    dropped = [term_name([name[c]]) for c in data.columns[1:] if c not in varying]
    for terms in (mains + pairs + blocks, mains + blocks):
        if not terms:
            return None
        formula = "c0 ~ " + " + ".join(_term(t) for t in terms)
        fit = smf.ols(formula, data=data).fit()
        if fit.df_resid > 0:
            break
        dropped += [term_name([name[c] for c in t]) for t in pairs]
    else:
        return None
    with warnings.catch_warnings():  # statsmodels warns on rank-deficient designs (empty cells); the SS stand
        warnings.simplefilter("ignore")
        table = anova_lm(fit, typ=2)
    residual = float(table.loc["Residual", "sum_sq"])
    table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + residual)
    table.loc["Residual", "partial_eta_sq"] = math.nan
    labels = {_term(t): term_name([name[c] for c in t]) for t in terms}
    table.index = [labels.get(i, i) for i in table.index]
    table = table.rename(columns={"PR(>F)": "p"})[["df", "sum_sq", "F", "p", "partial_eta_sq"]]
    return Anova(table=table, n=len(data), dropped=dropped)


@dataclass
class FailureTest:
    cells: pd.DataFrame  # per optimizer x lr: runs, failed, failure rate
    lr_statistic: float  # likelihood ratio (deviance) of the additive model against one rate per cell
    df: int
    p: float


def failure_interaction(runs: pd.DataFrame, failed: pd.Series, a: str = "optimizer", b: str = "lr") -> Optional[FailureTest]:
    """Does failure depend on a x b beyond a and b alone? None when either has one level or a cell is empty."""
    import statsmodels.api as sm

    table = pd.DataFrame({a: runs[a], b: runs[b], "failed": failed.astype(int)}).groupby([a, b])["failed"]
    cells = pd.DataFrame({"runs": table.size(), "failed": table.sum()}).reset_index()
    cells["failure rate"] = cells["failed"] / cells["runs"]
    n_a, n_b = cells[a].nunique(), cells[b].nunique()
    if n_a < 2 or n_b < 2 or len(cells) < n_a * n_b:
        return None
    # Additive logistic model on the cells (binomial counts): its deviance against the saturated model, one
    # rate per cell, is the likelihood-ratio statistic of the interaction.
    design = pd.get_dummies(cells[[a, b]].astype(str), drop_first=True).astype(float)
    endog = np.column_stack([cells["failed"], cells["runs"] - cells["failed"]])
    with warnings.catch_warnings():  # cells at 0 % or 100 %: coefficients run off, the deviance converges
        warnings.simplefilter("ignore")
        fit = sm.GLM(endog, sm.add_constant(design, has_constant="add"), family=sm.families.Binomial()).fit()
    statistic = max(float(fit.deviance), 0.0)
    df = (n_a - 1) * (n_b - 1)
    return FailureTest(cells=cells, lr_statistic=statistic, df=df, p=float(stats.chi2.sf(statistic, df)))


def terms_table(result: Anova) -> pd.DataFrame:
    """The ANOVA as the report shows it: one row per term, largest partial eta squared first, then the residual."""
    t = result.table
    terms = t.drop(index="Residual").sort_values("partial_eta_sq", ascending=False)
    rows = [{"term": name, "df": int(r["df"]), "partial η²": r["partial_eta_sq"], "F": r["F"], "p": r["p"]}
            for name, r in terms.iterrows()]
    rows.append({"term": "residual", "df": int(t.loc["Residual", "df"]), "partial η²": math.nan, "F": math.nan,
                 "p": math.nan})
    return pd.DataFrame(rows)


def variation_lines(ok: pd.DataFrame, y: pd.Series, y_name: str, table: Callable[[pd.DataFrame], str]) -> list[str]:
    """The report's "what explains the variation" part for one model: the ANOVA of y over its successful runs."""
    frame = ok.assign(y=y.to_numpy())
    result = factorial_anova(frame, "y", FACTORS, block=BLOCK)
    if result is None:
        return ["Too few successful runs for an analysis of variance.", ""]
    lines = [f"Factorial ANOVA of {y_name} over {result.n} successful runs: optimizer, lr, latent_dim and their "
             "two-way interactions, seed as a block (when there are several). Partial η² of a term is the share of "
             "the variation the other terms leave that it explains; shares of different terms do not add up to 1.",
             ""]
    if result.dropped:
        lines += [f"Left out (one level, or too few runs to estimate them beside a residual): "
                  f"{', '.join(result.dropped)}.", ""]
    return lines + [table(terms_table(result)), ""]


def failure_lines(runs: pd.DataFrame, failed: pd.Series, table: Callable[[pd.DataFrame], str],
                  lr_text: Callable[[float], str]) -> list[str]:
    """The report's optimizer x lr failure table for one model and the test of their interaction."""
    test = failure_interaction(runs, failed)
    if test is None or not test.cells["failed"].any():
        return []
    cells = test.cells.assign(text=[f"{int(f)}/{int(n)}" for f, n in zip(test.cells["failed"], test.cells["runs"])])
    grid = cells.pivot(index="optimizer", columns="lr", values="text")
    grid.columns = [lr_text(v) for v in grid.columns]
    grid = grid.reset_index()
    return ["Failed runs per optimizer x learning rate:", "", table(grid), "",
            f"Does failure depend on optimizer x lr beyond each on its own? Likelihood ratio of a logistic model "
            f"with optimizer + lr against one failure rate per cell: G² = {test.lr_statistic:.3g}, df = {test.df}, "
            f"p = {test.p:.3g}" + (" (yes: the interaction matters)." if test.p < 0.05 else "."), ""]
