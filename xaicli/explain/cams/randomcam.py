"""Random-CAM: random channel weights, a floor for the metrics of `xai stats`."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class RandomCAM(CamMethod):
    name = "randomcam"
    aliases = ("random",)
    summary = "random channel weights: a baseline for metrics"
    reference = "RandomCAM"
    notes = "random channel weights drawn as grad-cam draws them (seeded)"
    gradients = False
    in_all = False
    order = 180

    def cam_image(self, step):
        import numpy as np

        w = np.random.RandomState(step.engine.seed).uniform(-1, 1, size=(1, step.acts.shape[1]))
        return np.repeat(step.weighted(w), step.targets, axis=0)
