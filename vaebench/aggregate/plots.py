"""The study's dot-plots: one figure per model (a panel per optimizer) and an overview of every model on one
colour scale."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: sweeps run on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from vaebench.aggregate.fmt import fmt_lr, fmt_spread  # noqa: E402
from vaebench.aggregate.stats import LINEAR, direction, is_log_scale, worse  # noqa: E402
from vaebench.results import DIVERGED, F  # noqa: E402

# Failures are drawn in black shapes, never in colour, so they cannot be read as a metric value.
FAILURE_MARKERS = {DIVERGED: dict(marker="X", facecolor="black", edgecolor="black"),
                   "oom": dict(marker="s", facecolor="none", edgecolor="black"),
                   "error": dict(marker="^", facecolor="dimgrey", edgecolor="black")}
FAILURE_LABELS = {DIVERGED: "diverged: loss or weights became NaN/Inf", "oom": "oom: out of memory",
                  "error": "error: any other exception"}
CMAP = "viridis"  # perceptually uniform and colour-blind safe
# Ratios to a baseline: 1 (no better than the baseline) is always on the colour bar, drawn as a line, so that
# a figure says at a glance whether anything beat it, whatever the data set.
REFERENCE_LINES = {F.recon_vs_mean: "1 = mean predictor", F.recon_vs_pca: "1 = PCA"}
COLLAPSED = dict(marker="_", s=150, linewidths=2.5, color="black")  # a bar across the dot: flat, did not learn
# A dot's size is the epochs it trained, whether the stopping rule fired or the limit stopped it; the ring
# says which. The titles said "epochs to converge", which a ringed dot did not.
SIZE = "size = epochs trained (ring: hit the epoch limit, not converged)"
RING_LABEL = "ring: hit epoch limit, not converged"
COLLAPSED_LABEL = "bar across a dot: a run collapsed\n(recon_vs_mean ≥ 0.98 or no active unit)"


class PlainLogFormatter(LogFormatter):
    """Colour bar labels as 0.07, not 7 x 10^-2; which ticks get a label is still LogFormatter's choice."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


@dataclass
class Scales:
    """One colour scale and one size scale per figure, so that every panel of it reads the same."""
    norm: Normalize
    log: bool
    cmap: str
    epochs_lo: float
    epochs_hi: float
    small: float = 25.0  # marker area in points^2
    large: float = 320.0

    def size(self, epochs):
        if self.epochs_hi <= self.epochs_lo:
            return np.full(np.shape(epochs), (self.small + self.large) / 2)
        t = (np.asarray(epochs, dtype=float) - self.epochs_lo) / (self.epochs_hi - self.epochs_lo)
        # The legend's reference sizes are whole epochs and can round to just outside a range of seed means
        # (2.5 -> 2): clipped, so that no area goes negative.
        return self.small + np.clip(t, 0, 1) * (self.large - self.small)


def scales_for(figure_cells: pd.DataFrame, metric: str) -> Scales:
    values = figure_cells["mean"].dropna()
    log = is_log_scale(values, metric)
    lo, hi = (values.min(), values.max()) if len(values) else (1.0, 1.0)
    if metric in REFERENCE_LINES:  # 1 inside the bar, with room on both sides for its line
        lo, hi = min(lo, 1 / 1.15), max(hi, 1.15)
    if lo == hi:  # a single value still needs a scale that contains it
        lo, hi = (lo / 1.1, hi * 1.1) if log else (lo - 1, hi + 1)
    epochs = figure_cells["epochs"].dropna()
    cmap = CMAP if worse(metric) > 0 else f"{CMAP}_r"  # dark is always the good end
    return Scales(norm=LogNorm(lo, hi) if log else Normalize(lo, hi), log=log, cmap=cmap,
                  epochs_lo=epochs.min() if len(epochs) else 0, epochs_hi=epochs.max() if len(epochs) else 0)


