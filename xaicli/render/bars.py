"""Horizontal bar charts: 1-D (tabular) attributions and a classifier's top classes.

A tabular model has no image to paint on, so its evidence reads best as sorted bars:
most positive at the top, most negative at the bottom, red for evidence for the
target and blue against it (the colours of the `signed` style).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes

POSITIVE = "#b2182b"   # RdBu_r's red end
NEGATIVE = "#2166ac"   # RdBu_r's blue end
MAX_FEATURES = 20


def inset_for_labels(ax: Axes, left: float = 0.42) -> None:
    """Shrink the axes inside its panel so the tick labels on the left stay in the panel."""
    pos = ax.get_position()
    ax.set_position([pos.x0 + left * pos.width, pos.y0 + 0.1 * pos.height,
                     (0.96 - left) * pos.width, 0.86 * pos.height])


def _style(ax: Axes, font: float) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_linewidth(0.5)
    ax.tick_params(labelsize=font * 0.8, length=2, width=0.5)


def attribution_bars(ax: Axes, values: np.ndarray, names: Sequence[str] | None, font: float,
                     limit: int = MAX_FEATURES) -> int:
    """Draw sorted feature attributions; returns how many features were left out (over `limit`)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel())
    if names is None or len(names) != values.size:
        names = [f"feature {i}" for i in range(values.size)]
    keep = np.argsort(-np.abs(values), kind="stable")[:limit]
    keep = keep[np.argsort(-values[keep], kind="stable")]      # most positive first
    y = np.arange(len(keep))[::-1]                              # ... drawn at the top
    v = values[keep]
    inset_for_labels(ax)
    ax.barh(y, v, color=[POSITIVE if x >= 0 else NEGATIVE for x in v], height=0.8)
    ax.set_yticks(y, [names[i] for i in keep])
    ax.axvline(0.0, color="0.3", linewidth=0.5)
    ax.set_ylim(-0.6, len(keep) - 0.4)
    _style(ax, font)
    return max(0, values.size - len(keep))


def probability_bars(ax: Axes, top: Sequence[tuple[str, float]], font: float) -> None:
    """A classifier's most probable classes, the predicted one at the top."""
    y = np.arange(len(top))[::-1]
    probs = [p for _, p in top]
    inset_for_labels(ax)
    ax.barh(y, probs, color=["#444444"] + ["#bbbbbb"] * (len(top) - 1), height=0.7)
    ax.set_yticks(y, [name for name, _ in top])
    ax.set_xlim(0.0, 1.0)
    ax.set_xticks([0.0, 0.5, 1.0])
    ax.set_ylim(-0.6, len(top) - 0.4)
    _style(ax, font)
