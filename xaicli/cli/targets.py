"""The targets of one record, shared by `xai attribute` and `xai cam` (same grammar, same errors)."""

from __future__ import annotations

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.masks import MaskSource


class TargetMasks(MaskSource):
    """`--target-mask FILE|DIR`: a region per record, which must have the image's size."""

    def __init__(self, spec: str):
        super().__init__(spec, "--target-mask", XaiUsageError)

    def get(self, record_id: str, hw):
        found = self.lookup(record_id)
        if found is None:
            raise XaiError(f"--target-mask {self.path}: no mask named {record_id}.* for record {record_id}")
        mask, path = found
        if tuple(mask.shape) != tuple(hw):
            raise XaiUsageError(f"--target-mask {path}: size {mask.shape[1]}x{mask.shape[0]} differs from image "
                                f"{record_id}'s {hw[1]}x{hw[0]}; pass a mask of the image's size")
        return mask, path.name


def record_targets(rec, adapter, specs, masks: TargetMasks | None, classes, hw):
    import numpy as np

    from xaicli.explain.targets import resolve_classification, resolve_segmentation
    from xaicli.io.record import MASK, PROBS

    if adapter.task == "classification":
        if masks is not None:
            raise XaiUsageError("--target-mask is for segmenters; this model is a classifier")
        if classes:
            raise XaiUsageError("--class is for segmenters; a classifier takes --target INDEX or LABEL")
        probs = np.asarray(rec.arrays[PROBS], dtype=np.float64).reshape(-1)
        if probs.size != adapter.num_classes:
            raise XaiUsageError(f"record {rec.id}: its prediction has {probs.size} classes, the model "
                                f"{adapter.num_classes}")
        return resolve_classification(specs, adapter.labels, probs)
    tmask, tname = (masks.get(rec.id, hw) if masks is not None else (None, None))
    if tmask is not None and not specs:
        specs = ["mask"]
    pred = rec.arrays.get(MASK)
    return resolve_segmentation(specs, adapter.labels, pred, classes, tmask, tname)
