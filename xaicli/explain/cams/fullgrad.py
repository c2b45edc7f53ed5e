"""FullGrad (Srinivas & Fleuret 2019): input and bias gradients of every conv/BN layer, summed.

The computation is in `_fullgrad.py`; this module declares the method. It ignores
--layer: its map is stored under cam/fullgrad/bias-layers.
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class FullGrad(CamMethod):
    name = "fullgrad"
    summary = "input and bias gradients of every conv/BN layer (ignores --layer)"
    reference = "FullGrad"
    notes = ("ours: grad-cam pairs biases and gradients by position and fails on U-Net++ (its decoder runs blocks "
             "in another order than it defines them); key cam/fullgrad/bias-layers")
    whole_model = True
    normalised = True
    order = 160

    def combine(self, step):
        from xaicli.explain.cams._fullgrad import fullgrad

        return "bias-layers", None, fullgrad(step.engine.adapter.net, step.x, step.scorers(), step.engine.eigen_smooth)
