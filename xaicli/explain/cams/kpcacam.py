"""KPCA-CAM (Karmani et al. 2024): a kernel-PCA component of the activations."""

from __future__ import annotations

import math

from xaicli.explain.cams import CamMethod

MAX_POSITIONS = 4096


class KPCACAM(CamMethod):
    name = "kpcacam"
    aliases = ("kpca_cam", "kpca-cam")
    summary = "kernel-PCA component of the activations (no target)"
    reference = "KPCA_CAM"
    notes = f"grad-cam's; layers over {MAX_POSITIONS} positions are average-pooled to fit (grid in meta)"
    gradients = False
    target_independent = True
    order = 140

    def cam_image(self, step):
        import numpy as np

        a, grid = pooled(step.acts)
        if grid is not None:
            step.note(kpca_grid=list(grid))
        cam = step.engine.grad_cam(self.reference).get_cam_image(None, None, None, a, None, False)
        return np.repeat(cam, step.targets, axis=0)


def pooled(a):
    """KPCA-CAM builds an N x N kernel over the N positions of the layer (34 GB at 256x256):
    above MAX_POSITIONS the activations are average-pooled to fit, and the grid is noted."""
    import torch
    import torch.nn.functional as F

    n = a.shape[-1] * a.shape[-2]
    if n <= MAX_POSITIONS:
        return a, None
    k = math.ceil(math.sqrt(n / MAX_POSITIONS))
    out = F.avg_pool2d(torch.from_numpy(a), k, ceil_mode=True).numpy()
    return out, tuple(out.shape[-2:])
