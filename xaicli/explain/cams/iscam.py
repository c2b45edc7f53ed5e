"""IS-CAM (Naidu et al. 2020, "Integrated Score-CAM"): Score-CAM's channel weights averaged along scaled masks.

Channel c's weight is the softmax over channels of the mean, over N rounds, of the target
score of the input masked by k_r·U(Â_c) minus the score of the input itself (Â_c the
channel min-max scaled at the layer, U bilinear upsampling). The scales are torchcam
0.5's ISCAM's: k_r = Σ_{j=1..r} j/N, a running sum (so they reach (N+1)/2, not 1); the
passes and the softmax are SS-CAM's (sscam.py).
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod
from xaicli.explain.registry import Option

SAMPLES = Option("iscam_samples", int, 10, min=1, help="IS-CAM: integration steps per channel (torchcam's default).")


class ISCAM(CamMethod):
    name = "iscam"
    aliases = ("is-cam", "integrated-scorecam")
    summary = "channel weights: softmax of the mean target score over scaled Score-CAM masks"
    reference, reference_package = "ISCAM", "torchcam.methods"
    checked = "equal to 1e-5 after min-max scaling"
    notes = "ours, torchcam's arithmetic and scales: one pass per channel and step for all targets, batched by memory"
    options = (SAMPLES,)
    gradients = False
    per_channel = True
    order = 104

    def channel_weights(self, step):
        from xaicli.explain.cams.sscam import score_gains, unit_masks

        n = step.options["iscam_samples"]
        masks = unit_masks(step)
        scales = [sum((j + 1) / n for j in range(r + 1)) for r in range(n)]   # torchcam's float accumulation

        def inputs(r, idx):
            return scales[r] * (masks[0, idx][:, None] * step.x)

        step.note(iscam={"samples": n})
        return score_gains(step, inputs, n)
