"""Localisation: does the map point at the region (predicted or ground-truth mask)?

All take the signed spatial map (channels summed): positive values are evidence for
the target. Ties are resolved without depending on pixel order: the pointing game hits
when any maximal pixel is inside; top-k metrics share the slots of the tied k-th value
in proportion.
"""

from __future__ import annotations

import numpy as np

from xaicli.metrics.registry import UP, Metric, declare
from xaicli.metrics.similarity import rankdata


def _prep(smap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Flattened map and boolean mask, and whether the metric is defined at all (finite map)."""
    a = np.asarray(smap, dtype=np.float64)
    m = np.asarray(mask) != 0
    if m.shape != a.shape:
        raise ValueError(f"mask shape {m.shape} does not match map shape {a.shape}")
    return a.ravel(), m.ravel(), bool(a.size) and bool(np.all(np.isfinite(a)))


def pointing_game(smap: np.ndarray, mask: np.ndarray) -> int | None:
    """1 if the map's maximum lies inside the mask, else 0; null for an empty mask or a constant map."""
    a, m, ok = _prep(smap, mask)
    if not ok:
        return None
    if not m.any() or a.size == 0 or a.max() == a.min():
        return None
    return int(np.any(m[a == a.max()]))


def mass_accuracy(smap: np.ndarray, mask: np.ndarray) -> float | None:
    """Relevance mass accuracy: positive mass inside ÷ total positive mass; null if there is none."""
    a, m, ok = _prep(smap, mask)
    if not ok:
        return None
    pos = np.clip(a, 0, None)
    total = pos.sum()
    if not m.any() or total <= 0:
        return None
    return float(pos[m].sum() / total)


def _topk_hits(a: np.ndarray, m: np.ndarray, k: int) -> float:
    """Number of the k highest pixels inside the mask; ties at the k-th value share slots."""
    t = np.partition(a, a.size - k)[a.size - k]
    above = a > t
    tied = a == t
    slots = k - above.sum()
    return float(np.logical_and(above, m).sum() + slots * np.logical_and(tied, m).sum() / tied.sum())


def rank_accuracy(smap: np.ndarray, mask: np.ndarray) -> float | None:
    """Relevance rank accuracy: share of the |M| highest pixels that lie in the mask M."""
    a, m, ok = _prep(smap, mask)
    if not ok:
        return None
    k = int(m.sum())
    if k == 0:
        return None
    return _topk_hits(a, m, k) / k


def topk_count(top_k: float, n: int) -> int:
    """`--top-k`: a fraction of the pixels when < 1, else a pixel count; at least 1, at most n."""
    k = round(top_k * n) if top_k < 1 else int(top_k)
    return max(1, min(n, k))


def topk_intersection(smap: np.ndarray, mask: np.ndarray, top_k: float) -> float | None:
    """Share of the k highest pixels that lie in the mask (k from `topk_count`); null for an empty mask."""
    a, m, ok = _prep(smap, mask)
    if not ok:
        return None
    if not m.any() or a.size == 0:
        return None
    k = topk_count(top_k, a.size)
    return _topk_hits(a, m, k) / k


def roc_auc(smap: np.ndarray, mask: np.ndarray) -> float | None:
    """ROC-AUC of the map as a detector of mask pixels (Mann–Whitney, ties count ½); null if one class is empty."""
    a, m, ok = _prep(smap, mask)
    if not ok:
        return None
    npos, nneg = int(m.sum()), int((~m).sum())
    if npos == 0 or nneg == 0:
        return None
    r = rankdata(a)
    return float((r[m].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


_REFERENCES = {"pointing_game": "quantus.PointingGame: equal to 1.4e-5",
               "rank_accuracy": "quantus.RelevanceRankAccuracy: equal to 1.4e-5",
               "roc_auc": "quantus.AUC: equal to 1.4e-5",
               "mass_accuracy": "quantus.RelevanceMassAccuracy sums signed values (above 1 on signed maps); "
                                "positive mass here, by design"}
for _order, (_name, _summary, _null) in enumerate([
        ("pointing_game", "1 if the map's maximum lies inside, else 0 (ties: a hit if any maximal pixel is inside)",
         "no/empty mask, constant map"),
        ("mass_accuracy", "relevance mass accuracy: positive mass inside ÷ total positive mass",
         "no/empty mask, no positive mass"),
        ("rank_accuracy", "relevance rank accuracy: share of the |M| highest pixels inside the mask M",
         "no/empty mask"),
        ("topk_intersection", "share of the k highest pixels inside (`--top-k`: fraction of pixels if < 1, else a "
         "count; default 0.05)", "no/empty mask"),
        ("roc_auc", "ROC-AUC of the map as a detector of mask pixels (ties count ½)", "no mask, empty or full mask")]):
    declare(Metric(_name, "localisation", (_name, "gt_" + _name), _summary, null=_null, better=UP,
                   reference=_REFERENCES.get(_name, ""), order=10 + _order))
