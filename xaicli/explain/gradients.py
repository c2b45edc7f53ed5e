"""Plain-gradient methods and the SmoothGrad noise tunnel, as jobs for the IG engine.

They run through the same batched, chunked passes as Integrated Gradients
(`integrated_gradients.attribute`), so one command can compute IG, saliency and
SmoothGrad for several targets sharing the forward passes.

- saliency: |∂S/∂x| per channel (Simonyan et al.; Captum's `Saliency` default, abs=True).
- input×gradient: x ⊙ ∂S/∂x, with x the unit-space image (so it is IG against a black
  baseline with one step; completeness holds only for models linear in x).
- smoothgrad: the mean of the signed gradient ∂S/∂x over noisy copies x + ε,
  ε ~ N(0, (noise_std·(max x − min x))²) (Smilkov et al.: the noise level is relative to
  the input's value range). Raw and signed like every map here; take |·| to display.
- smoothgrad-sq and vargrad: the mean square and the variance of the same signed gradients
  over the same copies (Captum's NoiseTunnel smoothgrad_sq and vargrad over raw gradients).
- smoothgrad-ig: the mean of IG over noisy copies of x, each against the baseline
  (Captum's NoiseTunnel over IntegratedGradients, nt_type="smoothgrad"); with K random
  baselines, each copy against each of them.

Noise is seeded per record (see `baselines.derive_seed`): reruns give the same maps.
"""

from __future__ import annotations

from typing import Callable

import torch

from xaicli.explain.baselines import derive_seed
from xaicli.explain.integrated_gradients import Job, JobResult, attribute


def noisy_copies(x: torch.Tensor, samples: int, noise_std: float, *, seed: int = 0, key: str = "") -> torch.Tensor:
    """(samples, C, H, W): x + Gaussian noise with std noise_std × x's value range, not clipped."""
    gen = torch.Generator().manual_seed(derive_seed(seed, key, "smoothgrad"))
    spread = float(x.max() - x.min()) or 1.0
    eps = torch.randn((max(1, samples), *x.shape[1:]), generator=gen).to(x.device, x.dtype)
    return x + eps * (noise_std * spread)


def saliency_job(x: torch.Tensor) -> Job:
    return Job("saliency", x, x, integral=False, absolute=True)


def input_x_gradient_job(x: torch.Tensor) -> Job:
    return Job("input_x_gradient", x, x, integral=False, scales=x)


def smoothgrad_job(x: torch.Tensor, samples: int = 10, noise_std: float = 0.15, *, seed: int = 0,
                   key: str = "", moment: str = "mean") -> Job:
    """The noise tunnel over the plain gradient: its mean (SmoothGrad), mean square or variance
    (SmoothGrad², VarGrad) over the same seeded copies."""
    noisy = noisy_copies(x, samples, noise_std, seed=seed, key=key)
    return Job("smoothgrad" if moment == "mean" else f"smoothgrad_{moment}", noisy, noisy, integral=False,
               moment=moment)


def smoothgrad_ig_job(x: torch.Tensor, baselines: torch.Tensor, samples: int = 10, noise_std: float = 0.15, *,
                      seed: int = 0, key: str = "") -> Job:
    """IG over `samples` noisy copies of x, each against every one of the K baselines
    (samples × K paths): the mean over copies of the K-draw IG map."""
    noisy = noisy_copies(x, samples, noise_std, seed=seed, key=key)
    k = baselines.shape[0]
    return Job("smoothgrad_ig", baselines.repeat(noisy.shape[0], 1, 1, 1), noisy.repeat_interleave(k, 0),
               integral=True)


def saliency(forward: Callable, x: torch.Tensor, weights: torch.Tensor, **kw) -> JobResult:
    return attribute(forward, [saliency_job(x)], weights, **kw)[0]


def input_x_gradient(forward: Callable, x: torch.Tensor, weights: torch.Tensor, **kw) -> JobResult:
    return attribute(forward, [input_x_gradient_job(x)], weights, **kw)[0]


def smoothgrad(forward: Callable, x: torch.Tensor, weights: torch.Tensor, samples: int = 10,
               noise_std: float = 0.15, seed: int = 0, key: str = "", **kw) -> JobResult:
    return attribute(forward, [smoothgrad_job(x, samples, noise_std, seed=seed, key=key)], weights, **kw)[0]
