"""Value statistics of one map, and the spatial reduction the other metrics share.

A gradient attribution is (C,H,W) per target; a CAM is (H,W). Spatial metrics work on
`spatial(map)`: the sum over channels, signed (IG's completeness makes per-pixel sums
meaningful); metrics of |a| take |.| after that sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xaicli.metrics.registry import DOWN, UP, Metric, declare

CHANNEL_NAMES = ("r", "g", "b")


def spatial(values: np.ndarray) -> np.ndarray:
    """(C,H,W) → (H,W) by summing channels; (H,W) and tabular (F,) are returned as float64."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3:
        return values.sum(axis=0)
    if values.ndim in (1, 2):
        return values
    raise ValueError(f"a map is (C,H,W), (H,W) or (F,), got shape {values.shape}")


def value_statistics(values: np.ndarray) -> dict[str, Any]:
    """mean, std, min, max, mean |a|, sum, positive/negative mass over the finite raw values.

    `neg_mass` is a magnitude (Σ max(−a, 0) ≥ 0), so `sum = pos_mass − neg_mass`.
    Per-channel sums/means exist for 3-channel maps only (R, G, B); else null.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    out: dict[str, Any] = {"nonfinite": int(v.size - finite.sum())}
    f = v[finite]
    if f.size:
        out.update(mean=float(f.mean()), std=float(f.std()), min=float(f.min()), max=float(f.max()),
                   mean_abs=float(np.abs(f).mean()), sum=float(f.sum()),
                   pos_mass=float(f[f > 0].sum()), neg_mass=float(abs(f[f < 0].sum())))
    else:
        out.update(dict.fromkeys(("mean", "std", "min", "max", "mean_abs", "sum", "pos_mass", "neg_mass")))
    three = v.ndim == 3 and v.shape[0] == 3
    for i, c in enumerate(CHANNEL_NAMES):
        ch = v[i][np.isfinite(v[i])] if three else np.empty(0)
        out[f"sum_{c}"] = float(ch.sum()) if ch.size else None
    for i, c in enumerate(CHANNEL_NAMES):
        ch = v[i][np.isfinite(v[i])] if three else np.empty(0)
        out[f"mean_{c}"] = float(ch.mean()) if ch.size else None
    return out


def gini(values: np.ndarray) -> float | None:
    """Sparseness: Gini index of |a| (0 = evenly spread, (n−1)/n = one pixel); null if Σ|a| = 0."""
    x = np.sort(np.abs(np.asarray(values, dtype=np.float64)).ravel())
    n, total = x.size, x.sum()
    if n == 0 or not np.isfinite(total) or total <= 0:
        return None
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def entropy(values: np.ndarray) -> float | None:
    """Complexity: Shannon entropy (nats) of p = |a| / Σ|a|; ln(n) when even; null if Σ|a| = 0."""
    x = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    total = x.sum()
    if x.size == 0 or not np.isfinite(total) or total <= 0:
        return None
    p = x[x > 0] / total
    return float(-np.sum(p * np.log(p)))


declare(Metric("value_statistics", "statistics", (
    "nonfinite", "mean", "std", "min", "max", "mean_abs", "sum", "pos_mass", "neg_mass",
    "sum_r", "sum_g", "sum_b", "mean_r", "mean_g", "mean_b"),
    "count of NaN/inf values; mean, std, min, max, mean |a|, sum, Σ max(a,0) and Σ max(−a,0) (a magnitude "
    "≥ 0: `sum = pos_mass − neg_mass`) of the finite raw values; the sums and means per input channel (R, G, B)",
    null="no finite value; the per-channel keys when the map has no 3 channels (gray model, CAM)", order=0))
declare(Metric("sparseness", "complexity", ("sparseness",),
               "Gini index of |a|: 0 = even, (n−1)/n = one pixel",
               null="Σ|a| = 0, or non-finite map", better=UP, order=0))
declare(Metric("complexity", "complexity", ("complexity",),
               "entropy (nats) of |a|/Σ|a|: ln n when even", null="Σ|a| = 0, or non-finite map",
               better=DOWN, order=1))