def draw_panel(ax, panel_cells: pd.DataFrame, lvl: dict[str, list], scales: Scales) -> None:
    """One optimizer of one model: x = latent size, y = learning rate, both as ordered categories."""
    x_of = {v: i for i, v in enumerate(lvl[F.latent_dim])}
    y_of = {v: i for i, v in enumerate(lvl[F.lr])}
    c = panel_cells.assign(x=panel_cells[F.latent_dim].map(x_of), y=panel_cells[F.lr].map(y_of))
    dots = c[c["n_ok"] > 0]
    if len(dots):
        ax.scatter(dots["x"], dots["y"], c=dots["mean"], cmap=scales.cmap, norm=scales.norm,
                   s=scales.size(dots["epochs"]),
                   edgecolors=np.where(dots["hit_limit"], "black", "white"),
                   linewidths=np.where(dots["hit_limit"], 2.0, 0.5), zorder=3, label="ok")
    collapsed = dots[dots["n_collapsed"] > 0]
    if len(collapsed):
        ax.scatter(collapsed["x"], collapsed["y"], zorder=4, label="collapsed", **COLLAPSED)
    for status, style in FAILURE_MARKERS.items():
        alone = c[(c["n_ok"] == 0) & (c["failure"] == status)]  # every run of the cell failed
        mixed = c[(c["n_ok"] > 0) & (c[f"n_{status}"] > 0)]  # some seeds failed: a small mark beside the dot
        if len(alone):
            ax.scatter(alone["x"], alone["y"], s=110, linewidths=1.5, zorder=4, label=status,
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
        if len(mixed):
            ax.scatter(mixed["x"] + 0.3, mixed["y"] + 0.3, s=30, linewidths=1, zorder=4, label=f"{status} (some seeds)",
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
    for _, cell in c[c["n_ok"] >= 2].iterrows():  # several seeds: the spread under the mean's dot
        ax.annotate(fmt_spread(cell, scales.log), (cell["x"], cell["y"]), xytext=(0, -11), textcoords="offset points",
                    ha="center", va="top", fontsize=6.5, color="0.25", zorder=5)
    ax.set_xticks(range(len(lvl[F.latent_dim])), [str(v) for v in lvl[F.latent_dim]])
    ax.set_yticks(range(len(lvl[F.lr])), [fmt_lr(v) for v in lvl[F.lr]])
    ax.set_xlim(-0.6, len(lvl[F.latent_dim]) - 0.4)
    ax.set_ylim(-0.6, len(lvl[F.lr]) - 0.4)


def legend_handles(figure_cells: pd.DataFrame, scales: Scales) -> list:
    """Size legend (epochs), then only the markings that occur in this figure."""
    handles = []
    epochs = figure_cells["epochs"].dropna()
    if len(epochs):
        for e in sorted({int(round(v)) for v in np.linspace(epochs.min(), epochs.max(), 3)}):
            handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="0.6", markeredgecolor="white",
                                  markersize=math.sqrt(float(scales.size(e))), label=f"{e} epochs"))
    if figure_cells["n_collapsed"].any():
        handles.append(Line2D([], [], ls="", marker=COLLAPSED["marker"], color=COLLAPSED["color"], markersize=12,
                              markeredgewidth=COLLAPSED["linewidths"], label=COLLAPSED_LABEL))
    if figure_cells["hit_limit"].any():
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="0.6", markeredgecolor="black",
                              markeredgewidth=2, markersize=10, label=RING_LABEL))
    for status, style in FAILURE_MARKERS.items():
        if (figure_cells[f"n_{status}"] > 0).any():
            handles.append(Line2D([], [], ls="", marker=style["marker"], markerfacecolor=style["facecolor"],
                                  markeredgecolor=style["edgecolor"], markersize=9, label=FAILURE_LABELS[status]))
    if ((figure_cells["n_ok"] > 0) & (figure_cells["n_failed"] > 0)).any():
        handles.append(Line2D([], [], ls="", label="small mark beside a dot:\nsome seeds failed"))
    if (figure_cells["n_ok"] >= 2).any():
        handles.append(Line2D([], [], ls="", label="±: seed-to-seed sd" + (" / mean" if scales.log else "")))
    return handles


