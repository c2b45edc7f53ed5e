"""Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the score drop when each is ablated.

The passes are in `_ablation.py`; this module declares the method and plugs its weights in.
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class AblationCAM(CamMethod):
    name = "ablationcam"
    aliases = ("ablation-cam",)
    summary = "channel weights: score drop when the channel is ablated"
    reference = "AblationCAM"
    checked = "Pearson >= 0.99 after min-max scaling"
    notes = ("ours: one pass per channel for all targets, the chunk timed to the fastest per run, a hook instead "
             "of swapping the layer; grad-cam's ablation values kept (0 after a ReLU, else the running minimum - "
             "1e7 per row of its 32-channel batches)")
    gradients = False
    per_channel = True
    order = 110

    def channel_weights(self, step):
        from xaicli.explain.cams._ablation import ablation_weights

        w, info = ablation_weights(step.engine.adapter.net, step.layer.module, step.x, step.raw.detach(), step.acts,
                                   step.scorers, batch_size=step.batch_size(), progress=step.engine.progress,
                                   desc=f"ablationcam {step.layer.name}", vit=step.layer.tokens is not None,
                                   plan=step.chunk_plan())
        step.note(ablation=info)
        return w
