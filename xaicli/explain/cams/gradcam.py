"""Grad-CAM (Selvaraju et al. 2017): channels weighted by their mean gradient."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class GradCAM(CamMethod):
    name = "gradcam"
    aliases = ("grad-cam",)
    summary = "channel weights: mean gradient"
    reference = "GradCAM"
    notes = "grad-cam's channel weights on our activations and gradients"
    default = True
    order = 10
