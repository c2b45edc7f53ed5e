"""Eigen-Grad-CAM: the first principal component of gradient x activation."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class EigenGradCAM(CamMethod):
    name = "eigengradcam"
    summary = "first principal component of gradient x activation"
    reference = "EigenGradCAM"
    notes = "thin SVD"
    order = 80

    def cam_image(self, step):
        from xaicli.explain.cams._tools import projection

        return step.per_target(lambda g: projection(g * step.acts))
