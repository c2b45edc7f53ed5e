"""Faithfulness by perturbing input features: faithfulness correlation, monotonicity, IROF.

Each follows Quantus 0.6 (`FaithfulnessCorrelation`, `MonotonicityCorrelation`, `IROF`)
and is tested equal to it with the same draws. As there, a feature is one value of the
model's (C, H, W) input in [0, 1] at the image's size, and the (H, W) map is given to
each channel of its pixel. Random draws come from numpy's legacy generator seeded per
map target (`Context.legacy_rng`), the stream Quantus draws from after `np.random.seed`.
"""

from __future__ import annotations

import numpy as np

from xaicli.explain.evaluation import index_of
from xaicli.metrics.registry import UP, Metric, declare
from xaicli.metrics.similarity import pearson, spearman

SUBSET = 224            # Quantus's FaithfulnessCorrelation subset_size
RUNS = 100              # ... and its nr_runs
MONOTONICITY_SAMPLES = 10   # Quantus: 100; each sample is one forward per step
EPS = 1e-5              # MonotonicityCorrelation's eps: |S(x)| below it is not inverted


def _features(ctx, mt) -> np.ndarray:
    """The map as one value per input feature, (C·H·W,) float32, as Quantus broadcasts it."""
    c = ctx.unit.shape[1]
    return np.broadcast_to(mt.smap.astype(np.float32), (c, *mt.smap.shape)).reshape(-1)


def _setup(ctx, group: list, metric: str):
    """Null rows, the map targets the metric applies to, their target, and the flat unit image."""
    out = [{metric: None} for _ in group]
    live = [(i, mt) for i, mt in enumerate(group) if ctx.problem(mt, metric) is None]
    return out, live, index_of(group[0]), group[0].pred_mask, ctx.unit[0].reshape(-1)


def faithfulness_correlation(ctx, group: list) -> list[dict]:
    """Bhatt et al. 2020: Pearson, over random feature subsets, of Σ map on the subset and the
    score drop when the subset takes the `--perturb-baseline` value."""
    import torch

    from xaicli.explain.faithfulness import perturbation_baseline

    out, live, index, region, flat = _setup(ctx, group, "faithfulness_correlation")
    if not live:
        return out
    unit = ctx.unit[0]
    base = perturbation_baseline(ctx.unit, ctx.options["perturb_baseline"])[0].reshape(-1)
    n = flat.numel()
    k = min(int(ctx.options.get("subset_size") or SUBSET), n)
    runs = int(ctx.options.get("samples") or RUNS)
    s0 = ctx.scores(ctx.unit, index, region)[0]
    for i, mt in live:
        rng = ctx.legacy_rng(mt, "faithfulness_correlation")
        subsets = np.stack([rng.choice(n, k, replace=False) for _ in range(runs)])

        def make(r, subsets=subsets):
            x = flat.clone()
            idx = torch.from_numpy(subsets[r]).to(x.device)
            x[idx] = base[idx]
            return x.view_as(unit)

        drops = s0 - ctx.score_each(make, runs, index, region)
        sums = _features(ctx, mt).astype(np.float64)[subsets].sum(axis=1)
        out[i] = {"faithfulness_correlation": pearson(sums, drops)}
    return out


