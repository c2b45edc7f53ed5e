"""Sufficiency (Dasgupta et al. 2022): do records whose maps are alike get the same prediction?

The one metric that compares records with each other. As Quantus 0.6 `Sufficiency` with
batch_size = --window (tested equal): the records are taken in consecutive windows of
--window; within a window, the maps of one method and target slot (map key, t) are
compared: |a| flattened, standardized Euclidean distances (scipy's cdist 'seuclidean',
variances over the window), divided by the largest; two maps are alike at a distance ≤
--sufficiency-threshold. A map scores the fraction of the other records alike to it whose
predicted class (the model's argmax on the record's image) is its own: 0 where none is
alike, as Quantus. Quantus's normalisation of the maps by their max does not change
these distances (they are invariant to one scale), so it is left out.

Differences, documented: a map alone in its window is null (Quantus gives 0: nothing was
compared); a map holding NaN or inf is null and left out of the comparison (in Quantus it
makes every distance of its batch NaN). Classifiers only: Quantus's argmax over a
segmenter's output is a mask, not a class.
"""

from __future__ import annotations

import numpy as np

from xaicli.metrics.registry import UP, Deferred, Metric, declare


def predicted_class(ctx) -> int:
    """The model's class for this record's image, computed once per record."""
    import torch

    cached = ctx.state.get("sufficiency_class")
    if cached is None or cached[0] != ctx.record_id:
        with torch.no_grad():
            logits = ctx.adapter.forward(ctx.adapter.prepare(ctx.image))
        cached = ctx.state["sufficiency_class"] = (ctx.record_id, int(logits.reshape(logits.shape[0], -1)[0].argmax()))
    return cached[1]


def run(ctx, group: list) -> list[dict]:
    if ctx.segmentation:
        ctx.warn_once("sufficiency", "it compares predicted classes, so it needs a classifier; segmenter maps "
                                     "give null")
        return [{"sufficiency": None} for _ in group]
    out = []
    for mt in group:
        if ctx.problem(mt, "sufficiency", constant=False) is not None:
            out.append({"sufficiency": None})
            continue
        feature = np.abs(mt.smap).astype(np.float32).ravel()
        threshold = float(ctx.options.get("sufficiency_threshold", 0.6))
        out.append({"sufficiency": Deferred((mt.key, mt.t, feature.size), (feature, predicted_class(ctx), threshold))})
    return out


def combine(payloads: list) -> list[float | None]:
    """Quantus's score of each map of one comparison group (its custom_batch_preprocess and
    evaluate_batch): the fraction of the alike others with the same predicted class.
    `payloads`: (|map| flattened, predicted class, threshold) per map."""
    from scipy.spatial.distance import cdist

    if len(payloads) < 2:
        return [None] * len(payloads)
    a = np.stack([p[0] for p in payloads]).astype(np.float64)
    classes = np.asarray([p[1] for p in payloads])
    dist = cdist(a, a, "seuclidean")
    top = np.max(np.abs(dist))
    if top > 0:                          # normalise_by_max leaves an all-zero matrix as it is
        dist = dist / top
    alike = (dist <= payloads[0][2]) & ~np.eye(len(payloads), dtype=bool)
    same = classes[None] == classes[:, None]
    n = alike.sum(-1)
    return [float(v) for v in (same & alike).sum(-1) / np.where(n == 0, np.inf, n)]


declare(Metric("sufficiency", "faithfulness", ("sufficiency",),
               "fraction of the other records in its window (--window) whose maps of the same method and "
               "target slot are alike (normalised standardized-Euclidean distance ≤ --sufficiency-threshold) "
               "and whose predicted class is the same",
               null="segmenters, a map alone in its window, non-finite map", better=UP,
               reference="quantus.Sufficiency (batch_size = --window): equal to 1e-4", default=False, run=run,
               combine=combine, order=60))
