"""Layer-CAM (Jiang et al. 2021): positive gradient x activation, per pixel."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class LayerCAM(CamMethod):
    name = "layercam"
    aliases = ("layer-cam",)
    summary = "positive gradient x activation, per pixel"
    reference = "LayerCAM"
    notes = "grad-cam's arithmetic"
    order = 50

    def cam_image(self, step):
        import numpy as np

        return step.per_target(lambda g: step.elementwise(np.maximum(g, 0) * step.acts))
