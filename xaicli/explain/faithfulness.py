"""Deletion and insertion: does removing the pixels a map ranks first destroy the score?

Pixels are ranked by the signed spatial map (channels summed), highest first. Deletion
starts from the image and replaces the top fraction of pixels with a baseline;
insertion starts from the baseline and restores them. Each curve is sampled at
`steps + 1` equally spaced fractions 0, 1/steps, ..., 1 and integrated with the
trapezoid rule over that [0, 1] axis, so AUCs from images of different sizes compare.

The score is the target's softmax probability for a classifier, and the sum of the
target's logits over the fixed predicted region (at image size) for a segmenter: a
good map gives a low deletion AUC and a high insertion AUC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# What removed pixels become (`xai stats --perturb-baseline` reads this for its choices and help;
# numpy is imported where it is used, so reading it loads none).
BASELINES = {"black": "0", "mean": "the image's per-channel mean", "blur": "a strong Gaussian blur of the image"}


def perturbation_baseline(unit, kind: str):
    """What removed pixels become (BASELINES)."""
    import numpy as np
    import torch

    if kind == "black":
        return torch.zeros_like(unit)
    if kind == "mean":
        return unit.mean(dim=(-2, -1), keepdim=True).expand_as(unit).clone()
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        h, w = unit.shape[-2:]
        sigma = max(1.0, min(h, w) / 16.0)
        k = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
        return gaussian_blur(unit, [k, k], [sigma, sigma]) if k >= 3 else unit.clone()
    raise ValueError(f"unknown perturbation baseline {kind!r}; use one of {', '.join(BASELINES)}")


def _score(adapter, x, target_index: int, region, image_hw):
    """(B,) scores for a batch of unit images: target probability, or target logit sum over the region."""
    logits = adapter.forward(adapter.normalize(x))
    if adapter.task == "segmentation":
        maps = adapter.to_image_size(logits, image_hw)[:, target_index]
        return (maps * region).sum(dim=(-2, -1))
    return adapter.probabilities(logits)[:, target_index]


def auc(y: np.ndarray) -> float:
    """Trapezoid area under y sampled at equally spaced points of [0, 1]."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2.0).sum() / (y.size - 1))


def deletion_insertion(adapter, image: np.ndarray, smap: np.ndarray, target_index: int, *,
                       region: np.ndarray | None = None, steps: int = 20, baseline: str = "black",
                       batch_size: int = 16) -> dict[str, Any]:
    """Deletion and insertion curves and AUCs for one map of one image (see `many`)."""
    return deletion_insertion_many(adapter, image, [smap], target_index, region=region, steps=steps,
                                   baseline=baseline, batch_size=batch_size)[0]


def deletion_insertion_many(adapter, image: np.ndarray, smaps: list[np.ndarray], target_index: int, *,
                            region: np.ndarray | None = None, steps: int = 20, baseline: str = "black",
                            batch_size: int = 16) -> list[dict[str, Any]]:
    """Deletion and insertion for several maps of the same image and target, batched.

    The curves' end points (the image itself, the baseline) are the same for every map
    and run once. `region` (H,W) is required for segmenters (the target's predicted
    mask); an empty region, or a non-finite map, gives null AUCs for that map.
    """
    import numpy as np
    import torch

    none = {"deletion_auc": None, "insertion_auc": None, "deletion_curve": None, "insertion_curve": None}
    if adapter.task == "segmentation" and (region is None or not np.any(region)):
        return [dict(none) for _ in smaps]
    smaps = [np.asarray(s, dtype=np.float64) for s in smaps]
    ok = [bool(np.all(np.isfinite(s))) for s in smaps]
    with torch.no_grad():
        unit = adapter.image_to_unit(image)
        h, w = unit.shape[-2:]
        for s in smaps:
            if s.shape != (h, w):
                raise ValueError(f"map is {s.shape} but the image is {(h, w)}")
        base = perturbation_baseline(unit, baseline)
        n = h * w
        counts = np.round(np.linspace(0.0, 1.0, steps + 1) * n).astype(np.int64)
        reg = None
        if adapter.task == "segmentation":
            reg = torch.from_numpy(np.asarray(region) != 0).to(unit.device, unit.dtype)
        # jobs: (map index or None for the shared end points, curve kind, pixels perturbed)
        ranks: list = []
        jobs: list[tuple[int | None, str, int]] = [(None, "image", 0), (None, "baseline", 0)]
        for m, s in enumerate(smaps):
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(-s.ravel(), kind="stable")] = np.arange(n)
            ranks.append(torch.from_numpy(rank.reshape(h, w)).to(unit.device))
            if ok[m]:
                jobs += [(m, kind, int(c)) for kind in ("deletion", "insertion") for c in counts[1:-1]]
        scores: list[float] = []
        for i in range(0, len(jobs), batch_size):
            batch = torch.stack([_perturbed(unit[0], base[0], ranks[m] if m is not None else None, kind, c)
                                 for m, kind, c in jobs[i:i + batch_size]])
            scores.extend(_score(adapter, batch, target_index, reg, (h, w)).double().cpu().tolist())
    full, empty = scores[0], scores[1]
    out, pos = [], 2
    for m in range(len(smaps)):
        if not ok[m]:
            out.append(dict(none))
            continue
        k = steps - 1
        dele = np.array([full, *scores[pos:pos + k], empty])
        ins = np.array([empty, *scores[pos + k:pos + 2 * k], full])
        pos += 2 * k
        out.append({"deletion_auc": auc(dele), "insertion_auc": auc(ins),
                    "deletion_curve": dele.tolist(), "insertion_curve": ins.tolist()})
    return out


def _perturbed(unit, base, rank, kind: str, count: int):
    """One curve point: deletion puts the baseline on the top `count` pixels, insertion the image."""
    import torch

    if kind == "image":
        return unit
    if kind == "baseline":
        return base
    top = (rank < count)[None]
    return torch.where(top, base, unit) if kind == "deletion" else torch.where(top, unit, base)
