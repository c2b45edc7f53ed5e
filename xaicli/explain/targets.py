"""What an explanation explains: the `--target` grammar shared by attribute, cam and stats.

A target reduces the model output to one scalar per image, always as a weighted sum of
the logits: a one-hot vector (K,) for a class, a (K, h, w) weight at model resolution
for a segmentation region. The region is given at image size; its weight is the
adjoint of the bilinear upsampling, so Σ W·logits equals the sum of the upsampled
logits over the region exactly. Many targets then batch as one einsum.

Classification: top1 (default), topK, all, a class index, or a label name.
Segmentation: predicted (default: the predicted mask of the class), all-pixels, or a
`--target-mask` image; `--class` picks the class of a multi-class segmenter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xaicli.errors import XaiError, XaiUsageError

_TOPK = re.compile(r"^top(\d+)$")


@dataclass
class Target:
    kind: str                          # "class" | "mask" | "all-pixels" | "region"
    index: int                         # class (logit channel) index
    label: str
    mask: np.ndarray | None = None     # (H, W) bool at image size, segmentation only
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        d = {"kind": self.kind, "index": self.index, "label": self.label, **self.extra}
        if self.mask is not None:
            d["mask_pixels"] = int(self.mask.sum())
        return d

    def weight(self, num_classes: int, model_hw: tuple[int, int] | None, image_hw: tuple[int, int] | None,
               device=None):
        """Weights W with score = Σ W * logits for one image's logits (K,) or (K, h, w)."""
        import torch

        if self.mask is None:
            w = torch.zeros(num_classes, device=device)
            w[self.index] = 1.0
            return w
        return region_weight(self.mask, self.index, num_classes, model_hw, image_hw, device)


def region_weight(mask: np.ndarray, index: int, num_classes: int, model_hw, image_hw, device=None):
    """Adjoint of bilinear upsampling (model → image size) applied to the region mask."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(mask, dtype=torch.float32, device=device)
    if tuple(model_hw) == tuple(image_hw):
        spatial = m
    else:
        with torch.enable_grad():   # callers may be inside no_grad (predictions, CAM targets)
            probe = torch.zeros(1, 1, *model_hw, device=device, requires_grad=True)
            up = F.interpolate(probe, size=tuple(image_hw), mode="bilinear", align_corners=False)
            (spatial,) = torch.autograd.grad((up[0, 0] * m).sum(), probe)
        spatial = spatial[0, 0]
    w = torch.zeros(num_classes, *model_hw, device=device)
    w[index] = spatial
    return w


def scores(logits, weights):
    """Per-row scores: logits (N, K[, h, w]) and weights (N, K[, h, w]) → (N,)."""
    return (logits * weights).flatten(1).sum(1)


def resolve_classification(specs: Sequence[str] | None, labels: Sequence[str], probs: np.ndarray) -> list[Target]:
    """Targets for a classifier from `--target` values and the image's probabilities."""
    specs = list(specs or ["top1"])
    order = [int(i) for i in np.argsort(-np.asarray(probs), kind="stable")]
    out: list[Target] = []
    for spec in specs:
        s = spec.strip()
        m = _TOPK.match(s.lower())
        if s.lower() == "all":
            idx = list(range(len(labels)))
        elif m:
            k = int(m.group(1))
            if k < 1:
                raise XaiUsageError(f"--target {spec}: K must be at least 1")
            idx = order[:k]
        elif s.lstrip("-").isdigit():
            i = int(s)
            if not 0 <= i < len(labels):
                raise XaiUsageError(f"--target {spec}: class index out of range 0..{len(labels) - 1}")
            idx = [i]
        elif s in labels:
            idx = [list(labels).index(s)]
        else:
            raise XaiUsageError(f"--target {spec!r}: not top1, topK, all, a class index or a label "
                                f"({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})")
        for i in idx:
            if all(t.index != i for t in out):
                out.append(Target("class", i, str(labels[i]), extra={"prob": float(probs[i])}))
    return out


def resolve_segmentation(specs: Sequence[str] | None, labels: Sequence[str], pred_mask: np.ndarray | None,
                         classes: Sequence[int] | None = None, target_mask: np.ndarray | None = None,
                         target_mask_name: str | None = None) -> list[Target]:
    """Targets for a segmenter: one per class, each over the chosen region.

    `pred_mask` is the record's `pred/mask` (1-class: 0/1; K classes: argmax index).
    `predicted` covers the classes present in the prediction (or --class); `all` every
    class, background and absent ones included (as `--target all` on a classifier).
    A region that is empty gives a target with an empty mask: its score is 0 and its
    attribution all zeros, which the record notes instead of failing the whole run.
    """
    k = len(labels)
    specs = list(specs or ["predicted"])
    if classes:
        for c in classes:
            if not 0 <= c < k:
                raise XaiUsageError(f"--class {c}: out of range 0..{k - 1} for this {k}-class model")
        cls = list(classes)
    elif k == 1:
        cls = [0]
    else:
        present = sorted(set(np.unique(pred_mask).tolist()) - {0}) if pred_mask is not None else []
        cls = present or [1]
    out: list[Target] = []
    for spec in specs:
        s = spec.strip().lower()
        for c in (range(k) if s == "all" and not classes else cls):
            if any(t.index == c and t.kind == "mask" for t in out) and s in ("predicted", "all"):
                continue
            if s in ("predicted", "all"):
                if pred_mask is None:
                    raise XaiError("target 'predicted' needs the prediction; run xai predict first or let this "
                                   "command predict (pass images, not records without pred/mask)")
                region = pred_mask.astype(bool) if k == 1 else pred_mask == c
                out.append(Target("mask", c, str(labels[c]), region, {"region": "predicted"}))
            elif s == "all-pixels":
                shape = pred_mask.shape if pred_mask is not None else target_mask.shape if target_mask is not None else None
                if shape is None:
                    raise XaiError("target 'all-pixels' needs the image size; pass images or records with pred/mask")
                out.append(Target("all-pixels", c, str(labels[c]), np.ones(shape, bool), {"region": "all-pixels"}))
            elif s == "mask":
                if target_mask is None:
                    raise XaiUsageError("--target mask needs --target-mask FILE")
                out.append(Target("region", c, str(labels[c]), target_mask.astype(bool),
                                  {"region": target_mask_name or "target-mask"}))
            else:
                raise XaiUsageError(f"--target {spec!r}: a segmenter takes predicted, all, all-pixels or mask "
                                    "(with --target-mask FILE)")
    return out
