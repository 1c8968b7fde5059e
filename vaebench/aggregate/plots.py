"""The study's dot-plots: one figure per model (a panel per optimizer) and an overview of every model on one
colour scale."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: sweeps run on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator  # noqa: E402

from vaebench.aggregate.fmt import fmt_lr, fmt_spread  # noqa: E402
from vaebench.aggregate.stats import LIKELIHOODS, LINEAR, direction, is_log_scale, worse  # noqa: E402
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
# nll_vs_ppca (val_nll_is - baseline_ppca_nll, the calibrated objective's): below 0 the VAE's held-out likelihood
# beats probabilistic PCA with as many components.
REFERENCE_LINES = {F.recon_vs_mean: "1 = mean predictor", F.recon_vs_pca: "1 = PCA", "nll_vs_ppca": "0 = probabilistic PCA"}
REFERENCE_VALUES = {"nll_vs_ppca": 0.0}  # the others' line is at 1
# A bar through the dot, drawn behind it and longer than it on both sides (─●─): the dot's colour stays visible
# however small the dot, and the bar says the run did not learn. It hid the smallest dots when drawn on top.
COLLAPSED = dict(marker="_", linewidths=2.0, color="black")
BAR_OVERHANG = 10.0  # points the bar reaches beyond the dot, both sides together
VALUE_FONT = 7.5  # points: each cell's value above its dot, the seeds' spread below
# A dot's size is the epochs it trained, whether the stopping rule fired or the limit stopped it; the ring
# says which. The titles said "epochs to converge", which a ringed dot did not.
SIZE = "size = epochs trained (ring: hit the epoch limit, not converged)"
RING_LABEL = "ring: hit epoch limit, not converged"
COLLAPSED_LABEL = "bar through a dot: a run collapsed\n(recon_vs_mean ≥ 0.98 or no active unit)"
VALUE_LABEL = "number above a dot: its value\n(mean over seeds)"


def value_text(value: float) -> str:
    """A cell's value as printed beside its dot and on the colour bar: three significant digits, trailing zeros
    kept (1.00 beside 1.01, not 1)."""
    return f"{value:#.3g}".rstrip(".")


def colour_ticks(lo: float, hi: float, data_lo: float, data_hi: float, log: bool,
                 reference: Optional[float] = None) -> list[float]:
    """Ticks for the colour bar that span the data: its smallest and largest value, and round numbers between
    them that are not crowded against those two. LogFormatter labelled only 0.9 and 1 on a bar whose data
    ran from 1.0 to 1.22."""
    if not (np.isfinite(data_lo) and np.isfinite(data_hi)):
        data_lo, data_hi = lo, hi
    if log and hi / lo > 30:  # several decades: 1, 2 and 5 of each
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        inner = [m * 10.0 ** d for d in decades for m in (1, 2, 5)]
    else:
        inner = list(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(data_lo, data_hi))
    gap = (math.log(hi / lo) if log else hi - lo) * 0.1

    def distance(a: float, b: float) -> float:
        return abs(math.log(a / b)) if log else abs(a - b)

    ends = sorted({data_lo, data_hi})
    if reference is not None and lo <= reference <= hi and all(distance(reference, e) > gap for e in ends):
        ends.append(reference)  # the baseline's line gets its number unless a data end already sits there
    inner = [t for t in inner if lo <= t <= hi and all(distance(t, e) > gap for e in ends)]
    return sorted(set(ends + inner))


@dataclass
class Scales:
    """One colour scale and one size scale per figure, so that every panel of it reads the same."""
    norm: Normalize
    log: bool
    cmap: str
    epochs_lo: float
    epochs_hi: float
    small: float = 40.0  # marker area in points^2: the smallest dot still shows its colour
    large: float = 300.0
    data_lo: float = math.nan  # the smallest and largest value drawn in colour (the bar's end ticks)
    data_hi: float = math.nan

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
    data_lo, data_hi = lo, hi
    if metric in REFERENCE_LINES and metric in REFERENCE_VALUES:  # a difference: 0 inside the bar, a little room
        pad = 0.03 * max(hi - lo, abs(lo), abs(hi), 1e-12)
        lo, hi = min(lo, REFERENCE_VALUES[metric] - pad), max(hi, REFERENCE_VALUES[metric] + pad)
    elif metric in REFERENCE_LINES:  # a ratio: 1 inside the bar, with a little room on both sides for its line
        lo, hi = min(lo, 1 / 1.03), max(hi, 1.03)
    if lo == hi:  # a single value still needs a scale that contains it
        lo, hi = (lo / 1.1, hi * 1.1) if log else (lo - 1, hi + 1)
    epochs = figure_cells["epochs"].dropna()
    cmap = CMAP if worse(metric) > 0 else f"{CMAP}_r"  # dark is always the good end
    return Scales(norm=LogNorm(lo, hi) if log else Normalize(lo, hi), log=log, cmap=cmap,
                  epochs_lo=epochs.min() if len(epochs) else 0, epochs_hi=epochs.max() if len(epochs) else 0,
                  data_lo=data_lo if len(values) else math.nan, data_hi=data_hi if len(values) else math.nan)


def draw_panel(ax, panel_cells: pd.DataFrame, lvl: dict[str, list], scales: Scales) -> None:
    """One optimizer of one model: x = latent size, y = learning rate, both as ordered categories. Each dot
    has its value printed above it (the colour alone hid differences: 0.75 and 0.87 looked the same at print
    size) and, with several seeds, their spread below it."""
    x_of = {v: i for i, v in enumerate(lvl[F.latent_dim])}
    y_of = {v: i for i, v in enumerate(lvl[F.lr])}
    c = panel_cells.assign(x=panel_cells[F.latent_dim].map(x_of), y=panel_cells[F.lr].map(y_of))
    dots = c[c["n_ok"] > 0]
    sizes = scales.size(dots["epochs"]) if len(dots) else np.array([])
    if len(dots):
        ax.scatter(dots["x"], dots["y"], c=dots["mean"], cmap=scales.cmap, norm=scales.norm, s=sizes,
                   edgecolors=np.where(dots["hit_limit"], "black", "white"),
                   linewidths=np.where(dots["hit_limit"], 2.0, 0.5), zorder=3, label="ok")
    collapsed = (dots["n_collapsed"] > 0).to_numpy() if len(dots) else np.array([], dtype=bool)
    if collapsed.any():  # behind the dot (zorder 2), longer than it
        bar = (np.sqrt(sizes[collapsed]) + BAR_OVERHANG) ** 2
        ax.scatter(dots["x"][collapsed], dots["y"][collapsed], s=bar, zorder=2, label="collapsed", **COLLAPSED)
    for (_, cell), area in zip(dots.iterrows(), sizes):
        radius = math.sqrt(area) / 2 + (1.5 if cell["hit_limit"] else 0.5)  # points, the ring included
        ax.annotate(value_text(cell["mean"]), (cell["x"], cell["y"]), xytext=(0, radius + 0.5),
                    textcoords="offset points", ha="center", va="bottom", fontsize=VALUE_FONT, zorder=5)
        if cell["n_ok"] >= 2:  # several seeds: the spread under the mean's dot
            ax.annotate(fmt_spread(cell, scales.log), (cell["x"], cell["y"]), xytext=(0, -radius - 0.5),
                        textcoords="offset points", ha="center", va="top", fontsize=VALUE_FONT - 0.5,
                        color="0.3", zorder=5)
    for status, style in FAILURE_MARKERS.items():
        alone = c[(c["n_ok"] == 0) & (c["failure"] == status)]  # every run of the cell failed
        mixed = c[(c["n_ok"] > 0) & (c[f"n_{status}"] > 0)]  # some seeds failed: a small mark beside the dot
        if len(alone):
            ax.scatter(alone["x"], alone["y"], s=110, linewidths=1.5, zorder=4, label=status,
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
        if len(mixed):
            ax.scatter(mixed["x"] + 0.3, mixed["y"] + 0.3, s=30, linewidths=1, zorder=4, label=f"{status} (some seeds)",
                       marker=style["marker"], facecolors=style["facecolor"], edgecolors=style["edgecolor"])
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
    if (figure_cells["n_ok"] > 0).any():
        handles.append(Line2D([], [], ls="", label=VALUE_LABEL))
    if figure_cells["n_collapsed"].any():  # a line through a dot, as drawn
        handles.append(Line2D([], [], color=COLLAPSED["color"], lw=COLLAPSED["linewidths"], marker="o",
                              markerfacecolor="0.6", markeredgecolor="white", markersize=7, label=COLLAPSED_LABEL))
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
    panel_h = max(2.2, 0.6 + 0.65 * len(lvl[F.lr]))  # a dot, its value above and its spread below per row
    handles = legend_handles(figure_cells, scales)
    legend_lines = sum(1 + h.get_label().count("\n") for h in handles)
    # Tall enough for the legend beside the panels: a long one (failures, seeds) overlapped the title.
    height = max(0.9 + panel_h * len(rows), 1.2 + 0.27 * legend_lines + 0.12 * len(handles))
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(rows), ncols, squeeze=False, sharex=True, sharey=True, layout="constrained",
                                 figsize=(1.0 + panel_w * ncols + 3.4, height))
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
        reference = REFERENCE_VALUES.get(metric, 1.0) if metric in REFERENCE_LINES else None
        if reference is not None:
            bar.ax.axhline(reference, color="black", linewidth=2)
        lo, hi = scales.norm.vmin, scales.norm.vmax
        bar.ax.yaxis.set_major_locator(FixedLocator(colour_ticks(lo, hi, scales.data_lo, scales.data_hi, scales.log,
                                                                  reference)))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: value_text(v)))
        bar.ax.yaxis.set_minor_locator(FixedLocator([]))
        fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False, labelspacing=1.0,
                   borderpad=0.2)
        # A narrow grid (one optimizer, two latent sizes) is narrower than the title: wrapped, not clipped.
        width = int(fig.get_figwidth() * 10)
        fig.suptitle("\n".join(line for part in title.split("\n") for line in textwrap.wrap(part, width=width)),
                     fontsize=11)
    return fig


def scale_text(values: pd.Series, metric: str, log: bool) -> str:
    """Which colour scale, and why not log when it is not: a reader must not take a linear bar for a log one."""
    if values.empty:
        return "no successful run: nothing in colour"
    if log:
        return "log scale"
    if metric in LIKELIHOODS:
        return "linear scale: a log-likelihood, nats per gene"
    if metric in LINEAR:
        return "linear scale: a score that can be ≤ 0"
    return "linear scale: values ≤ 0"


def plot_model(model_cells: pd.DataFrame, lvl: dict[str, list], model: str, metric: str, context: str = ""):
    """The study's figure for one model: one panel per optimizer. `context` (runs_context: the objective and the
    data set) opens the title, so that a figure copied out of its report still says what it shows."""
    return _grid_figure(model_cells, lvl, [model], metric,
                        f"{model}" + (f" · {context}" if context else "")
                        + f"\ncolour = {metric} ({direction(metric)}), {SIZE}")


def plot_overview(all_cells: pd.DataFrame, lvl: dict[str, list], metric: str, context: str = ""):
    """Every model on one colour scale, so that models compare at a glance (only drawn for two or more models:
    with one it would repeat that model's figure)."""
    return _grid_figure(all_cells, lvl, lvl[F.model], metric,
                        "all models" + (f" · {context}" if context else "")
                        + f"\ncolour = {metric} ({direction(metric)}, one scale), {SIZE}")


def save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for f in formats:
        path = out / f"{stem}.{f}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


