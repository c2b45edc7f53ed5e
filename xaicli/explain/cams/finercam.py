"""Finer-CAM (Zhang et al. 2025): Grad-CAM of the target's score against its most similar classes."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod

COMPARED = 3      # the most similar classes each target is compared with


class FinerCAM(CamMethod):
    name = "finercam"
    aliases = ("finer-cam",)
    summary = "Grad-CAM of the target against its most similar classes"
    reference = "FinerCAM"
    notes = f"Grad-CAM of the target against its {COMPARED} most similar classes (grad-cam's FinerWeightedTarget)"
    tasks = ("classification",)
    order = 150

    def scorers(self, engine, logits_row, targets):
        """Per target, grad-cam's FinerWeightedTarget against the classes whose logits are nearest."""
        import numpy as np

        k = logits_row.shape[0]
        vals = logits_row.float().cpu().numpy()
        out = []
        for t in targets:
            order = [int(i) for i in np.argsort(np.abs(vals - vals[t.index]), kind="stable") if i != t.index]
            out.append(FinerScore(t.index, order[:min(COMPARED, k - 1)]))
        return out

    def channel_weights(self, step):
        step.note(comparison=[s.comparison for s in step.scorers])
        return self.grad_cam(step, "GradCAM")


class FinerScore:
    """FinerCAM's target: the class against its most similar classes (grad-cam's FinerWeightedTarget)."""

    def __init__(self, main: int, comparison: list[int], alpha: float = 1.0):
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

        self.target = FinerWeightedTarget(main, comparison, alpha)
        self.main, self.comparison, self.alpha = main, comparison, alpha

    def __call__(self, out):
        return self.target(out)
