"""SmoothGrad over Integrated Gradients: the mean IG map over noisy copies of x, each against the baseline."""

from __future__ import annotations

from xaicli.explain.attribution import NOISE_STD, SAMPLES, SEED, AttributionMethod


class SmoothGradIG(AttributionMethod):
    name = "smoothgrad-ig"
    summary = "mean IG over --samples noisy copies of x (with K random baselines: every copy against every draw)"
    reference, reference_package = "IntegratedGradients", "captum.attr"
    checked = "its mean over the same noisy copies, within 1e-4 of the map's largest value"
    notes = "--samples x K paths in the shared passes"
    options = (SAMPLES, NOISE_STD, SEED)
    baseline = integral = True
    order = 50

    def job(self, x, baseline, options, key):
        from xaicli.explain.gradients import smoothgrad_ig_job

        return smoothgrad_ig_job(x, baseline, options["samples"], options["noise_std"], seed=options["seed"],
                                 key=key)
