"""GradientSHAP (Lundberg & Lee 2017; Captum's `GradientShap`): expected gradients with a random path point.

Each of --samples draws takes a noisy copy x̃ = x + ε (ε ~ N(0, (noise_std·(max x − min x))²)),
one baseline b among the K of the --baseline (K > 1 for noise and uniform with
--baseline-samples), and α ~ U(0, 1); the map is the mean of (x̃ − b) ⊙ ∇S(α·x̃ + (1 − α)·b),
the point formed as Captum forms it. Draws are seeded by --seed and the record id. The
gradients run as one job of the shared engine (one point per draw, integral=False, the
scale x̃ − b), so GradientSHAP shares its passes with IG and the gradient methods.
"""

from __future__ import annotations

from xaicli.explain.attribution import NOISE_STD, SAMPLES, SEED, AttributionMethod


def draws(x, baselines, samples: int, noise_std: float, *, seed: int = 0, key: str = ""):
    """The draws of one map: noisy copies (n, C, H, W), baseline indices (n,) into `baselines`
    (K, C, H, W), and α (n,), from one generator seeded by (seed, record id)."""
    import torch

    from xaicli.explain.baselines import derive_seed

    gen = torch.Generator().manual_seed(derive_seed(seed, key, "gradient-shap"))
    spread = float(x.max() - x.min()) or 1.0
    eps = torch.randn((samples, *x.shape[1:]), generator=gen).to(x.device, x.dtype)
    index = torch.randint(baselines.shape[0], (samples,), generator=gen)
    alpha = torch.rand(samples, generator=gen).to(x.device, x.dtype)
    return x + eps * (noise_std * spread), index.to(x.device), alpha


class GradientShap(AttributionMethod):
    name = "gradient-shap"
    aliases = ("gradientshap",)
    summary = ("mean over --samples draws of (x~ - b) times the gradient at a x~ + (1 - a) b: x~ = x + noise, b one "
               "of the baseline's draws, a ~ U(0, 1)")
    reference, reference_package = "GradientShap", "captum.attr"
    checked = "equal to 1e-5 (relative) with the same noise, baseline draws and a"
    notes = ("draws seeded by --seed and the record id; noise --noise-std of the value range; one point per draw "
             "in the shared passes")
    options = (SAMPLES, NOISE_STD, SEED)
    baseline = True
    order = 55

    def job(self, x, baseline, options, key):
        from xaicli.explain.integrated_gradients import Job

        noisy, index, alpha = draws(x, baseline, options["samples"], options["noise_std"], seed=options["seed"],
                                    key=key)
        b = baseline[index]
        a = alpha.view(-1, *[1] * (x.ndim - 1))
        points = (a * noisy + (1.0 - a) * b).contiguous()
        return Job(self.key, points, points, integral=False, scales=noisy - b)
