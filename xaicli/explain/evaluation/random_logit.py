"""Random logit (Sixt et al. 2020): is the map for the target unlike the map for another class?

As Quantus 0.6 `RandomLogit` (tested equal with the same draw): one other class drawn
uniformly from numpy's legacy generator seeded per map target, the map recomputed for
it through the method that made the original (as `--randomize` does), both divided by
their max |a|, and their SSIM (scikit-image's `structural_similarity` on the flattened
maps, 7-sample window, data range of both). Classifiers only.
"""

from __future__ import annotations

import numpy as np

from xaicli.explain.evaluation import by_max
from xaicli.metrics.registry import DOWN, Metric, declare


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Quantus's `ssim` of two maps: 1-D SSIM of the flattened maps over the range of both."""
    from skimage.metrics import structural_similarity

    a, b = a.ravel(), b.ravel()
    both = np.concatenate([a, b])
    return float(structural_similarity(a, b, data_range=float(abs(both.max() - both.min()))))


def other_class(ctx, mt, index: int) -> int:
    """Quantus's draw: randint(0, K − 1) indexes the classes without the target."""
    k = ctx.adapter.num_classes
    draw = int(ctx.legacy_rng(mt, "random_logit").randint(0, k - 1, 1)[0])
    return draw if draw < index else draw + 1


def run(ctx, group: list) -> list[dict]:
    from xaicli.explain.targets import Target

    out = [{"random_logit": None} for _ in group]
    if ctx.segmentation or ctx.adapter.num_classes < 2:
        ctx.warn_once("random_logit", "it needs a classifier of 2 or more classes; segmenter maps give null")
        return out
    for i, mt in enumerate(group):
        explain = ctx.recompute(mt, "random_logit")
        if explain is None:
            continue
        index = int(mt.target.get("index", mt.t))
        k = other_class(ctx, mt, index)
        a = by_max(explain(ctx.adapter))
        b = by_max(explain(ctx.adapter, target=Target("class", k, ctx.adapter.labels[k])))
        out[i] = {"random_logit": ssim(a, b)}
    return out


declare(Metric("random_logit", "randomisation", ("random_logit",),
               "SSIM of the map (recomputed through its method) and the map for one random other class, both "
               "divided by max |a|: a map that ignores the class scores near 1",
               null="segmenters, maps not recomputable, non-finite map", better=DOWN,
               reference="quantus.RandomLogit: equal to 1e-4 (same draw)", default=False, run=run, order=10))
