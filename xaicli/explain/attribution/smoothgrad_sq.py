"""SmoothGrad² (Hooker et al. 2019): the mean squared gradient over SmoothGrad's noisy copies of x."""

from __future__ import annotations

from xaicli.explain.attribution.smoothgrad import SmoothGrad


class SmoothGradSq(SmoothGrad):
    name = "smoothgrad-sq"
    aliases = ("smoothgrad2", "smoothgrad-squared")
    summary = "mean squared gradient over smoothgrad's --samples noisy copies"
    reference, reference_package = "NoiseTunnel", "captum.attr"
    checked = ("NoiseTunnel(Saliency) with nt_type='smoothgrad_sq', abs=False and the same noise: equal to 1e-5 "
               "(relative)")
    notes = "the copies of smoothgrad (same --seed: same noise), squared per copy in the shared passes"
    moment = "square"
    order = 41
