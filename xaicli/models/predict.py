"""Running the model for predictions: probabilities, top-k, masks, area fractions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xaicli.io.record import LOGITS, MASK, PROBS, Record


@torch.no_grad()
def predict_images(adapter, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Logits per image at the image's size (segmentation) or (K,) (classification).

    Images whose model input has the same size go through one batch.
    """
    units = [adapter.image_to_unit(img) for img in images]
    inputs = [adapter.normalize(u) for u in units]
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(i)
    for idx in groups.values():
        logits = adapter.forward(torch.cat([inputs[i] for i in idx]))
        for j, i in enumerate(idx):
            lg = logits[j:j + 1]
            if adapter.task == "segmentation":
                lg = adapter.to_image_size(lg, images[i].shape[:2])
            out[i] = lg[0].float().cpu()
    return out  # type: ignore[return-value]


def add_prediction(record: Record, adapter, logits: torch.Tensor, threshold: float = 0.5, top_k: int = 3) -> None:
    """Store logits, probabilities (and the mask) in the record, with a summary in meta."""
    probs = adapter.probabilities(logits[None])[0]
    record.arrays[LOGITS] = logits.numpy().astype(np.float32)
    record.arrays[PROBS] = probs.numpy().astype(np.float32)
    if adapter.task == "classification":
        record.meta["prediction"] = classification_summary(probs.numpy(), adapter.labels, top_k)
    else:
        if probs.shape[0] == 1:
            mask = (probs[0] > threshold).numpy().astype(np.uint8)
        else:
            # uint8 would wrap class 256 to 0: wider only where a model has that many classes
            mask = probs.argmax(0).numpy().astype(np.uint8 if probs.shape[0] <= 256 else np.uint16)
        record.arrays[MASK] = mask
        record.meta["prediction"] = segmentation_summary(mask, adapter.labels, threshold if probs.shape[0] == 1 else None)


def classification_summary(probs: np.ndarray, labels: list[str], top_k: int = 3) -> dict[str, Any]:
    order = np.argsort(-probs, kind="stable")
    top = [{"index": int(i), "label": labels[i], "prob": float(probs[i])} for i in order[:top_k]]
    return {"index": top[0]["index"], "label": top[0]["label"], "confidence": top[0]["prob"], "top": top}


def segmentation_summary(mask: np.ndarray, labels: list[str], threshold: float | None) -> dict[str, Any]:
    total = mask.size
    if len(labels) == 1:
        fractions = {labels[0]: float((mask > 0).sum() / total)}
    else:
        fractions = {labels[c]: float((mask == c).sum() / total) for c in range(len(labels))}
    return {"threshold": threshold, "area_fraction": fractions}
