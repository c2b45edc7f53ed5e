"""Focus of a map on a region, and agreement between two regions.

The focus ratio is the "attribution ratio" of segmentation work: mean |a| inside the
mask divided by mean |a| outside it. It is unbounded (and infinite for a map that is
zero outside), so `focus_fraction`, the share of Σ|a| inside the mask, goes with it.
"""

from __future__ import annotations

import numpy as np

from xaicli.metrics.registry import UP, Metric, declare


def _mask(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    m = np.asarray(mask) != 0
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"mask shape {m.shape} does not match map shape {tuple(shape)}")
    return m


def area_fraction(mask: np.ndarray) -> float | None:
    m = _mask(mask)
    return float(m.mean()) if m.size else None


def focus_ratio(smap: np.ndarray, mask: np.ndarray) -> float | None:
    """mean |a| inside ÷ mean |a| outside; null for an empty or full mask, or zero outside (∞, 0/0)."""
    a = np.abs(np.asarray(smap, dtype=np.float64))
    m = _mask(mask, a.shape)
    if not m.any() or m.all():
        return None
    inside, outside = a[m].mean(), a[~m].mean()
    if not (np.isfinite(inside) and np.isfinite(outside)) or outside <= 0:
        return None
    return float(inside / outside)


def focus_fraction(smap: np.ndarray, mask: np.ndarray) -> float | None:
    """Σ|a| inside ÷ Σ|a| (in [0, 1]); null for an empty mask or an all-zero map."""
    a = np.abs(np.asarray(smap, dtype=np.float64))
    m = _mask(mask, a.shape)
    total = a.sum()
    if not m.any() or not np.isfinite(total) or total <= 0:
        return None
    return float(a[m].sum() / total)


def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """2|P∩G| / (|P|+|G|); null when both regions are empty."""
    p = _mask(pred)
    g = _mask(truth, p.shape)
    denom = p.sum() + g.sum()
    return float(2 * np.logical_and(p, g).sum() / denom) if denom else None


def iou(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """|P∩G| / |P∪G|; null when both regions are empty."""
    p = _mask(pred)
    g = _mask(truth, p.shape)
    union = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / union) if union else None


def _pair(key: str) -> tuple[str, str]:
    return key, "gt_" + key


declare(Metric("area_fraction", "localisation", _pair("area_fraction"),
               "share of pixels in the region (`gt_`: the ground truth)", null="no mask", order=0))
declare(Metric("focus_ratio", "localisation", _pair("focus_ratio"),
               "mean |a| inside ÷ mean |a| outside (the \"attribution ratio\")",
               null="no mask, empty or full mask, zero outside (∞: then `focus_fraction` is 1), non-finite map",
               better=UP, order=1))
declare(Metric("focus_fraction", "localisation", _pair("focus_fraction"), "Σ|a| inside ÷ Σ|a|, in [0,1]",
               null="no/empty mask, all-zero map", better=UP, order=2))
declare(Metric("dice", "localisation", ("dice",), "predicted region vs ground truth: 2|P∩G| / (|P|+|G|) "
               "(segmenters)", null="no prediction or no ground truth; both empty", better=UP, order=20))
declare(Metric("iou", "localisation", ("iou",), "predicted region vs ground truth: |P∩G| / |P∪G|",
               null="no prediction or no ground truth; both empty", better=UP, order=21))
