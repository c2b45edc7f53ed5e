"""ShapleyCAM (Cai et al. 2025): channel weights from the gradient and a Hessian-vector product."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class ShapleyCAM(CamMethod):
    name = "shapleycam"
    aliases = ("shapley-cam",)
    summary = "gradient and Hessian-vector product weights"
    reference = "ShapleyCAM"
    checked = "Pearson >= 0.99 after min-max scaling"
    notes = ("ours (grad-cam's cannot reshape ViT tokens); attention runs on the math kernel for the double "
             "backward")
    second_order = True
    order = 120

    def channel_weights(self, step):
        g = step.grads
        return (g - 0.5 * step.hvp).mean(axis=tuple(range(2, g.ndim)))
