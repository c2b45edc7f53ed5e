"""Grad-CAM element-wise: ReLU(gradient x activation), per pixel, summed over channels."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class GradCAMElementWise(CamMethod):
    name = "gradcam-elementwise"
    aliases = ("gradcamelementwise",)
    summary = "ReLU(gradient x activation), per pixel"
    reference = "GradCAMElementWise"
    notes = "grad-cam's arithmetic"
    order = 60

    def cam_image(self, step):
        import numpy as np

        return step.per_target(lambda g: step.elementwise(np.maximum(g * step.acts, 0)))
