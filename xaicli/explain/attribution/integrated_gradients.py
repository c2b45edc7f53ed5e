"""Integrated Gradients (Sundararajan et al. 2017): the path integral of the gradient from the baseline to x."""

from __future__ import annotations

from xaicli.explain.attribution import AttributionMethod


class IntegratedGradients(AttributionMethod):
    name = "integrated-gradients"
    aliases = ("ig",)
    summary = "(x - x') times the mean gradient on the straight path from the baseline x' to x"
    reference, reference_package = "IntegratedGradients", "captum.attr"
    checked = "with --steps N (Captum's nodes): within 1e-4 of the map's largest value (smp U-Net++, HF ConvNeXt, ViT)"
    notes = ("every target, baseline and random draw in shared chunked passes; points where the map still "
             "changes until --accuracy and --tolerance hold (--steps N: fixed nodes)")
    baseline = integral = True
    default = True
    order = 10

    def job(self, x, baseline, options, key):
        from xaicli.explain.integrated_gradients import Job

        return Job(self.key, baseline, x.expand(baseline.shape[0], *x.shape[1:]))
