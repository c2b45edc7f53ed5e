"""ROAD (Rong et al. 2022): remove pixels by noisy linear imputation, most or least relevant first.

As grad-cam's `ROADMostRelevantFirst(p)` / `ROADLeastRelevantFirst(p)`: at percentile p
the (100 − p) % of the pixels whose map value is at or above the map's p-th percentile
(MoRF), or at or below its (100 − p)-th (LeRF), are replaced by the solution of the
linear system that makes each one the weighted mean of its 8 neighbours (1/6 for edge,
1/12 for corner neighbours), plus Gaussian noise of σ = 0.01 in the model's standardised
units (the values it sees after (x − mean)/std). `road_morf` and `road_lerf` are the mean
over `--road-percentiles` of S(imputed) − S(x); `road_combined` = (lerf − morf)/2, as
grad-cam's `ROADCombined`: a faithful map loses much when its top pixels go (morf very
negative) and little when its bottom ones go (lerf near 0).

The system is built with vectorised COO indices (grad-cam fills a LIL matrix entry by
entry, and importing grad-cam costs seconds): the same equations, tested equal.
"""

from __future__ import annotations

import numpy as np

from xaicli.explain.evaluation import index_of
from xaicli.metrics.registry import DOWN, UP, Metric, declare

KEYS = ("road_morf", "road_lerf", "road_combined")
DEFAULT_PERCENTILES = tuple(range(10, 100, 10))
NOISE = 0.01
# (row, column) offset of a neighbour and its weight: Rong et al.'s (and grad-cam's) choice
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def linear_imputation(img: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(C, n) values of the n missing pixels (row-major order) of img (C, H, W) that make each
    the neighbour-weighted mean of its neighbours inside the image (a sparse solve)."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = img.shape
    flat_missing = missing.ravel()
    idx = np.flatnonzero(flat_missing)
    n = idx.size
    var = np.full(h * w, -1, dtype=np.int64)
    var[idx] = np.arange(n)
    flat = img.reshape(c, -1)
    r, col = idx // w, idx % w
    diag = np.ones(n)
    rows, cols, vals = [], [], []
    b = np.zeros((n, c))
    for (dr, dc), weight in NEIGHBOURS:
        rr, cc = r + dr, col + dc
        valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        diag[~valid] -= weight
        eq = np.flatnonzero(valid)
        nb = (rr * w + cc)[valid]
        known = ~flat_missing[nb]
        b[eq[known]] -= weight * flat[:, nb[known]].T
        rows.append(eq[~known])
        cols.append(var[nb[~known]])
        vals.append(np.full(int((~known).sum()), weight))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-diag)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return np.asarray(spsolve(a, b)).reshape(n, c).T


def removal_masks(smap: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels imputed at percentile p: MoRF (at or above the p-th percentile) and LeRF (grad-cam's
    `1 − map` ranking, so ties and float32 rounding fall as they do there)."""
    m = np.asarray(smap, dtype=np.float32)
    morf = ~(m < np.percentile(m, p))
    inv = np.float32(1) - m
    lerf = ~(inv < np.percentile(inv, p))
    return morf, lerf


def imputed(ctx, z, missing: np.ndarray, seed: int):
    """The standardised image z (C, H, W) with the `missing` pixels imputed, noise drawn from `seed`."""
    import torch

    c = z.shape[0]
    values = torch.tensor(linear_imputation(z.double().cpu().numpy(), missing), dtype=torch.float32)
    noise = torch.randn((c, values.shape[1]), generator=torch.Generator().manual_seed(seed))
    out = z.reshape(c, -1).clone()
    out[:, torch.from_numpy(np.flatnonzero(missing.ravel())).to(z.device)] = (values + NOISE * noise).to(z.device)
    return out.reshape_as(z)


def run(ctx, group: list) -> list[dict]:
    import torch

    percentiles = ctx.options.get("road_percentiles") or DEFAULT_PERCENTILES
    out = [dict.fromkeys(KEYS) for _ in group]
    unit = ctx.unit
    mean = torch.tensor(ctx.adapter.preprocessing.mean, dtype=unit.dtype, device=unit.device).view(-1, 1, 1)
    std = torch.tensor(ctx.adapter.preprocessing.std, dtype=unit.dtype, device=unit.device).view(-1, 1, 1)
    z = (unit[0] - mean) / std
    live, batch = [], [unit[0]]
    for i, mt in enumerate(group):
        if ctx.problem(mt, "road") is not None:
            continue
        live.append(i)
        for p in percentiles:
            for order, missing in zip(("morf", "lerf"), removal_masks(mt.smap, p)):
                batch.append(imputed(ctx, z, missing, ctx.seed(mt, f"road/{order}/{p:g}")) * std + mean)
    if not live:
        return out
    s = ctx.scores(torch.stack(batch), index_of(group[0]), group[0].pred_mask)
    base, k = s[0], len(percentiles)
    for j, i in enumerate(live):
        diffs = (s[1 + 2 * k * j:1 + 2 * k * (j + 1)] - base).reshape(k, 2)
        morf, lerf = float(diffs[:, 0].mean()), float(diffs[:, 1].mean())
        out[i] = {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}
    return out


def parse_percentiles(text: str | None) -> tuple[float, ...]:
    """`--road-percentiles 10,20,...`: numbers in (0, 100), each once; a usage error names the fix."""
    from xaicli.errors import XaiUsageError

    if text is None:
        return DEFAULT_PERCENTILES
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0 < v < 100 for v in values) or len(set(values)) != len(values):
        raise XaiUsageError(f"--road-percentiles {text!r}: give distinct numbers between 0 and 100, "
                            "comma-separated, e.g. 10,20,30,40,50,60,70,80,90")
    return values


declare(Metric("road", "faithfulness", KEYS,
               "ROAD: mean over `--road-percentiles` p of S(x with (100−p)% of the pixels imputed) − S(x), most "
               "relevant removed first (`road_morf`) or least relevant first (`road_lerf`); noisy linear "
               "imputation (σ = 0.01 standardised, seeded); `road_combined` = (lerf − morf)/2",
               null="constant or non-finite map, empty predicted region (segmenter)", better=(DOWN, UP, UP),
               reference="pytorch_grad_cam.metrics.road.ROADMostRelevantFirst / ROADLeastRelevantFirst / "
                         "ROADCombined: equal to 1e-4 (same noise); the imputation also equals quantus's "
                         "noisy_linear_imputation", default=False, run=run, order=20))
