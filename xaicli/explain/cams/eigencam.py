"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class EigenCAM(CamMethod):
    name = "eigencam"
    aliases = ("eigen-cam",)
    summary = "first principal component of the activations (no target)"
    reference = "EigenCAM"
    notes = "thin SVD (grad-cam's full SVD needs an (h·w)² matrix: 16 GiB at a 256² layer)"
    gradients = False
    target_independent = True
    order = 70

    def cam_image(self, step):
        import numpy as np

        from xaicli.explain.cams._tools import projection

        return np.repeat(projection(step.acts), step.targets, axis=0)
