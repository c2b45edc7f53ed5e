"""Confidence drop and increase: the score of the image multiplied by its min-max normalised map.

grad-cam's `DropInConfidence` / `IncreaseInConfidence` multiply the *normalised* model
input by the map in [0, 1], so a pixel the map ignores becomes the normalisation mean.
Here the image stays in [0, 1] pixels: x' = mean + (x − mean)·m̂, which the model's
standardisation turns into exactly grad-cam's input (x − mean)/std · m̂.
`confidence_drop` = max(0, S(x) − S(x')) and `confidence_increase` = 1 if S(x') > S(x)
else 0, as grad-cam's; their mean over records is torchcam's average drop (absolute,
not relative to S(x)) and increase rate.
"""

from __future__ import annotations

from xaicli.explain.evaluation import index_of, minmax
from xaicli.metrics.registry import DOWN, UP, Metric, declare

KEYS = ("confidence_drop", "confidence_increase")
REFERENCE = "pytorch_grad_cam.metrics.cam_mult_image.DropInConfidence / IncreaseInConfidence"


def masked(ctx, m):
    """The unit image blended towards the normalisation mean where the map m̂ (H, W) in [0, 1] is low."""
    import torch

    unit = ctx.unit
    mean = torch.tensor(ctx.adapter.preprocessing.mean, dtype=unit.dtype, device=unit.device).view(1, -1, 1, 1)
    m = torch.from_numpy(m).to(unit.device, unit.dtype)
    return mean + (unit - mean) * m


def run(ctx, group: list) -> list[dict]:
    import torch

    out = [dict.fromkeys(KEYS) for _ in group]
    live = []
    for i, mt in enumerate(group):
        if ctx.problem(mt, "confidence") is None:
            live.append((i, minmax(mt.smap)))
    if not live:
        return out
    batch = torch.cat([ctx.unit] + [masked(ctx, m) for _, m in live])
    s = ctx.scores(batch, index_of(group[0]), group[0].pred_mask)
    for (i, _), after in zip(live, s[1:]):
        diff = float(after - s[0])
        out[i] = {"confidence_drop": max(-diff, 0.0), "confidence_increase": int(diff > 0)}
    return out


declare(Metric("confidence", "faithfulness", KEYS,
               "the image multiplied by the min-max normalised map (pixels the map ignores become the "
               "normalisation mean): `confidence_drop` = max(0, S(x) − S(x')), `confidence_increase` = 1 if "
               "S(x') > S(x) else 0 (averaged by `--summary`: the increase rate)",
               null="constant or non-finite map, empty predicted region (segmenter)", better=(DOWN, UP),
               reference=REFERENCE + ": equal to 1e-6", default=False, run=run, order=10))
