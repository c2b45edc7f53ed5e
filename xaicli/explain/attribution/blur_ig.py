"""Blur IG (Xu, Venugopalan, Sundararajan et al. 2020): integrated gradients along a path of ever blurrier images.

The path runs from x (sigma 0) to x blurred with sigma = --blur-max-sigma; no baseline
image is needed. As PAIR's `saliency.core.BlurIG` computes it (a left Riemann sum):

    A = −Σ_i Δσ · ∂x(σ_i)/∂σ ⊙ ∇S(x(σ_i)),   σ_i = i·σ_max/n,  i = 0 … n−1,

with ∂x/∂σ a forward difference of step --blur-grad-step and the blur scipy's
`ndimage.gaussian_filter` over the two spatial axes (kernel radius round(4σ), zeros
outside the image), here as two matrix products in float64 so the path is exact to
the last bits. Completeness: ΣA ≈ S(x) − S(x(σ_max)), stored per target as delta.
The path points go through the shared gradient engine in chunks of sigmas (memory
stays at a chunk of images, not all n).
"""

from __future__ import annotations

from xaicli.explain.attribution import AttributionMethod
from xaicli.explain.registry import Option

CHUNK = 16      # sigmas whose path images are held at once

MAX_SIGMA = Option("blur_max_sigma", float, 50.0, min=0.0,
                   help="Blur IG: sigma of the blurriest image, where the path starts, in image pixels (PAIR's "
                        "default 50).")
BLUR_STEPS = Option("blur_steps", int, 100, min=1, help="Blur IG: path steps (Riemann sum), PAIR's default 100.")
GRAD_STEP = Option("blur_grad_step", float, 0.01, min=1e-6,
                   help="Blur IG: sigma step of the forward difference d(blurred image)/d(sigma).")


class BlurIG(AttributionMethod):
    name = "blur-ig"
    aliases = ("blurig", "blur-integrated-gradients")
    summary = "integrated gradients along blurs of x, from sigma --blur-max-sigma down to the image itself"
    reference, reference_package = "core.BlurIG", "saliency"
    checked = "equal to 1e-4 of the map's largest value (small CNN, smp U-Net++)"
    notes = "Gaussian blur as scipy's gaussian_filter (constant mode) in float64; sigmas through the shared passes " \
            "in chunks; delta = Σ map − (S(x) − S(most blurred x))"
    options = (MAX_SIGMA, BLUR_STEPS, GRAD_STEP)
    order = 80

    def compute(self, step):
        import torch

        from xaicli.explain.integrated_gradients import Job, attribute

        x = step.x
        n, top, h = step.options["blur_steps"], step.options["blur_max_sigma"], step.options["blur_grad_step"]
        sigmas = [i * top / n for i in range(n + 1)]
        total = None
        for lo in range(0, n, CHUNK):
            idx = range(lo, min(n, lo + CHUNK))
            points = [blur(x, sigmas[i]) for i in idx]
            slopes = torch.cat([(blur(x, sigmas[i] + h) - p) / h * (sigmas[i + 1] - sigmas[i])
                                for i, p in zip(idx, points)])
            points = torch.cat(points)
            # the engine averages a job's paths: scale by their count to get the sum
            job = Job(self.key, points.float(), points.float(), integral=False, scales=(-len(idx) * slopes).float())
            (res,) = attribute(step.forward, [job], step.weights, planner=step.planner)
            total = res.attributions if total is None else total + res.attributions
            step.evaluated += len(idx)
        ends = torch.cat([x, blur(x, top).to(x.dtype)])
        step.info.update(completeness(total, step.scores(ends)))
        return total

    def meta(self, options):
        return {**self.option_meta(options), "baseline": None, "path": "gaussian blur, sigma max to 0"}


def gaussian_matrix(n: int, sigma: float, device):
    """(n, n) float64: scipy.ndimage.gaussian_filter1d(mode="constant", truncate=4) as a matrix."""
    import torch

    if sigma == 0:
        return torch.eye(n, dtype=torch.float64, device=device)
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    kernel = torch.exp(-0.5 / (sigma * sigma) * taps ** 2)
    kernel = kernel / kernel.sum()
    pos = torch.arange(n, device=device)
    offset = pos[None, :] - pos[:, None]                    # input j − output i
    inside = offset.abs() <= radius
    return torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=torch.float64,
                                                                                        device=device))


def blur(x, sigma: float):
    """x (1, C, H, W) blurred over H and W with sigma (pixels), in float64 (sigma 0: x itself)."""
    rows, cols = gaussian_matrix(x.shape[-2], sigma, x.device), gaussian_matrix(x.shape[-1], sigma, x.device)
    return rows @ x.double() @ cols.T


def completeness(attributions, scores) -> dict:
    """Per target: f_x = S(x), f_baseline = S(path start), delta = Σ map − (f_x − f_baseline), relative_delta."""
    sums = attributions.flatten(1).double().sum(1).cpu().tolist()
    f_x, f_start = scores[0].double().cpu().tolist(), scores[1:].double().mean(0).cpu().tolist()
    delta = [s - (a - b) for s, a, b in zip(sums, f_x, f_start)]
    rel = [abs(d) / abs(a - b) if a != b else (0.0 if d == 0 else None) for d, a, b in zip(delta, f_x, f_start)]
    return {"delta": delta, "relative_delta": rel, "f_x": f_x, "f_baseline": f_start}