def monotonicity(ctx, group: list) -> list[dict]:
    """Nguyen & Martínez 2020 (Quantus `MonotonicityCorrelation`): features in steps of
    `--subset-size`, least |map| first; each step set to a uniform random value `--samples`
    times; Spearman of the step's Σ|map| and the mean squared score change ÷ S(x)²."""
    import torch

    out, live, index, region, flat = _setup(ctx, group, "monotonicity")
    if not live:
        return out
    unit = ctx.unit[0]
    n = flat.numel()
    step = min(int(ctx.options.get("subset_size") or SUBSET), n)
    samples = int(ctx.options.get("samples") or MONOTONICITY_SAMPLES)
    s0 = ctx.scores(ctx.unit, index, region)[0]
    inv = 1.0 / abs(s0) ** 2 if abs(s0) >= EPS else 1.0
    for i, mt in live:
        a = np.abs(_features(ctx, mt))
        order = np.argsort(a)                       # Quantus's sort (not stable): ties fall as there
        steps = [order[j:j + step] for j in range(0, n, step)]
        rng = ctx.legacy_rng(mt, "monotonicity")
        fills = [rng.uniform(0.0, 1.0, size=1)[0] for _ in range(len(steps) * samples)]

        def make(r, steps=steps, fills=fills):
            x = flat.clone()
            x[torch.from_numpy(steps[r // samples]).to(x.device)] = float(fills[r])
            return x.view_as(unit)

        s = ctx.score_each(make, len(steps) * samples, index, region).reshape(len(steps), samples)
        variance = ((s - s0) ** 2).mean(axis=1) * inv
        sums = np.array([a[idx].astype(np.float64).sum() for idx in steps])
        out[i] = {"monotonicity": spearman(sums, variance)}
    return out


def irof(ctx, group: list) -> list[dict]:
    """Rieger & Hansen 2020 (Quantus `IROF`): SLIC superpixels of the input (scikit-image,
    its defaults), most relevant (mean map) first, each replaced by the mean of the image as
    it then is (channels pooled, as Quantus); irof = segments − trapezoid area (dx = 1) of
    S(perturbed)/S(x): the area over the curve, in segments."""
    import torch
    from skimage.segmentation import slic

    out, live, index, region, _ = _setup(ctx, group, "irof")
    if not live:
        return out
    x0 = ctx.unit[0].detach().cpu().numpy()
    segments = slic(np.moveaxis(x0, 0, -1).astype("double"), start_label=0)
    labels = np.unique(segments)
    if labels.size < 2:
        ctx.warn_once("irof", "images SLIC cannot split into 2 or more superpixels give null")
        return out
    s0 = ctx.scores(ctx.unit, index, region)[0]
    if s0 == 0:
        ctx.warn_once("irof", "targets whose score is 0 (no ratio to take) give null")
        return out
    for i, mt in live:
        a = _features(ctx, mt).reshape(x0.shape)
        order = np.argsort(-np.array([a[:, segments == s].mean() for s in range(labels.size)]))
        state = {"x": x0}

        def make(r, order=order, state=state):
            x = state["x"]
            state["x"] = x = np.where((segments == order[r])[None], x.mean(), x)
            return torch.from_numpy(x).to(ctx.unit.device)

        ratios = ctx.score_each(make, labels.size, index, region) / s0
        area = float(((ratios[1:] + ratios[:-1]) / 2).sum())
        out[i] = {"irof": float(labels.size - area)}
    return out


SEEDED = "seeded by --seed, the record, map and target"
declare(Metric("faithfulness_correlation", "faithfulness", ("faithfulness_correlation",),
               "Pearson ρ, over `--samples` (100) random subsets of `--subset-size` (224) input features, of the "
               "map's sum on the subset and the score's drop when the subset takes `--perturb-baseline`; " + SEEDED,
               null="constant or non-finite map, empty predicted region, constant drops", better=UP,
               reference="quantus.FaithfulnessCorrelation: equal to 1e-4 (perturb_baseline=0.0 for black)",
               default=False, run=faithfulness_correlation, order=30))
declare(Metric("monotonicity", "faithfulness", ("monotonicity",),
               "Spearman ρ of the |map| summed over steps of `--subset-size` features (least relevant first) "
               "and the mean squared score change ÷ S(x)² when the step takes a uniform random value, "
               "`--samples` (10) times; " + SEEDED,
               null="constant or non-finite map, empty predicted region", better=UP,
               reference="quantus.MonotonicityCorrelation: equal to 1e-4", default=False, run=monotonicity,
               order=31))
declare(Metric("irof", "faithfulness", ("irof",),
               "iterative removal of features: SLIC superpixels (scikit-image), most relevant first, each set to "
               "the image's mean; segments − area under S(perturbed)/S(x) (in segments: up to their count)",
               null="constant or non-finite map, empty predicted region, S(x) = 0, fewer than 2 superpixels",
               better=UP, reference="quantus.IROF: equal to 1e-4 (with its mask broadcast over channels)",
               default=False, run=irof, order=32))