def _grid_figure(figure_cells: pd.DataFrame, lvl: dict[str, list], rows: list[str], metric: str, title: str):
    """Rows of models x columns of optimizers, one colour scale, one size scale, legends on the right."""
    scales = scales_for(figure_cells, metric)
    ncols = len(lvl[F.optimizer])
    panel_w = max(2.2, 0.6 + 0.55 * len(lvl[F.latent_dim]))  # inches; room for the title of a narrow grid
    panel_h = max(2.2, 0.6 + 0.45 * len(lvl[F.lr]))  # room for the colour bar's label
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(rows), ncols, squeeze=False, sharex=True, sharey=True, layout="constrained",
                                 figsize=(1.0 + panel_w * ncols + 3.4, 0.9 + panel_h * len(rows)))
        for i, model in enumerate(rows):
            for j, opt in enumerate(lvl[F.optimizer]):
                ax = axes[i][j]
                panel = figure_cells[(figure_cells[F.model] == model) & (figure_cells[F.optimizer] == opt)]
                draw_panel(ax, panel, lvl, scales)
                failed = int(panel["n_failed"].sum())
                ax.set_title(f"{model} · {opt}" + (f" ({failed} failed)" if failed else ""), fontsize=10)
                if i == len(rows) - 1:
                    ax.set_xlabel("latent size")
                if j == 0:
                    ax.set_ylabel("learning rate")
        mappable = plt.cm.ScalarMappable(norm=scales.norm, cmap=scales.cmap)
        bar = fig.colorbar(mappable, ax=axes, shrink=0.9 if len(rows) > 1 else 1.0, pad=0.02)
        # Two lines: one is longer than a one-row figure is tall.
        scale = scale_text(figure_cells["mean"].dropna(), metric, scales.log)
        if metric in REFERENCE_LINES:
            scale += f"; line: {REFERENCE_LINES[metric]}"
        bar.set_label(f"mean {metric}\n({scale})")
        if metric in REFERENCE_LINES:
            bar.ax.axhline(1.0, color="black", linewidth=2)
        if scales.log:
            bar.ax.yaxis.set_major_formatter(PlainLogFormatter())
            bar.ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        fig.legend(handles=legend_handles(figure_cells, scales), loc="outside right center", fontsize=8,
                   frameon=False, labelspacing=1.2, borderpad=0.2)
        # A narrow grid (one optimizer, two latent sizes) is narrower than the title: wrapped, not clipped.
        fig.suptitle("\n".join(textwrap.wrap(title, width=int(fig.get_figwidth() * 10))), fontsize=11)
    return fig


def scale_text(values: pd.Series, metric: str, log: bool) -> str:
    """Which colour scale, and why not log when it is not: a reader must not take a linear bar for a log one."""
    if values.empty:
        return "no successful run: nothing in colour"
    if log:
        return "log scale"
    if metric in LINEAR:
        return "linear scale: a score that can be ≤ 0"
    return "linear scale: values ≤ 0"


def plot_model(model_cells: pd.DataFrame, lvl: dict[str, list], model: str, metric: str):
    """The study's figure for one model: one panel per optimizer."""
    return _grid_figure(model_cells, lvl, [model], metric,
                        f"{model}: colour = {metric} ({direction(metric)}), {SIZE}")


def plot_overview(all_cells: pd.DataFrame, lvl: dict[str, list], metric: str):
    """Every model on one colour scale, so that models compare at a glance."""
    return _grid_figure(all_cells, lvl, lvl[F.model], metric,
                        f"all models: colour = {metric} ({direction(metric)}, one scale), {SIZE}")


def save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for f in formats:
        path = out / f"{stem}.{f}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


