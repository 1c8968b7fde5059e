"""Sensitivity statistics fitted with statsmodels: a factorial ANOVA of a metric and a model of failure.

`factorial_anova` fits y ~ the hyper-parameters, their two-way interactions and seed as a block (ordinary least
squares, every factor categorical) and gives each term's partial eta squared, SS_term / (SS_term + SS_residual):
the share of the variation left after the other terms that the term explains. Type II sums of squares, so on an
unbalanced grid (failed runs) each main effect is adjusted for the others, not for the interactions that contain it;
on a balanced grid they equal statsmodels' anova_lm(typ=2).

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

from vaebench.results import F

BLOCK = F.seed
# Sums of squares below this share of the total are rounding error of the fit (an exactly additive grid leaves a
# "residual" of 1e-31), not an effect: they are set to 0, so that no report shows a partial eta squared of 1e-31.
ROUNDING = 1e-10
# F tests need a residual to compare with: with fewer residual degrees of freedom than this, the residual's
# variance rests on a handful of runs and a p-value would claim a precision the design does not have (on BRCA
# an ANOVA with 1 residual df printed p = 0.0068). Partial eta squared is still given; F and p are not.
MIN_RESIDUAL_DF = 4


@dataclass
class Anova:
    table: pd.DataFrame  # one row per term (and Residual): df, sum_sq, F, p, partial_eta_sq
    n: int  # observations fitted
    dropped: list[str]  # terms left out: a factor with one level, or too few observations for the interactions
    single: list[str]  # of those, the factors (and block) with one level among the observations
    exact: bool  # the terms fit every observation exactly: no residual, so partial eta squared, F and p are undefined

    @property
    def residual_df(self) -> int:
        return int(round(self.table.loc["Residual", "df"]))

    @property
    def tested(self) -> bool:
        """Whether F and p are given: a residual with at least MIN_RESIDUAL_DF degrees of freedom."""
        return not self.exact and self.residual_df >= MIN_RESIDUAL_DF


def _term(factors: Sequence[str]) -> str:
    return ":".join(f"C({f})" for f in factors)


def term_name(factors: Sequence[str]) -> str:
    """How a term reads in the table: `optimizer`, `optimizer x lr`."""
    return " x ".join(factors)


def factorial_anova(df: pd.DataFrame, y: str, factors: Sequence[str], block: Optional[str] = None) -> Optional[Anova]:
    """Main effects and two-way interactions of `factors` on column `y`, plus `block` as a main effect only.

    Factors with one level carry no information and are left out; interactions are left out when the data has
    too few observations to estimate them with a residual left over. None when not even the main effects fit, or
    when y does not vary at all.
    """
    import statsmodels.formula.api as smf

    data = df[[y, *factors, *([block] if block else [])]].dropna().copy()
    data.columns = [f"c{i}" for i in range(data.shape[1])]  # any column name works in the formula
    name = dict(zip(data.columns[1:], [*factors, *([block] if block else [])]))
    varying = [c for c in data.columns[1:] if data[c].nunique() > 1]
    mains = [(c,) for c in varying if name[c] != block]
    pairs = list(itertools.combinations([c for (c,) in mains], 2))
    blocks = [(c,) for c in varying if name[c] == block]
    single = [term_name([name[c]]) for c in data.columns[1:] if c not in varying]
    dropped = list(single)
    total = float(((data["c0"] - data["c0"].mean()) ** 2).sum())
    if total == 0:
        return None

    def fit(terms: Sequence[tuple[str, ...]]):
        formula = "c0 ~ " + (" + ".join(_term(t) for t in terms) if terms else "1")
        with warnings.catch_warnings():  # empty cells (failed runs) make the design rank-deficient: the fit
            warnings.simplefilter("ignore")  # still gives the residual and its rank-based df, all we use
            return smf.ols(formula, data=data).fit()

    for terms in (mains + pairs + blocks, mains + blocks):
        if not terms:
            return None
        full = fit(terms)
        if full.df_resid > 0:
            break
        dropped += [term_name([name[c] for c in t]) for t in pairs]
    else:
        return None
    # Type II sums of squares as model comparisons, which stay right when failed runs leave cells empty (where
    # anova_lm's Wald tests on a rank-deficient fit do not): a term is added last to every term that does not
    # contain it, and its df is the rank it adds.
    rows = {}
    for t in terms:
        without = [u for u in terms if not set(t) <= set(u)]
        reduced, with_t = fit(without), fit(without + [t])
        df_t = round(reduced.df_resid - with_t.df_resid)
        if df_t == 0:  # aliased with the other terms by the missing cells: nothing of its own to estimate
            dropped.append(term_name([name[c] for c in t]))
            continue
        rows[term_name([name[c] for c in t])] = {"df": df_t, "sum_sq": max(reduced.ssr - with_t.ssr, 0.0)}
    rows["Residual"] = {"df": full.df_resid, "sum_sq": full.ssr}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.loc[table["sum_sq"] <= ROUNDING * total, "sum_sq"] = 0.0
    residual = float(table.loc["Residual", "sum_sq"])
    exact = residual == 0
    if exact:  # no variation left to compare the terms with
        table[["F", "p", "partial_eta_sq"]] = math.nan
    else:
        table["F"] = (table["sum_sq"] / table["df"]) / (residual / full.df_resid)
        table["p"] = stats.f.sf(table["F"], table["df"], full.df_resid)
        table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + residual)
        if full.df_resid < MIN_RESIDUAL_DF:  # too few runs beside the terms for a test
            table[["F", "p"]] = math.nan
    table.loc["Residual", ["F", "p", "partial_eta_sq"]] = math.nan
    return Anova(table=table[["df", "sum_sq", "F", "p", "partial_eta_sq"]], n=len(data), dropped=dropped,
                 single=single, exact=exact)


@dataclass
class FailureTest:
    cells: pd.DataFrame  # per optimizer x lr: runs, failed, failure rate
    lr_statistic: float  # likelihood ratio (deviance) of the additive model against one rate per cell
    df: int
    p: float


def failure_interaction(runs: pd.DataFrame, failed: pd.Series, a: str = F.optimizer,
                        b: str = F.lr) -> Optional[FailureTest]:
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
    statistic = float(fit.deviance)
    statistic = 0.0 if statistic < 1e-8 else statistic  # the additive model fits exactly: rounding, not a deviance
    df = (n_a - 1) * (n_b - 1)
    return FailureTest(cells=cells, lr_statistic=statistic, df=df, p=float(stats.chi2.sf(statistic, df)))


def p_text(p: float) -> str:
    """A p-value as a reader needs it: below 0.001 it only says "very unlikely by chance"."""
    if not np.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_is(p: float) -> str:
    """For a sentence: "p < 0.001", "p = 0.03"."""
    return f"p {p_text(p)}" if p < 0.001 else f"p = {p_text(p)}"


def terms_table(result: Anova) -> pd.DataFrame:
    """The ANOVA as the report shows it: one row per term, largest effect first, then the residual."""
    t = result.table
    terms = t.drop(index="Residual").sort_values("sum_sq", ascending=False)
    rows = [{"term": name, "df": int(r["df"]), "sum of squares": r["sum_sq"], "partial η²": r["partial_eta_sq"],
             "F": r["F"], "p": p_text(r["p"])} for name, r in terms.iterrows()]
    rows.append({"term": "residual", "df": int(t.loc["Residual", "df"]), "sum of squares": t.loc["Residual", "sum_sq"],
                 "partial η²": math.nan, "F": math.nan, "p": "—"})
    return pd.DataFrame(rows)


def partial_eta_sq(result: Optional[Anova], term: str) -> float:
    """A term's partial eta squared; NaN when it was not fitted (one level, too few runs) or is undefined."""
    if result is None or term not in result.table.index:
        return math.nan
    return float(result.table.loc[term, "partial_eta_sq"])


