"""Deconvolution (Zeiler & Fergus 2014): the gradient with every ReLU passing back the positive part of what arrives.

guided-backprop with another rule: the same passes, checks and refusal (attribution/guided_backprop.py).
"""

from __future__ import annotations

from xaicli.explain.attribution.guided_backprop import GuidedBackprop


class Deconvolution(GuidedBackprop):
    name = "deconvolution"
    aliases = ("deconvnet",)
    summary = "the gradient with each ReLU passing back the positive part of the gradient, whatever its input"
    reference = "Deconvolution"
    order = 33
    rule = "deconvolution"
