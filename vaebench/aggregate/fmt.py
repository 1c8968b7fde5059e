"""How numbers and configurations are written in figures, tables and sentences."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd


def fmt_lr(lr: float) -> str:
    """1e-05 -> '1e-5', 0.003 -> '3e-3': the study's labels, shorter than Python's."""
    exponent = math.floor(round(math.log10(lr), 9))
    mantissa = round(lr / 10 ** exponent, 6)
    return f"{mantissa:g}e{exponent}"


def fmt_spread(cell: pd.Series, relative: bool) -> str:
    """A cell's seed-to-seed sd: relative to its mean where the metric is on a log scale (a loss); the sd
    itself on a linear scale, where a mean near 0 (an ARI of a poor latent space) makes a ratio meaningless."""
    if not relative:
        return f"±{cell['sd']:.2g}"
    ratio = cell["spread"]
    return f"±{ratio:.1%}" if ratio < 0.095 else f"±{ratio:.0%}"  # seeds often agree to within 1 %


def fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def config_text(cell: pd.Series) -> str:
    return f"{cell['optimizer']}, lr {fmt_lr(cell['lr'])}, latent {int(cell['latent_dim'])}"


