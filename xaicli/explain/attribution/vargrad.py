"""VarGrad (Adebayo et al. 2018): the variance of the signed gradient over SmoothGrad's noisy copies of x."""

from __future__ import annotations

from xaicli.explain.attribution.smoothgrad import SmoothGrad


class VarGrad(SmoothGrad):
    name = "vargrad"
    aliases = ("var-grad",)
    summary = "variance of the gradient over smoothgrad's --samples noisy copies (mean square less squared mean)"
    reference, reference_package = "NoiseTunnel", "captum.attr"
    checked = "NoiseTunnel(Saliency) with nt_type='vargrad', abs=False and the same noise: equal to 1e-5 (relative)"
    notes = "the copies of smoothgrad (same --seed: same noise); both moments from one shared pass"
    moment = "variance"
    order = 42
