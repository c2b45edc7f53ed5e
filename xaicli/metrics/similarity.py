"""Rank statistics: comparing two maps (the randomisation sanity check) and ranking pixels."""

from __future__ import annotations

import numpy as np


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    first = np.r_[True, sx[1:] != sx[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, x.size])
    ranks = np.empty(x.size)
    ranks[order] = (starts + (counts + 1) / 2.0)[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation of two maps; null if either is constant or non-finite."""
    x, y = _pair(x, y)
    if x is None:
        return None
    return pearson(rankdata(x), rankdata(y))


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both flattened as float64; (None, None) when fewer than two or any non-finite value."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.size} vs {y.size}")
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None, None
    return x, y


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two equal-length vectors; null if either is constant or non-finite."""
    x, y = _pair(x, y)
    if x is None:
        return None
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else None
