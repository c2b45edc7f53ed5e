"""Adaptive quadrature of IG's path integral, with an estimate of the map's own error.

IG's integrand along the path, g(α) = ∂S/∂x(x' + α(x − x')) ⊙ (x − x'), is piecewise
constant on ReLU networks (every unit that flips is a jump), so fixed Gauss–Legendre
nodes converge only like 1/n: on the built-in segmenter at 256², 32 nodes leave the map
10% (relative L2) off a long reference and 384 are needed for 1%, while the completeness
delta is already small. The jumps crowd where the path starts (a dark image at small α),
so uniform refinement wastes most of its points.

Dyadic trapezoid refinement, nested (every evaluated point is reused): the path is cut
into intervals, each holding its endpoints and midpoint; T2 is an interval's two-panel
trapezoid and T2 − T1 (T1 the one-panel trapezoid) how much halving it changed. The first
cut is 4 intervals (9 points); each round halves the intervals whose estimated error is
largest, at least 4 (so the second round is the 8-interval cut, 17 points) and a quarter of
them once there are more. The estimated error of the map is ‖Σ e‖ / ‖Σ v‖ over the current
intervals, v an interval's value and e the estimate of its error, element by element:
- where the change is at most SMOOTH of the dyadic parent interval's (a smooth integrand's
  shrinks to 1/8 per halving, T2 − T1 ∝ h³; a jump inside keeps 1/2), v is Simpson's,
  T2 + (T2 − T1)/3, and e the rest of the geometric series of changes that further halvings
  would add, (T2 − T1)·2r/(1 − 2r) for the ratio r, at least (T2 − T1)/3 (Richardson's error
  of T2 itself, which is more than Simpson's: e does not credit Simpson's higher order);
- elsewhere v = T2 and e = T2 − T1, how far the latest halving moved it.
Measured against 2048-point references by bench/check_ig_accuracy.py. On ReLU networks nearly
every element is jump or constant, and this is nearly the plain trapezoid (same points on 11 of
12 maps); on the tiny GELU ConvNeXt and ViT Simpson's value leaves the 9-point maps 1.2–7×
closer from black and 2–200× from blur (the trapezoid alone: 0.001–0.25% off), and its sum
lowers |delta| (a ViT map from blur stopped at 9 points, not 17). Simpson on every interval
was tried and dropped: its error is 1.15× the trapezoid's (rms) on a jump, and its own
estimate fell to half the measured error on ReLU networks.
A first cut of 4, not 8, intervals: smooth integrands meet 1% at 9 points, and on ReLU networks
the second round is the former first cut, so their points did not change.

`attribute` is the engine's adaptive mode: every job's targets stop when the estimate is
≤ `accuracy` and |delta| ≤ `tolerance`·|S(x) − S(x')|, or at `max_steps` points. The g(α)
of all points are kept until the map is done: points × targets × image, on a CUDA device where
`max_steps` of them fit in STORE_FRACTION of its free memory, else on the CPU, and in the model's
dtype: a float32 model's g are float32 already, and the running sums' rounding (~1e-7 of a map
per update, a few hundred updates) stays far below the 1% the estimate is for; float64 took twice
the memory and time. The bookkeeping is a dozen element-wise passes over a map per point, bound
by memory, and on the CPU it rivals a GPU's own work (bench/check_ig_bookkeeping.py, one core of
this 2-core machine): 2.8 ms per point at 256² RGB and 22 ms at 640² in float32 (5.1 and 48 ms in
float64), where an H200 takes about 21 ms per sample for U-Net++ efficientnet-b5's forward and
backward at 640²; on the device it needs no copy to the host either.

A delta that points cannot lower stops early too: where the map's estimate is met and the
last halvings moved the map's sum by ≤ `tolerance`/STILL of the gap while |delta| is still
above `tolerance`, the rest of the delta lies in S(x) − S(x') itself, not in the quadrature:
a target the model scores almost alike on image and baseline (tiny random ViT from a blur
baseline: S(x) − S(x') = 1.5e-6 against float32 rounding of ~2e-8 in the scores; delta
stuck at 1.5% from 17 to 2048 points, so it ran to the 512-point cap for nothing). Such a
target is `still`: not converged, and its warning says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from xaicli.explain.quadrature import ADAPTIVE_START as START

STILL = 10    # the sum moves by ≤ tolerance/STILL of the gap: its delta is not quadrature error
REFINE_LEAST = 4   # intervals halved per round at least: the second round is the 8-interval cut, 17 points
STORE_FRACTION = 0.25   # of a CUDA device's free memory the kept g(α) may take (the chunks plan with 0.6)
SMOOTH = 0.25      # an interval's change ≤ this × its parent's: smooth there (1/8 expected), Simpson's value


@dataclass
class AdaptivePath:
    """The intervals of one path integral over [0, 1] and g at the points evaluated so far.

    `values[α]` is g(α) for every target, (T, ...). Sums of v, T2 − T1 and e over the current
    intervals are kept running, so no round stacks every interval. A `frozen` target keeps
    the estimate and error it had when it stopped; later points do not change them.
    """

    targets: int
    store: torch.device = torch.device("cpu")      # where the g(α) and the sums live
    dtype: torch.dtype = torch.float64             # and in what: the model's (float32 for float32 models)
    values: dict[float, torch.Tensor] = field(default_factory=dict)
    intervals: dict[tuple[float, float], torch.Tensor] = field(default_factory=dict)  # (a, b) → ‖e‖ per target
    pending: list[tuple[float, float]] = field(default_factory=list)
    still: set[int] = field(default_factory=set)    # targets stopped because points no longer move the sum
    frozen: dict[int, tuple[torch.Tensor, float, int]] = field(default_factory=dict)
    _value: torch.Tensor | None = None
    _change: torch.Tensor | None = None
    _error: torch.Tensor | None = None

    def __post_init__(self):
        edges = [i / START for i in range(START + 1)]
        self.pending = list(zip(edges[:-1], edges[1:]))

    def wanted(self) -> list[float]:
        """The α still to evaluate for the pending intervals (endpoints and midpoints), sorted."""
        return sorted({p for a, b in self.pending for p in (a, (a + b) / 2, b) if p not in self.values})

    def add(self, alphas, maps: torch.Tensor) -> None:
        """g at `alphas`: maps (len(alphas), T, ...)."""
        for i, a in enumerate(alphas):
            self.values[float(a)] = maps[i].detach().to(self.store, self.dtype)
        ready = [iv for iv in self.pending if all(p in self.values for p in (iv[0], (iv[0] + iv[1]) / 2, iv[1]))]
        self.pending = [iv for iv in self.pending if iv not in ready]
        for a, b in ready:
            value, change, error = self._panels(a, b)
            self._value = value if self._value is None else self._value + value
            self._change = change if self._change is None else self._change + change
            self._error = error if self._error is None else self._error + error
            self.intervals[(a, b)] = _norms(error)

    def _panels(self, a: float, b: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(v, T2 − T1, e) of the interval, element by element as the module's docstring says."""
        ga, gm, gb = self.values[a], self.values[(a + b) / 2], self.values[b]
        ends = ga + gb                          # T1 = (b − a)/2·ends, T2 = (b − a)/4·(ends + 2·gm)
        change = torch.add(ends, gm, alpha=-2).mul_((a - b) / 4)        # T2 − T1 = (b − a)/4·(2·gm − ends)
        value = ends.add_(gm, alpha=2).mul_((b - a) / 4)
        size = change.abs()
        scale = self._parent_change(a, b).abs_()
        value.addcmul_(change, (size * (1 / SMOOTH) <= scale).to(size.dtype), value=1 / 3)
        # e's share of the change: 2r/(1 − 2r) for r = size/scale = 2·size/(scale − 2·size), held to
        # [1/3, 1] (1 for every r ≥ SMOOTH, 0/0 included), so no mask and no r is formed: a bool mask
        # in addcmul_, masked_fill_ or where costs 6× an add here (1.4 ms at 256² RGB, float64)
        rest = scale.sub_(size, alpha=2).clamp_(min=torch.finfo(size.dtype).tiny)
        share = size.mul_(2).div_(rest).clamp_(1 / 3, 1)
        return value, change, share.mul_(change)

    def _parent_change(self, a: float, b: float) -> torch.Tensor:
        """T2 − T1 of the dyadic interval twice as wide that holds [a, b]: its points are all evaluated
        (the first cut holds every quarter, and a halved interval keeps its ends)."""
        h = b - a
        lo, hi = (a, b + h) if round(a / h) % 2 == 0 else (a - h, b)
        mid = (lo + hi) / 2
        return torch.add(self.values[lo] + self.values[hi], self.values[mid], alpha=-2).mul_(-h / 2)

    def estimate(self) -> torch.Tensor:
        """(T, ...): Σ v over the intervals; a frozen target keeps its value at the stop."""
        total = self._value.clone()
        for t, (kept, _, _) in self.frozen.items():
            total[t] = kept
        return total

    def sum_change(self) -> np.ndarray:
        """(T,) |Σ(T2 − T1)| summed over the map: how far the last halvings moved the map's sum."""
        return self._change.flatten(1).sum(1).abs().cpu().numpy()

    def error(self) -> torch.Tensor:
        """(T,) estimated relative L2 error of `estimate()` per target (on the CPU): ‖Σ e‖ / ‖Σ v‖."""
        err = (_norms(self._error) / _norms(self._value).clamp_min(torch.finfo(torch.float64).tiny)).cpu()
        for t, (_, e, _) in self.frozen.items():
            err[t] = e
        return err

    def freeze(self, target: int) -> None:
        if target not in self.frozen:
            self.frozen[target] = (self._value[target].clone(), float(self.error()[target]), self.points)

    def steps(self, target: int) -> int:
        """Points the target's estimate used."""
        return self.frozen[target][2] if target in self.frozen else self.points

    def refine(self, count: int, active: np.ndarray | None = None) -> None:
        """Halve the `count` intervals whose estimated error is largest relative to each active target's map."""
        if not self.intervals:
            return
        keys = list(self.intervals)
        sizes = torch.stack([self.intervals[k] for k in keys]) / _norms(self._value).clamp_min(1e-300)   # (I, T)
        if active is not None:
            sizes = sizes[:, torch.as_tensor(active, dtype=torch.bool, device=sizes.device)]
        for i in torch.argsort(sizes.max(1).values, descending=True)[:max(1, count)].tolist():
            a, b = keys[i]
            value, change, error = self._panels(a, b)
            self._value -= value
            self._change -= change
            self._error -= error
            del self.intervals[(a, b)]
            m = (a + b) / 2
            self.pending += [(a, m), (m, b)]

    @property
    def points(self) -> int:
        return len(self.values)


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).double().norm(dim=1)


