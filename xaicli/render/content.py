"""What a record offers besides its maps: the image, the masks and the prediction in words.

Every accessor returns None when the record lacks the member (`--no-image`, no
`predict` step, no ground truth), so figures drop that panel instead of failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xaicli.io.record import GT_MASK, LOGITS, MASK, PROBS, Record
from xaicli.render.normalise import unit_image


def image(record: Record) -> np.ndarray | None:
    """The image as float in [0, 1], HxW or HxWx3."""
    img = record.image
    return None if img is None else unit_image(img)


def labels(record: Record) -> list[str]:
    model = record.meta.get("model") or {}
    return [str(x) for x in (model.get("labels") or [])]


def is_classifier(record: Record) -> bool:
    if record.task:
        return record.task == "classification"
    probs = record.arrays.get(PROBS, record.arrays.get(LOGITS))
    return probs is not None and np.ndim(probs) == 1


def pred_mask(record: Record) -> np.ndarray | None:
    """Segmenters: the predicted mask (H,W) of class indices; derived from probs when absent."""
    if is_classifier(record):
        return None
    if MASK in record.arrays:
        return np.asarray(record.arrays[MASK]).astype(np.int64)
    probs = record.arrays.get(PROBS)
    if probs is None or np.ndim(probs) != 3:
        return None
    if probs.shape[0] == 1:
        threshold = (record.meta.get("prediction") or {}).get("threshold") or 0.5
        return (probs[0] > threshold).astype(np.int64)
    return np.asarray(probs).argmax(axis=0)


def gt_mask(record: Record) -> np.ndarray | None:
    """Ground truth (H,W) as booleans: non-zero is inside."""
    gt = record.arrays.get(GT_MASK)
    return None if gt is None else np.asarray(gt) != 0


def top_classes(record: Record, k: int = 5) -> list[tuple[str, float]] | None:
    """Classifiers: the k most probable (label, probability) pairs, most probable first."""
    if not is_classifier(record):
        return None
    probs = record.arrays.get(PROBS)
    if probs is not None and np.ndim(probs) == 1:
        names = labels(record)
        order = np.argsort(-np.asarray(probs, dtype=np.float64))[:k]
        return [(names[i] if i < len(names) else str(i), float(probs[i])) for i in order]
    top = (record.meta.get("prediction") or {}).get("top") or []
    out = [(str(t.get("label", t.get("index"))), float(t["prob"])) for t in top[:k] if t.get("prob") is not None]
    return out or None


def prediction_text(record: Record) -> str | None:
    """'cross (p = 0.97)' for a classifier, 'blob 4.1%' (area fraction) for a segmenter."""
    pred: dict[str, Any] = record.meta.get("prediction") or {}
    if is_classifier(record):
        label, conf = pred.get("label"), pred.get("confidence")
        if label is None or conf is None:
            top = top_classes(record, 1)
            if not top:
                return None
            label, conf = top[0]
        return f"{label} (p = {float(conf):.2f})"
    fractions = pred.get("area_fraction")
    if isinstance(fractions, dict) and fractions:
        parts = [f"{name} {100 * float(v):.1f}%" for name, v in fractions.items() if v is not None]
        if parts:
            return "area " + ", ".join(parts)
    mask = pred_mask(record)
    if mask is None:
        return None
    names = labels(record)
    return f"area {names[0] if len(names) == 1 else 'foreground'} {100 * float((mask != 0).mean()):.1f}%"


def header(record: Record) -> str:
    """The figure title: record id and what the model predicted."""
    text = prediction_text(record)
    return f"{record.id}  ·  predicted {text}" if text else record.id


def crop_box(record: Record) -> tuple[float, float, float, float] | None:
    """The box of the image the model saw, `meta["preprocessing"]["crop"]` = [top, left, bottom,
    right] in image pixels (a processor's centre crop), when it leaves part of the image out."""
    box = (record.meta.get("preprocessing") or {}).get("crop")
    img = record.image
    if img is None or not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        top, left, bottom, right = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    h, w = np.shape(img)[:2]
    if not all(np.isfinite([top, left, bottom, right])) or bottom <= top or right <= left:
        return None
    eps = 1e-6
    if top <= eps and left <= eps and bottom >= h - eps and right >= w - eps:
        return None                   # the whole image: nothing left out, nothing to outline
    return top, left, bottom, right
