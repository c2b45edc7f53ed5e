"""Guided IG (Kapishnikov et al. 2021): integrated gradients along a path that the gradient chooses.

From the baseline towards x, each of --guided-steps steps closes 1/n of the L1 distance
by moving first the features whose gradient is smallest in magnitude (a --guided-fraction
of them at a time), each kept within --guided-max-dist (in alpha) of the straight path;
the map accumulates (x_new − x_old) ⊙ ∇S at the step's start. Every decision is PAIR's
`saliency.core.guided_ig` (float64 path, lower quantile, exact float comparisons), here
on torch tensors. The path depends on the target, so every (target, baseline draw) is
its own path; one batched gradient pass per step serves them all. Completeness:
Σ map ≈ S(x) − S(x'), stored per target as delta.
"""

from __future__ import annotations

import math

from xaicli.errors import XaiUsageError
from xaicli.explain.attribution import AttributionMethod
from xaicli.explain.registry import Option

EPSILON = 1e-9   # PAIR's tolerance for "the L1 distance has reached this step's target"

GUIDED_STEPS = Option("guided_steps", int, 200, min=1, help="Guided IG: path steps, PAIR's default 200.")
def _unit_range(flag: str):
    def check(value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise XaiUsageError(f"{flag} {value:g}: use a number from 0 to 1")
    return check


FRACTION = Option("guided_fraction", float, 0.25, check=_unit_range("--guided-fraction"),
                  help="Guided IG: fraction of the features (smallest |gradient| first) moved at a time.")
MAX_DIST = Option("guided_max_dist", float, 0.02, check=_unit_range("--guided-max-dist"),
                  help="Guided IG: how far (in alpha, 0..1) a feature may run ahead of or lag behind the straight "
                       "path; 0 is IG on the straight line, 1 unbounded (PAIR's default 0.02).")


class GuidedIG(AttributionMethod):
    name = "guided-ig"
    aliases = ("guidedig", "guided-integrated-gradients")
    summary = "integrated gradients along a path that moves the features of smallest |gradient| first"
    reference, reference_package = "core.GuidedIG", "saliency"
    checked = "equal to 1e-4 of the map's largest value (small CNN, smp U-Net++)"
    notes = "PAIR's algorithm in float64 on torch; one path per target and baseline draw, one batched gradient " \
            "pass per step; delta = Σ map − (S(x) − S(x'))"
    options = (GUIDED_STEPS, FRACTION, MAX_DIST)
    baseline = True
    order = 85

    def compute(self, step):
        import torch

        from xaicli.explain.attribution.blur_ig import completeness

        x, base, w = step.x, step.baseline, step.weights
        n_t, n_k = int(w.shape[0]), int(base.shape[0])
        starts = base.double().repeat(n_t, 1, 1, 1)                       # row = target t, draw k
        weights = w.repeat_interleave(n_k, 0)
        attr = guided_ig(lambda pts: _gradients(step, pts, weights), x.double().expand_as(starts), starts,
                         step.options["guided_steps"], step.options["guided_fraction"],
                         step.options["guided_max_dist"])
        step.evaluated += step.options["guided_steps"] * starts.shape[0]
        maps = attr.view(n_t, n_k, *x.shape[1:]).mean(1).to(x.dtype)
        step.info.update(completeness(maps, step.scores(torch.cat([x, base]))))
        return maps


def _gradients(step, points, weights):
    """∇S at each row of `points` (R, C, H, W) float64, row r for target weights[r], as float32, chunked."""
    import torch

    grads = torch.empty(points.shape, dtype=step.x.dtype, device=points.device)
    runner = step.planner.runner(step.x, points.shape[0])

    def work(lo: int, hi: int) -> None:
        pts = points[lo:hi].to(step.x.dtype).contiguous().requires_grad_(True)
        with torch.enable_grad():
            logits = step.forward(pts)
            score = (logits * weights[lo:hi].to(logits.dtype)).sum()
        (g,) = torch.autograd.grad(score, pts)
        grads[lo:hi] = g

    runner.run(points.shape[0], work)
    return grads


def guided_ig(grad_fn, x_input, x_baseline, steps: int, fraction: float, max_dist: float):
    """PAIR's guided_ig_impl on rows of (R, ...) float64 tensors; grad_fn(points) → gradients (R, ...)."""
    import torch

    x = x_baseline.clone()
    attr = torch.zeros_like(x)
    l1_total = (x_input - x_baseline).abs().flatten(1).sum(1).tolist()
    for s in range(steps):
        grads = grad_fn(x).double()
        alpha = (s + 1.0) / steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        for r in range(x.shape[0]):
            if l1_total[r] != 0:
                _step(x[r], attr[r], x_input[r], x_baseline[r], grads[r], lo, hi,
                      l1_total[r] * (1 - (s + 1) / steps), fraction)
    return attr


def _step(x, attr, x_input, x_baseline, grad_actual, alpha_min, alpha_max, l1_target, fraction):
    """One step of one path, in place on x and attr (PAIR's inner loop, decision for decision)."""
    import torch

    diff = x_input - x_baseline
    x_min, x_max = x_baseline + diff * alpha_min, x_baseline + diff * alpha_max
    grad = grad_actual.clone()
    k = int(math.floor((grad.numel() - 1) * fraction))              # numpy's quantile(method="lower") index
    gamma = math.inf
    while gamma > 1.0:
        x_old = x.clone()
        x_alpha = torch.where(diff != 0, (x - x_baseline) / torch.where(diff != 0, diff, 1), alpha_max)
        behind = x_alpha < alpha_min
        x[behind] = x_min[behind]
        l1_current = float((x - x_input).abs().sum())
        if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
            attr += (x - x_old) * grad_actual
            break
        grad[x == x_max] = math.inf
        magnitude = grad.abs()
        threshold = magnitude.flatten().kthvalue(k + 1).values
        chosen = (magnitude <= threshold) & (grad != math.inf)
        l1_s = float(((x - x_max).abs() * chosen).sum())
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else math.inf
        if gamma > 1.0:
            x[chosen] = x_max[chosen]
        else:
            x[chosen] = (x + (x_max - x) * gamma)[chosen]
        attr += (x - x_old) * grad_actual
