"""Seg-Eigen-CAM: the principal component of |gradient| x activation, sign-corrected (Eq. 13)."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class SegEigenCAM(CamMethod):
    name = "segeigencam"
    aliases = ("seg-eigen-cam",)
    summary = "principal component of |gradient| x activation, sign-corrected"
    reference = "SegEigenCAM"
    notes = "thin SVD"
    order = 90

    def cam_image(self, step):
        import numpy as np

        from xaicli.explain.cams._tools import projection

        return step.per_target(lambda g: projection(np.abs(g) * step.acts, sign_correct=True))
