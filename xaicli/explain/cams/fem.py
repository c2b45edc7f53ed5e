"""FEM (Fuad et al. 2020): channels weighted by their k-sigma outlier fraction."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class FEM(CamMethod):
    name = "fem"
    summary = "channels weighted by their k-sigma outlier fraction (no target)"
    reference = "FEM"
    notes = "grad-cam's"
    gradients = False
    target_independent = True
    order = 130

    def cam_image(self, step):
        import numpy as np

        cam = step.engine.grad_cam(self.reference).get_cam_image(None, None, None, step.acts, None, False)
        return np.repeat(cam, step.targets, axis=0)
