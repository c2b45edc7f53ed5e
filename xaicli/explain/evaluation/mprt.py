"""Smooth and efficient MPRT (Hedström et al. 2024): the randomisation test made cheaper and less noisy.

Both follow Quantus 0.6 and are tested equal to it. The model is randomised as Quantus
does it (every module with `reset_parameters`, in registration order, each reset after
`torch.manual_seed(--seed + 1)`), and the map is recomputed through its method by the
intact and the randomised model.

`efficient_mprt` (`EfficientMPRT`): the relative rise of the map's discrete entropy
(histogram of 100 equal bins over its range), (H(random) − H(intact)) / H(intact).
Quantus picks the bin count from the whole batch; here it is fixed at 100 (Quantus's
default when given), so one record's value does not depend on the others.

`smooth_mprt` (`SmoothMPRT`, its last-layer correlation): Spearman ρ of |map| averaged
over `--samples` inputs (the image plus Gaussian noise of σ = 0.1 × its value range, the
last sample without noise), intact vs randomised model; the intact model's draws come
first, then the randomised one's, from numpy's legacy generator seeded per map target.
"""

from __future__ import annotations

import numpy as np

from xaicli.metrics.registry import DOWN, UP, Metric, declare

BINS = 100
SMOOTH_SAMPLES = 10     # Quantus: 50, each a recomputation of the map
SMOOTH_NOISE = 0.1      # of the image's value range


def discrete_entropy(a: np.ndarray, bins: int = BINS) -> float:
    """Shannon entropy (nats) of the histogram of a's values (Quantus's `discrete_entropy`)."""
    hist, _ = np.histogram(np.asarray(a, dtype=np.float64), bins=bins)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log(p)).sum())


def randomised(adapter, seed: int):
    """A copy of the adapter whose model Quantus's layer generator has fully randomised."""
    import copy
    import dataclasses

    import torch

    net = copy.deepcopy(adapter.net)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for _, module in net.named_modules():
            if hasattr(module, "reset_parameters"):
                torch.manual_seed(seed + 1)
                module.reset_parameters()
    for p in net.parameters():
        p.requires_grad_(False)
    return dataclasses.replace(adapter, net=net.eval())


def _prepared(ctx, mt, metric: str):
    """(recompute function, Quantus-randomised adapter), or (None, None) with the reason warned once."""
    explain = ctx.recompute(mt, metric)
    if explain is None:
        return None, None
    model = ctx.state.get("quantus_random")
    if model is None:
        model = ctx.state["quantus_random"] = randomised(ctx.adapter, int(ctx.options.get("seed", 0)))
    return explain, model


def run(ctx, group: list) -> list[dict]:
    out = [{"efficient_mprt": None} for _ in group]
    for i, mt in enumerate(group):
        explain, model = _prepared(ctx, mt, "efficient_mprt")
        if explain is None:
            continue
        before = discrete_entropy(explain(ctx.adapter))
        if before == 0:
            ctx.warn_once("efficient_mprt", "maps recomputed constant (entropy 0) give null")
            continue
        out[i] = {"efficient_mprt": (discrete_entropy(explain(model)) - before) / before}
    return out


def smooth(ctx, explain, adapter, rng) -> np.ndarray:
    """|mean map| over `--samples` noisy copies of the image (the last one without noise)."""
    image = ctx.image
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    chw = (image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)).astype(np.float64) / scale
    sigma = SMOOTH_NOISE * (chw.max() - chw.min())
    n = int(ctx.options.get("samples") or SMOOTH_SAMPLES)
    total = None
    for k in range(n):
        noisy = chw if k == n - 1 else chw + rng.randn(*chw.shape) * sigma
        img = ((noisy[0] if image.ndim == 2 else np.moveaxis(noisy, 0, -1)) * 255.0).astype(np.float32)
        a = explain(adapter, image=img) / n
        total = a if total is None else total + a
    return np.abs(total)


def run_smooth(ctx, group: list) -> list[dict]:
    from xaicli.metrics.similarity import spearman

    out = [{"smooth_mprt": None} for _ in group]
    for i, mt in enumerate(group):
        explain, model = _prepared(ctx, mt, "smooth_mprt")
        if explain is None:
            continue
        rng = ctx.legacy_rng(mt, "smooth_mprt")
        intact = smooth(ctx, explain, ctx.adapter, rng)
        out[i] = {"smooth_mprt": spearman(intact, smooth(ctx, explain, model, rng))}
    return out


declare(Metric("smooth_mprt", "randomisation", ("smooth_mprt",),
               "Spearman ρ of |map| averaged over `--samples` (10) noisy inputs (σ = 0.1 × the image's range), "
               "by the intact and the fully randomised model (Quantus's randomisation, seed --seed + 1)",
               null="map not recomputable, non-finite map, constant smoothed map", better=DOWN,
               reference="quantus.SmoothMPRT (return_last_correlation): equal to 1e-4", default=False,
               run=run_smooth, order=21))
declare(Metric("efficient_mprt", "randomisation", ("efficient_mprt",),
               "relative rise of the map's histogram entropy (100 bins) when the model is fully randomised the "
               "way Quantus does it (every module's reset_parameters, seed --seed + 1): a map that follows the "
               "model grows noisier",
               null="map not recomputable, non-finite map, constant recomputed map", better=UP,
               reference="quantus.EfficientMPRT (n_bins=100): equal to 1e-4", default=False, run=run, order=20))
