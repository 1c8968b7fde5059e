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
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats


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
