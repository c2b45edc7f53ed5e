"""DeepLiftShap (Lundberg & Lee 2017): DeepLift averaged over a distribution of baselines, as Captum's DeepLiftShap.

The distribution is the baseline's draws: `-B noise` or `-B uniform` with
`--baseline-samples N` (or an image-like baseline repeated, one draw: then it is
deeplift). Each draw x'_k pairs with x in one batch (attribution/deeplift.py), the pairs
chunked by memory; the map is the mean over k of (x − x'_k) ⊙ m_k, so Σ map =
S(x) − mean_k S(x'_k), stored as the delta. Captum's DeepLiftShap runs all pairs in one
batch, and its max-pool rule then takes, where an input does not change (|Δin| < 1e-10),
the first pair's gradient for every pair; here each pair takes its own: the map is the
mean of Captum's DeepLift over the draws, which is Captum's DeepLiftShap unless such a
position gets a gradient.
"""

from __future__ import annotations

from xaicli.explain.attribution.deeplift import DeepLift


class DeepLiftShap(DeepLift):
    name = "deeplift-shap"
    aliases = ("deepliftshap",)
    summary = "the mean of DeepLift over the baseline's draws (-B noise or uniform, --baseline-samples N)"
    reference = "DeepLiftShap"
    checked = ("equal to 1e-5, and to the mean of Captum's DeepLift over the draws (small CNN, smp U-Net++ with "
               "non-overlapping pools); Σ map = S(x) - mean S(x'_k) to 1e-4")
    notes = ("pairs (x, x'_k) batched and chunked; one draw: deeplift; DeepLift's rules, refusals and delta (see "
             "deeplift)")
    order = 57