def attribute(forward: Callable, jobs: Sequence, weights: torch.Tensor, *, tolerance: float, accuracy: float,
              max_steps: int, planner) -> list:
    """Integral jobs by adaptive refinement, in shared chunked passes (integrated_gradients.attribute's
    contract; `weights` is (J, T, K[, h, w]), one row per job). Each round evaluates, for every job
    with an unfinished target, the points its refinement asks for: one engine row per (point, path)."""
    from xaicli.explain.integrated_gradients import (JobResult, _accumulate, _endpoint_scores, _floats, _rows,
                                                     relative_delta)

    n_j, n_t = weights.shape[:2]
    sample = jobs[0].ends[:1]
    f_start, f_end = _endpoint_scores(forward, jobs, weights, planner)
    gap = f_end - f_start
    dtype = torch.promote_types(sample.dtype, torch.float32)
    store = store_device(sample.device, sample[0].numel() * dtype.itemsize, len(jobs) * n_t, max_steps)
    paths = [AdaptivePath(n_t, store, dtype) for _ in jobs]
    active = np.ones((n_j, n_t), dtype=bool)
    evaluated = np.zeros(n_j, dtype=np.int64)
    bs_used = None
    while active.any():
        owner, nodes, asked = [], [], {}
        for j in np.flatnonzero(active.any(1)):
            asked[j] = paths[j].wanted()
            owner += [j] * len(asked[j])
            nodes += [(np.array([a]), np.ones(1)) for a in asked[j]]
        pseudo = [jobs[j] for j in owner]              # one engine job per (job, point): g(α), not a sum
        runner = planner.runner(sample, sum(job.paths for job in pseudo))
        rows = _rows(pseudo, active[owner], nodes)
        g = _accumulate(forward, pseudo, weights, rows, active[owner], runner, weight_row=owner)
        bs_used = runner.chosen
        first = 0
        for j, alphas in asked.items():
            paths[j].add(alphas, g[first:first + len(alphas)])
            evaluated[j] += len(alphas) * jobs[j].paths
            first += len(alphas)
            _settle(paths[j], active[j], gap[j], tolerance, accuracy, max_steps)
    results = []
    for j, job in enumerate(jobs):
        path = paths[j]
        est = path.estimate()
        err = path.error().numpy()
        delta = est.flatten(1).sum(1).cpu().numpy() - gap[j]
        rel = relative_delta(delta, gap[j])
        conv = [bool(e <= accuracy and abs(d) <= tolerance * abs(s)) for e, d, s in zip(err, delta, gap[j])]
        res = JobResult(job.name, est.to(sample.device, sample.dtype), [path.steps(t) for t in range(n_t)],
                        _floats(delta), _floats(rel), _floats(f_end[j]), _floats(f_start[j]), conv,
                        steps_evaluated=int(evaluated[j]), batch_size=bs_used)
        res.info["estimated_error"] = _floats(err)
        res.info["still"] = sorted(path.still)
        results.append(res)
    return results


