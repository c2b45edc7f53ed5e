"""Input x gradient: x * dS/dx, with x the unit-space image (IG against black with one step)."""

from __future__ import annotations

from xaicli.explain.attribution import AttributionMethod


class InputXGradient(AttributionMethod):
    name = "input-x-gradient"
    aliases = ("inputxgradient",)
    summary = "x times the gradient at x"
    reference, reference_package = "InputXGradient", "captum.attr"
    checked = "equal to 1e-5 (relative)"
    notes = "one gradient per target, in the shared passes"
    order = 30

    def job(self, x, baseline, options, key):
        from xaicli.explain.gradients import input_x_gradient_job

        return input_x_gradient_job(x)
