"""Grad-CAM++ (Chattopadhay et al. 2018): channel weights from second- and third-order gradient terms."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class GradCAMPlusPlus(CamMethod):
    name = "gradcam++"
    aliases = ("gradcampp", "gradcamplusplus", "grad-cam++")
    summary = "channel weights from 2nd/3rd-order gradient terms"
    reference = "GradCAMPlusPlus"
    notes = "grad-cam's channel weights on our activations and gradients"
    order = 30
