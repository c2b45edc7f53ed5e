"""XGrad-CAM (Fu et al. 2020): channel weights from activation-weighted gradients."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class XGradCAM(CamMethod):
    name = "xgradcam"
    summary = "channel weights: activation-weighted gradients"
    reference = "XGradCAM"
    notes = "grad-cam's channel weights on our activations and gradients"
    order = 40