def untested(result: Anova) -> str:
    """Why an ANOVA gives no p-value, in words."""
    return (f"the residual has {result.residual_df} degree{'s' if result.residual_df != 1 else ''} of freedom "
            f"(runs beyond what the terms fit), fewer than the {MIN_RESIDUAL_DF} a test needs to say anything; more "
            "seeds (seed=0,1,2) or a larger grid give it one.")


def matters_most(result: Anova, y_name: str) -> str:
    """The sentence that answers "which hyper-parameter matters most?" from the ANOVA's terms."""
    terms = result.table.drop(index="Residual").sort_values("sum_sq", ascending=False)
    hyper = terms[terms.index != BLOCK]
    mains, pairs = hyper[~hyper.index.str.contains(" x ")], hyper[hyper.index.str.contains(" x ")]
    if mains.empty:
        return "No hyper-parameter varies among the successful runs: there is nothing to rank."
    if mains["sum_sq"].iloc[0] == 0 and (pairs.empty or pairs["sum_sq"].iloc[0] == 0):
        return f"No hyper-parameter changes {y_name} at all."
    if result.exact:
        return (f"The terms fit every run exactly (no residual: the runs vary by nothing but these terms), so partial "
                f"η² is undefined. By sum of squares, **{mains.index[0]}** moves {y_name} most.")

    def part(name: str, row: pd.Series) -> str:
        return f"{name} ({row['partial_eta_sq']:.2f})"

    top = mains.iloc[0]
    if not result.tested:
        others = [part(n, r) for n, r in mains.iloc[1:].iterrows()]
        return (f"By partial η², **{mains.index[0]}** moves {y_name} most ({top['partial_eta_sq']:.2f})"
                + (f", then {', '.join(others)}" if others else "") + f". No F test and no p-value: {untested(result)}")
    if (hyper["p"] >= 0.05).all():
        return (f"No hyper-parameter moves {y_name} beyond what the seed and the noise do (every p ≥ 0.05); the "
                f"largest partial η² is {part(mains.index[0], top)}.")
    others = [part(n, r) for n, r in mains.iloc[1:].iterrows()]
    text = (f"**{mains.index[0]} matters most** (partial η² = {top['partial_eta_sq']:.2f}, {p_is(top['p'])})"
            + (f", then {', '.join(others)}." if others else "."))
    strongest = pairs.iloc[0] if not pairs.empty else None
    if strongest is not None and strongest["p"] < 0.05 and strongest["sum_sq"] > top["sum_sq"]:
        a, b = pairs.index[0].split(" x ")
        text += (f" The {pairs.index[0]} interaction explains even more (partial η² = "
                 f"{strongest['partial_eta_sq']:.2f}): the best {b} depends on the {a}, so neither can be chosen alone.")
    elif strongest is not None and strongest["p"] < 0.05:
        text += f" The largest interaction is {part(pairs.index[0], strongest)}."
    if BLOCK in terms.index and terms.loc[BLOCK, "sum_sq"] > top["sum_sq"]:
        text += f" The seed moves {y_name} more than any hyper-parameter: read the differences with care."
    return text


