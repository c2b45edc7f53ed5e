"""SmoothGrad (Smilkov et al. 2017): the mean signed gradient over noisy copies of x.

Its noise-tunnel kin (smoothgrad-sq, vargrad) subclass it with another `moment` of the same
copies' gradients (integrated_gradients.Job.moment).
"""

from __future__ import annotations

from typing import ClassVar

from xaicli.explain.attribution import NOISE_STD, SAMPLES, SEED, AttributionMethod


class SmoothGrad(AttributionMethod):
    name = "smoothgrad"
    summary = "mean signed gradient over --samples copies x + e, e ~ N(0, (--noise-std x (max x - min x))^2)"
    reference, reference_package = "grad", "torch.autograd"
    checked = "the mean of its gradients over the same noisy copies, to 1e-5 (relative)"
    notes = "noise seeded by --seed and the record id"
    options = (SAMPLES, NOISE_STD, SEED)
    order = 40
    moment: ClassVar[str] = "mean"      # of the copies' gradients: "mean", "square" or "variance"

    def job(self, x, baseline, options, key):
        from xaicli.explain.gradients import smoothgrad_job

        return smoothgrad_job(x, options["samples"], options["noise_std"], seed=options["seed"], key=key,
                              moment=self.moment)
