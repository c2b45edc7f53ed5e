"""Robustness of a map to small input noise: max sensitivity and the local Lipschitz estimate.

The map is recomputed through the method that made it (its engine and the meta's
options, as `--randomize` does) on the image plus noise, and compared with the map the
same recomputation gives on the image itself, so only the input differs. As Quantus
0.6 (`MaxSensitivity`, `LocalLipschitzEstimate`, tested equal with the same noise): the
noise is drawn per value of the image's own channels in [0, 1] units (C, H, W order)
from numpy's legacy generator seeded per map target, `--samples` times; the value is
the largest over the samples.
"""

from __future__ import annotations

import numpy as np

from xaicli.explain.evaluation import by_max
from xaicli.metrics.registry import DOWN, Metric, declare

SAMPLES = 10        # Quantus: 200, each a full recomputation of the map
NOISE = 0.05        # --noise: uniform half-width (max sensitivity), Gaussian σ (Lipschitz), in [0, 1] units
EPS = 1e-10         # Quantus's lipschitz_constant guard


def noisy_images(ctx, mt, metric: str, draw) -> list[tuple[np.ndarray, np.ndarray]]:
    """`--samples` (noise (C·H·W,), image + noise as a float array like the record's image) pairs."""
    image = ctx.image
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    unit = chw.astype(np.float64) / scale
    rng = ctx.legacy_rng(mt, metric)
    out = []
    for _ in range(int(ctx.options.get("samples") or SAMPLES)):
        noise = draw(rng, unit.size)
        noisy = (unit + noise.reshape(unit.shape)) * 255.0          # image_to_unit divides floats by 255
        out.append((noise, (noisy[0] if image.ndim == 2 else np.moveaxis(noisy, 0, -1)).astype(np.float32)))
    return out


def _recomputed(ctx, mt, metric: str):
    """(recompute function, the map it gives on the image itself), or (None, None)."""
    explain = ctx.recompute(mt, metric)
    return (None, None) if explain is None else (explain, explain(ctx.adapter))


def _max(values: list) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(max(finite)) if finite else None


def max_sensitivity(ctx, group: list) -> list[dict]:
    """max over noise draws of ‖a(x + ε) − a(x)‖_F / ‖a(x)‖_F, ε uniform in ±`--noise`."""
    r = float(ctx.options.get("noise") or NOISE)
    out = []
    for mt in group:
        explain, a = _recomputed(ctx, mt, "max_sensitivity")
        norm = None if a is None else float(np.linalg.norm(a))
        if a is None or not norm:
            if a is not None:
                ctx.warn_once("max_sensitivity", "maps recomputed all zero (no norm to divide by) give null")
            out.append({"max_sensitivity": None})
            continue
        values = [float(np.linalg.norm(explain(ctx.adapter, image=img) - a)) / norm
                  for _, img in noisy_images(ctx, mt, "max_sensitivity",
                                             lambda rng, n: rng.uniform(low=-r, high=r, size=(1, n))[0])]
        out.append({"max_sensitivity": _max(values)})
    return out


def local_lipschitz(ctx, group: list) -> list[dict]:
    """max over noise draws of ‖â(x + ε) − â(x)‖₂ / ‖ε‖₂, â = a / max|a|, ε Gaussian with σ = `--noise`."""
    sigma = float(ctx.options.get("noise") or NOISE)
    out = []
    for mt in group:
        explain, a = _recomputed(ctx, mt, "local_lipschitz")
        if a is None:
            out.append({"local_lipschitz": None})
            continue
        a = by_max(a)
        values = []
        for noise, img in noisy_images(ctx, mt, "local_lipschitz",
                                       lambda rng, n: rng.normal(loc=0.0, scale=sigma, size=(1, n))[0]):
            b = by_max(explain(ctx.adapter, image=img))
            values.append(float(np.sqrt(((a - b) ** 2).sum())) / (float(np.sqrt((noise ** 2).sum())) + EPS))
        out.append({"local_lipschitz": _max(values)})
    return out


REDO = ("recomputed through its method (IG's steps, the CAM's layer, ...) on the image plus noise and "
        "compared with the recomputation on the image itself")
declare(Metric("max_sensitivity", "robustness", ("max_sensitivity",),
               "max over `--samples` (10) draws of ‖a(x+ε) − a(x)‖ / ‖a(x)‖, ε uniform in ±`--noise` (0.05) per "
               "pixel value; the map " + REDO,
               null="map not recomputable (method unknown, --target-mask target), all-zero or non-finite map",
               better=DOWN, reference="quantus.MaxSensitivity: equal to 1e-4 (same noise)", default=False,
               run=max_sensitivity, order=0))
declare(Metric("local_lipschitz", "robustness", ("local_lipschitz",),
               "max over `--samples` (10) draws of ‖â(x+ε) − â(x)‖ / ‖ε‖, â = a / max|a|, ε Gaussian with "
               "σ = `--noise` (0.05); the map " + REDO,
               null="map not recomputable (method unknown, --target-mask target), non-finite map",
               better=DOWN, reference="quantus.LocalLipschitzEstimate: equal to 1e-4 (same noise)", default=False,
               run=local_lipschitz, order=1))