def variation_lines(result: Optional[Anova], n_ok: int, y_name: str, table: Callable[[pd.DataFrame], str]) -> list[str]:
    """The report's "what explains the variation" part for one model: the ANOVA of y over its successful runs."""
    if result is None:
        if n_ok < 2:
            return [f"{n_ok} successful run{'s' if n_ok != 1 else ''}: too few for an analysis of variance.", ""]
        return [f"The {n_ok} successful runs do not vary enough for an analysis of variance (the same {y_name} "
                "everywhere, or no factor with two levels).", ""]
    lines = [f"Factorial ANOVA of {y_name} over {result.n} successful runs (statsmodels, type II sums of squares): "
             "optimizer, lr, latent_dim and their two-way interactions, seed as a block. Partial η² of a term is "
             "the share of the variation the other terms leave that it explains; shares of different terms do not "
             "add up to 1.", ""]
    interactions = [d for d in result.dropped if d not in result.single]
    if result.single:
        lines += [f"Only one level among the successful runs, so left out: {', '.join(result.single)}.", ""]
    if interactions:
        lines += [f"Not estimable from these successful runs (too few runs beside a residual, or combinations missing "
                  f"after failures), so left out: "
                  f"{', '.join(interactions)}.", ""]
    return lines + [table(terms_table(result)), "", matters_most(result, y_name), ""]


def failure_lines(runs: pd.DataFrame, failed: pd.Series, table: Callable[[pd.DataFrame], str],
                  lr_text: Callable[[float], str], what: str = "failed") -> list[str]:
    """The report's optimizer x lr failure table for one model and the test of their interaction. `what` names
    the ending counted ("failed", or "failed or collapsed": the runs that did not learn)."""
    if not failed.any():
        return ["No run failed: nothing to model.", ""]
    noun = "failure" if what == "failed" else f"ending {what}"
    test = failure_interaction(runs, failed)
    if test is None:
        return [f"One optimizer or one learning rate (or an optimizer x lr pair without runs): no test of whether "
                f"{noun} depends on the two together.", ""]
    cells = test.cells.assign(text=[f"{int(f)}/{int(n)}" for f, n in zip(test.cells["failed"], test.cells["runs"])])
    grid = cells.pivot(index=F.optimizer, columns=F.lr, values="text")
    grid.columns = [lr_text(v) for v in grid.columns]
    grid = grid.reset_index()
    label = "Failed runs" if what == "failed" else f"Runs {what}"
    lines = [f"{label} per optimizer x learning rate:", "", table(grid), ""]
    if failed.all():
        return lines + [f"Every run {what}: no optimizer x lr pair is safer than another.", ""]
    extreme = test.cells["failure rate"].isin([0.0, 1.0]).any()
    if test.p < 0.05:
        verdict = f" Yes: {noun} depends on the pair, not on each alone."
    elif extreme:  # odds of 0 or infinity per optimizer and per lr can place failures in one pair by themselves
        verdict = (" Not beyond what odds per optimizer and per lr can fit, which with pairs that never or always fail "
                   "includes failures confined to a few pairs: the table shows which.")
    else:
        verdict = (" No: odds per optimizer and per lr, multiplied, explain the failures." if what == "failed" else
                   f" No: odds per optimizer and per lr, multiplied, explain which runs {what}.")
    return lines + [f"Does {noun} depend on optimizer x lr beyond each on its own? Likelihood ratio of a logistic "
                    f"model with optimizer + lr against one {'failure ' if what == 'failed' else ''}rate per pair: G² = {test.lr_statistic:.3g}, "
                    f"df = {test.df}, {p_is(test.p)}.{verdict}", ""]
