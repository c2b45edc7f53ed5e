"""Region targets: the weight is the adjoint of the upsampling the score sees, with or without grad mode."""

import numpy as np
import torch
import torch.nn.functional as F

from xaicli.explain.targets import region_weight


def test_region_weight_is_the_adjoint_of_upsampling_even_under_no_grad():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 56)) > 0.6
    logits = torch.from_numpy(rng.standard_normal((2, 12, 16))).float()
    with torch.no_grad():                       # how predict and cam call it
        w = region_weight(mask, 1, 2, (12, 16), (40, 56))
    up = F.interpolate(logits[None], size=(40, 56), mode="bilinear", align_corners=False)[0]
    direct = float((up[1] * torch.from_numpy(mask).float()).sum())   # score over the region at image size
    assert abs(float((w * logits).sum()) - direct) < 1e-4 * max(1.0, abs(direct))
    assert float(w[0].abs().sum()) == 0.0                         # other classes carry no weight


def test_segmenter_target_all_is_every_class_predicted_region():
    from xaicli.explain.targets import resolve_segmentation

    pred = np.zeros((6, 6), np.uint8)
    pred[:2] = 2                                         # class 2 present, class 1 absent, 0 background
    labels = ["background", "lesion", "organ"]
    default = resolve_segmentation(None, labels, pred)
    assert [t.index for t in default] == [2]             # predicted: the classes present
    every = resolve_segmentation(["all"], labels, pred)
    assert [t.index for t in every] == [0, 1, 2]
    assert [int(t.mask.sum()) for t in every] == [24, 0, 12]
    assert [t.index for t in resolve_segmentation(["all", "predicted"], labels, pred)] == [0, 1, 2]
    one = resolve_segmentation(["all"], ["blob"], (pred > 0).astype(np.uint8))
    assert [(t.index, int(t.mask.sum())) for t in one] == [(0, 12)]
