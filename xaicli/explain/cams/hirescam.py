"""HiResCAM (Draelos & Carin 2020): gradient x activation, summed over channels."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class HiResCAM(CamMethod):
    name = "hirescam"
    aliases = ("hires-cam",)
    summary = "gradient x activation, summed over channels"
    reference = "HiResCAM"
    notes = "grad-cam's arithmetic"
    order = 20

    def cam_image(self, step):
        return step.per_target(lambda g: step.elementwise(g * step.acts))
