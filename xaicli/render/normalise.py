"""Display-only normalisation: records keep raw values, figures need a bounded colour scale.

Outliers are clipped by Captum's cumulative-mass rule so that figures made by `xai`
look like the ones readers know from Captum: sort |values|, and clip at the value where
the running sum first reaches `clip` percent of the total (`--clip 98` = Captum's
default `outlier_perc=2`). A few extreme pixels then no longer wash out the rest.
"""

from __future__ import annotations

import numpy as np


def clip_value(values: np.ndarray, clip: float = 98.0) -> float:
    """The cumulative-mass threshold of |values| (non-finite values ignored).

    Returns 0.0 for an empty or all-zero input; callers treat that as "nothing to scale".
    """
    if not 0.0 < clip <= 100.0:
        raise ValueError(f"clip must be in (0, 100], got {clip}")
    v = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    v = np.sort(v[np.isfinite(v)])
    if v.size == 0:
        return 0.0
    cum = np.cumsum(v)
    if cum[-1] <= 0.0:
        return 0.0
    idx = int(np.searchsorted(cum, cum[-1] * 0.01 * clip, side="left"))
    return float(v[min(idx, v.size - 1)])


def safe_scale(threshold: float) -> float:
    """A divisor that is never zero: an all-zero map displays as zeros, not NaN."""
    return threshold if threshold > 0.0 and np.isfinite(threshold) else 1.0


def channel_sum(values: np.ndarray) -> np.ndarray:
    """(C,H,W) attribution → (H,W): the total evidence of each pixel, sign kept.

    Summing (not averaging or taking a norm) keeps completeness: IG's per-pixel sums
    still add up to the output difference. (H,W) input passes through.
    """
    values = np.asarray(values, dtype=np.float32)
    return values.sum(axis=0) if values.ndim == 3 else values


def to_display(values: np.ndarray, family: str) -> np.ndarray:
    """The values a style shows: `signed` keeps the sign, `abs` takes |x|, `positive` clips below 0."""
    values = np.asarray(values, dtype=np.float32)
    if family == "signed":
        return values
    if family == "abs":
        return np.abs(values)
    if family == "positive":
        return np.maximum(values, 0.0)
    raise ValueError(f"unknown display family {family!r}")


def unit_image(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 (or float) image → float32 in [0, 1], HxW (gray) or HxWx3 (RGB)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    if img.size == 0:
        return img
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if lo >= 0.0 and hi <= 1.0:
        return img
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
