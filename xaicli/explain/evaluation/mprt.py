"""Efficient MPRT (Hedström et al. 2024): does the map grow more complex when the model is random?

As Quantus 0.6 `EfficientMPRT` (tested equal): the model is randomised as Quantus does
it (every module with `reset_parameters`, in registration order, each reset after
`torch.manual_seed(--seed + 1)`), the map recomputed through its method by the intact
and the randomised model, and the value is the relative rise of the maps' discrete
entropy (histogram of 100 equal bins over each map's range): (H(random) − H(intact)) /
H(intact). Quantus picks the bin count from the whole batch; here it is fixed at 100
(Quantus's default when given), so one record's value does not depend on the others.
"""

from __future__ import annotations

import numpy as np

from xaicli.metrics.registry import UP, Metric, declare

BINS = 100


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


def run(ctx, group: list) -> list[dict]:
    from xaicli.explain.randomization import recompute_function

    out = [{"efficient_mprt": None} for _ in group]
    for i, mt in enumerate(group):
        if ctx.problem(mt, "efficient_mprt", constant=False) is not None:
            continue
        explain = recompute_function(mt, warn=lambda why: ctx.warn_once("efficient_mprt", why + "; null"))
        if explain is None:
            continue
        model = ctx.state.get("quantus_random")
        if model is None:
            model = ctx.state["quantus_random"] = randomised(ctx.adapter, int(ctx.options.get("seed", 0)))
        before = discrete_entropy(explain(ctx.adapter))
        if before == 0:
            ctx.warn_once("efficient_mprt", "maps recomputed constant (entropy 0) give null")
            continue
        out[i] = {"efficient_mprt": (discrete_entropy(explain(model)) - before) / before}
    return out


declare(Metric("efficient_mprt", "randomisation", ("efficient_mprt",),
               "relative rise of the map's histogram entropy (100 bins) when the model is fully randomised the "
               "way Quantus does it (every module's reset_parameters, seed --seed + 1): a map that follows the "
               "model grows noisier",
               null="map not recomputable, non-finite map, constant recomputed map", better=UP,
               reference="quantus.EfficientMPRT (n_bins=100): equal to 1e-4", default=False, run=run, order=20))
