"""Saliency (Simonyan et al. 2014): |dS/dx| per channel, Captum's `Saliency` default (abs=True)."""

from __future__ import annotations

from xaicli.explain.attribution import AttributionMethod


class Saliency(AttributionMethod):
    name = "saliency"
    summary = "|gradient| of the score at x"
    reference, reference_package = "Saliency", "captum.attr"
    checked = "equal to 1e-5 (relative)"
    notes = "one gradient per target, in the shared passes"
    order = 20

    def job(self, x, baseline, options, key):
        from xaicli.explain.gradients import saliency_job

        return saliency_job(x)

    def meta(self, options):
        return {"absolute": True}
