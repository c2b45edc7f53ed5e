"""The attribution engine's front: the registered methods' jobs → one batched call → maps with meta.

`explain` is what `xai attribute` runs per image and what `stats --randomize` runs to
redo a map (`redo`), so a registered method gets both from its declaration alone:
jobs come from `method.job`, one per baseline where the method takes one; every job of
the image shares the chunked passes of `integrated_gradients.attribute`; each map is
stored as float32 (T, C, H, W) under attr/<key>/<baseline or none> with the engine's
figures (steps, delta, ...), the baseline's and the method's options in its meta.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xaicli.explain import registry

log = logging.getLogger("xai")
DELTA_WARN = 0.05    # relative convergence delta above which a fixed-steps run warns


@dataclass
class AttributionMap:
    key: str
    values: np.ndarray            # (T, C, H, W) float32 at the image size
    info: dict[str, Any]


def explain(adapter, image: np.ndarray, targets: Sequence, methods: Sequence, baselines: Sequence,
            options: dict[str, Any], *, key: str, planner=None, cache: dict | None = None,
            warn: bool = True) -> list[AttributionMap]:
    """One map per method (x baseline, for methods that take one) of `image` for `targets`.

    `options` are the settled engine and method options (attribution.settle); `key` (the
    record id) seeds random draws; `cache` keeps per-input-size facts between images.
    """
    import torch

    from xaicli.errors import XaiError
    from xaicli.explain.chunking import BatchPlanner
    from xaicli.explain.integrated_gradients import attribute as run_jobs

    cache = {} if cache is None else cache
    hw = tuple(image.shape[:2])
    unit = adapter.image_to_unit(image).contiguous()

    def forward(x):
        return adapter.forward(adapter.normalize(x))

    out_hw = _output_hw(adapter, unit, forward, cache) if adapter.task == "segmentation" else None
    weights = torch.stack([t.weight(adapter.num_classes, out_hw, hw, adapter.device) for t in targets])
    planner = planner or BatchPlanner(adapter.device, None)
    planned = _plan(key, unit, adapter, methods, baselines, options)
    jobs = [job for _, _, _, job, _ in planned if job is not None]
    t0 = time.perf_counter()
    try:
        results = iter(run_jobs(forward, jobs, weights, steps=options["steps"], quadrature=options["quadrature"],
                                tolerance=options["tolerance"], max_steps=options["max_steps"], planner=planner,
                                accuracy=options["accuracy"]))
    except ValueError as exc:
        raise XaiError(f"{key}: {exc}") from None
    seconds = time.perf_counter() - t0
    out = []
    for m, bname, base, job, extra in planned:
        if job is None:        # a method that computes its own map (perturbation, its own backward rules)
            t1 = time.perf_counter()
            step = AttributionStep(adapter, unit, base, options, key, weights, forward, planner)
            res = step.result(m.key, m.compute(step))
            extra, took = {**extra, **step.info}, time.perf_counter() - t1
        else:
            res, took = next(results), seconds
        if warn:
            _warn(key, m, bname, res, options)
        out.append(AttributionMap(f"attr/{m.key}/{bname}",
                                  res.attributions.detach().float().cpu().numpy().astype(np.float32),
                                  _info(m, bname, extra, res, targets, options, took)))
    return out


@dataclass
class AttributionStep:
    """What a method that computes its own map gets: the unit image x (1, C, H, W), its
    baseline (K, C, H, W) or None, the options, the record key, the targets' logit
    weights (T, K[, h, w]), the model as `forward` (unit images → logits) and `scores`,
    a batched, chunked no-grad forward for perturbation methods."""

    adapter: Any
    x: Any
    baseline: Any
    options: dict[str, Any]
    key: str
    weights: Any
    forward: Any
    planner: Any
    evaluated: int = 0                 # images pushed through the model
    info: dict = field(default_factory=dict)   # the method's figures for the map's meta

    def scores(self, batch):
        """(n, T) target scores S_t = Σ W_t·logits of the unit images `batch` (n, C, H, W), in chunks."""
        import torch

        from xaicli.explain.integrated_gradients import target_scores

        parts: list = []
        runner = self.planner.runner(batch[:1], batch.shape[0], grad=False)
        with torch.no_grad():
            runner.run(batch.shape[0], lambda lo, hi: parts.append(
                target_scores(self.forward(batch[lo:hi].contiguous()), self.weights)))
        self.evaluated += int(batch.shape[0])
        return torch.cat(parts)

    def result(self, name: str, attributions):
        from xaicli.explain.integrated_gradients import JobResult

        none = [None] * int(self.weights.shape[0])
        return JobResult(name, attributions, none, none, none, none, none, none, steps_evaluated=self.evaluated)


def _plan(key, unit, adapter, methods, baselines, options):
    """(method, baseline name, baseline, engine job or None, meta) per map: one per method x baseline, or one."""
    from xaicli.explain.baselines import default_blur_sigma, make_baselines

    planned = []
    for m in methods:
        if not m.baseline:
            planned.append((m, "none", None, m.job(unit, None, options, key), {"baseline": None, **m.meta(options)}))
            continue
        for b in baselines:
            base = make_baselines(b, unit, mean=adapter.preprocessing.mean,
                                  samples=options["baseline_samples"] if b.random else 1, seed=options["seed"],
                                  key=key, blur_sigma=options["blur_sigma"], noise_std=options["noise_std"],
                                  to_unit=adapter.image_to_unit)
            extra = {**b.to_meta(), "baseline_samples": int(base.shape[0])}
            if b.random:
                extra["seed"] = options["seed"]
            if b.kind == "noise":
                extra["noise_std"] = options["noise_std"]
            if b.kind == "blur":
                sigma = options["blur_sigma"]
                extra["blur_sigma"] = sigma if sigma is not None else default_blur_sigma(unit.shape[-2:])
            job = m.job(unit, base, options, key)
            extra.update(m.meta(options))
            planned.append((m, b.name, base, job, extra))
    return planned


def _info(m, bname, extra, res, targets, options, seconds) -> dict[str, Any]:
    integral = m.integral
    tolerance = options["tolerance"]
    return {"kind": "attribution", "method": m.key, "baseline": bname if integral else None, "layer": None,
            "targets": [t.to_meta() for t in targets],
            "steps": max(s for s in res.steps if s is not None) if integral else None,
            "target_steps": res.steps if integral else None,
            "quadrature": options["quadrature"] if integral else None,
            "delta": res.delta, "relative_delta": res.relative_delta,
            "f_x": res.f_x, "f_baseline": res.f_baseline,
            "tolerance": tolerance if integral else None,
            "converged": res.converged if integral and tolerance is not None else None,
            **_adaptive_info(res, options, integral),
            "score": "sum of target weights x logits", "space": "image pixels in [0, 1] at image size",
            "steps_evaluated": res.steps_evaluated, "batch_size": res.batch_size,
            "seconds": round(seconds, 4), **extra}


def _adaptive_info(res, options, integral: bool) -> dict[str, Any]:
    """The adaptive quadrature's figures: its bound and each target's estimated map error."""
    if not integral or options["quadrature"] != "adaptive":
        return {"accuracy": None, "estimated_error": None}
    return {"accuracy": options["accuracy"], "estimated_error": res.info.get("estimated_error")}


def _warn(key, m, bname, res, options) -> None:
    """A path integral far from complete: say so, and how to fix it."""
    if not m.integral:
        return
    tolerance, steps = options["tolerance"], options["steps"]
    worst = max((r for r in res.relative_delta if r is not None), default=0.0)
    if tolerance is None and worst > DELTA_WARN:
        log.warning("%s: %s/%s relative delta %.3g with %d steps; the map may be inaccurate: raise --steps "
                    "or omit --steps to let --tolerance 0.01 choose them", key, m.key, bname, worst, steps)
    still = res.info.get("still") or []
    for t in still:
        log.warning("%s: %s/%s target %d: relative delta %.3g is not quadrature error: more points no longer move "
                    "the map's sum (estimated error %.3g), and S(x) - S(x') = %.3g is near the scores' float32 "
                    "rounding; the baseline scores almost like the image", key, m.key, bname, t,
                    res.relative_delta[t], res.info["estimated_error"][t], res.f_x[t] - res.f_baseline[t])
    if tolerance is not None and not all(c or t in still for t, c in enumerate(res.converged)):
        log.warning("%s: %s/%s did not reach --tolerance %g%s within --max-steps %d (relative delta %s%s)",
                    key, m.key, bname, tolerance,
                    f" and --accuracy {options['accuracy']:g}" if "estimated_error" in res.info else "",
                    options["max_steps"], ", ".join("-" if r is None else f"{r:.3g}" for r in res.relative_delta),
                    "; estimated error " + ", ".join("-" if e is None else f"{e:.3g}"
                                                     for e in res.info["estimated_error"])
                    if "estimated_error" in res.info else "")


def _output_hw(adapter, unit, forward, cache: dict):
    """Spatial size of the segmentation logits for this input (one no-grad forward, cached per input size)."""
    import torch

    size = tuple(adapter.input_size(tuple(unit.shape[-2:])))
    if size not in cache:
        with torch.no_grad():
            cache[size] = tuple(forward(unit).shape[-2:])
    return cache[size]


# -- redoing a stored map (stats --randomize) --------------------------------------

def redo_problem(method, info: dict[str, Any]) -> str | None:
    """Why the map `info` describes cannot be redone (None: it can)."""
    if method.baseline and stored_baseline(info) is None:
        return f"baseline {info.get('baseline')!r} cannot be rebuilt"
    return None


def redo(adapter, image: np.ndarray, target, method, info: dict[str, Any], key: str) -> np.ndarray:
    """The map `info` describes, recomputed with `adapter` for one target: (C, H, W) float32.

    The options come from the map's meta (what is missing: the declared defaults), with
    the steps the map used, fixed (no tolerance; an adaptive map is redone with that many
    Gauss–Legendre nodes, so every randomised model costs the same)."""
    from xaicli.explain.attribution import settle

    options = registry.option_defaults("attribution")
    options.update({name: info[name] for name in options if info.get(name) is not None})
    options.update(baseline=None, tolerance=None)
    if options.get("quadrature") == "adaptive":
        options["quadrature"] = "gausslegendre"
    baselines = [stored_baseline(info)] if method.baseline else []
    maps = explain(adapter, image, [target], [method], baselines, settle(options), key=key, warn=False)
    return maps[0].values[0]


def stored_baseline(info: dict[str, Any]):
    """The Baseline a map's meta names (None: a file that is gone, or unreadable)."""
    from xaicli.errors import XaiError
    from xaicli.explain.baselines import parse_baseline

    spec = info.get("baseline_path") if info.get("baseline") == "file" else (info.get("baseline") or "black")
    try:
        return parse_baseline(spec) if spec else None
    except XaiError:
        return None