def store_device(device: torch.device, map_bytes: int, maps: int, max_steps: int) -> torch.device:
    """Where the g(α) are kept: the CUDA `device` where `max_steps` points of `maps` maps of `map_bytes`
    each fit in STORE_FRACTION of its free memory, else the CPU (the only other device whose free memory
    is known)."""
    from xaicli.models.device import free_memory_bytes

    if device.type != "cuda":
        return torch.device("cpu")
    need = max_steps * maps * map_bytes
    return device if need <= STORE_FRACTION * (free_memory_bytes(device) or 0) else torch.device("cpu")


def _settle(path: AdaptivePath, active: np.ndarray, gap: np.ndarray, tolerance: float, accuracy: float,
            max_steps: int) -> None:
    """Freeze the targets that are done, stop all at the cap, else ask for the next points."""
    if path.pending:
        return
    est, err = path.estimate(), path.error()
    sums = est.flatten(1).sum(1).cpu().numpy()
    moves = path.sum_change()
    for t in np.flatnonzero(active):
        if err[t] > accuracy:
            continue
        if abs(sums[t] - gap[t]) <= tolerance * abs(gap[t]):
            path.freeze(int(t))
            active[t] = False
        elif moves[t] <= tolerance * abs(gap[t]) / STILL:
            path.freeze(int(t))
            path.still.add(int(t))
            active[t] = False
    if not active.any():
        return
    room = (max_steps - path.points) // 2          # each halving adds two points
    if room <= 0:
        active[:] = False
        return
    path.refine(min(room, max(REFINE_LEAST, len(path.intervals) // 4)), active)


def attribute_jobs(forward, jobs, weights, *, tolerance, accuracy, max_steps, batch_size, planner) -> list:
    """integrated_gradients.attribute's adaptive mode: integral jobs through `attribute`, the others (one
    point each) through the fixed engine."""
    from xaicli.explain.chunking import BatchPlanner
    from xaicli.explain.integrated_gradients import attribute as fixed
    from xaicli.explain.integrated_gradients import job_weights

    jobs = list(jobs)
    if not jobs:
        return []
    sample = jobs[0].ends[:1]
    planner = planner or BatchPlanner(sample.device, batch_size)
    integral = [j for j, job in enumerate(jobs) if job.integral]
    rest = [j for j, job in enumerate(jobs) if not job.integral]
    out: list = [None] * len(jobs)
    if integral:
        picked = [jobs[j] for j in integral]
        done = attribute(forward, picked, job_weights(picked, weights, sample), tolerance=tolerance,
                         accuracy=accuracy, max_steps=max_steps, planner=planner)
        for j, res in zip(integral, done):
            out[j] = res
    if rest:
        for j, res in zip(rest, fixed(forward, [jobs[j] for j in rest], weights, steps=1, planner=planner)):
            out[j] = res
    return out
