"""`xai attribute`: Integrated Gradients (and saliency, input×gradient, SmoothGrad) into records."""

from __future__ import annotations

import math
import time
from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli import options as opt

METHODS = {
    "integrated-gradients": "integrated_gradients", "ig": "integrated_gradients",
    "integrated_gradients": "integrated_gradients",
    "saliency": "saliency", "input-x-gradient": "input_x_gradient", "input_x_gradient": "input_x_gradient",
    "inputxgradient": "input_x_gradient",
    "smoothgrad": "smoothgrad", "smoothgrad-ig": "smoothgrad_ig", "smoothgrad_ig": "smoothgrad_ig",
}
USES_BASELINE = ("integrated_gradients", "smoothgrad_ig")
METHOD_CHOICES = ["integrated-gradients", "saliency", "input-x-gradient", "smoothgrad", "smoothgrad-ig"]
BASELINE_CHOICES = ["black", "zero", "white", "mean", "blur", "noise", "uniform"]
DELTA_WARN = 0.05    # relative convergence delta above which a fixed-steps run warns
QUADRATURES = ["gausslegendre", "riemann-left", "riemann-right", "riemann-middle", "riemann-trapezoid"]
FIRST_TRY = 16       # --steps default with --tolerance (capped at --max-steps)
MIN_BLUR_SIGMA = 1 / 6   # below, the blur's radius round(3 sigma) is 0: the baseline is the image, every map 0

HELP = """Integrated Gradients and gradient maps for images or records.

Reads images (the prediction is made here) or records (e.g. from xai predict, whose
prediction is reused; a record made with another model is an error), and writes
records with one map per method and baseline under attr/<method>/<baseline>:
float32 (targets, channels, H, W) at the image's own size, raw values.

IG is taken with respect to the image's pixels scaled to [0, 1], with resizing and
normalisation inside the model function, so maps need no resizing and the
completeness check (sum of the map = S(x) - S(x')) holds for the image as shown.
Each target's convergence delta is stored; --tolerance raises the steps until it is
small enough. All targets, baselines and methods share batched forward/backward
passes.

\b
  xai attribute -m builtin:shapes-cls imgs/ --target top3 > attr.tar
  xai predict -m builtin:shapes-seg scans/ | xai attribute --baseline black --baseline blur
  xai attribute -m model/ scan.png --tolerance 0.01 --target-mask gt.png -o out/
"""


def attribute(
    inputs: opt.Inputs = None,
    model: opt.Model = None,
    method: Annotated[Optional[List[str]], typer.Option(
        "--method", "-M", help="integrated-gradients (default; alias ig), saliency (|gradient|), input-x-gradient, "
                               "smoothgrad (mean gradient over noisy copies) or smoothgrad-ig (mean IG over noisy "
                               "copies). Repeatable: one record gets every map.",
        autocompletion=lambda: METHOD_CHOICES, show_default=False)] = None,
    baseline: Annotated[Optional[List[str]], typer.Option(
        "--baseline", "-B", help="IG baseline: black (zeros before normalisation, default), zero (zeros after "
                                 "normalisation), white, mean (per-channel mean colour), blur (Gaussian blur of the "
                                 "image), noise (image + seeded Gaussian noise), uniform (seeded uniform pixels), or "
                                 "an image / .npy file of the image's size (uint8, uint16 or floats in [0, 1]). "
                                 "Repeatable: one map each (files sharing a stem get a path hash in the key).",
        autocompletion=lambda: BASELINE_CHOICES, show_default=False)] = None,
    baseline_samples: Annotated[int, typer.Option(
        "--baseline-samples", min=1, help="Random baselines (noise, uniform): average IG over this many draws.")] = 1,
    blur_sigma: Annotated[Optional[float], typer.Option(
        "--blur-sigma", help="Blur baseline sigma in image pixels, finite and >= 1/6 (default: 1/16 of the "
                             "shorter side).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random baselines and SmoothGrad noise (mixed "
                                                     "with the record id: reruns are identical).")] = 0,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", "-n", min=1, help="IG steps (quadrature nodes). Default 32; with --tolerance, the first try "
                                     "(default 16, or --max-steps if lower; at most --max-steps).",
        show_default=False)] = None,
    quadrature: Annotated[str, typer.Option(
        "--quadrature", help="gausslegendre, riemann-left, riemann-right, riemann-middle or riemann-trapezoid.",
        autocompletion=lambda: QUADRATURES)] = "gausslegendre",
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", min=0.0, help="Adaptive steps: double the steps per target until |delta| <= T * |S(x) - "
                                     "S(x')| or --max-steps. The steps used are stored.", show_default=False)] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Cap for --tolerance: no map gets more "
                                                                      "steps.")] = 512,
    target: opt.Targets = None,
    target_mask: opt.TargetMask = None,
    class_: opt.SegClasses = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="SmoothGrad: noisy copies.")] = 10,
    noise_std: Annotated[float, typer.Option(
        "--noise-std", min=0.0, help="SmoothGrad and the noise baseline: noise std relative to the image's value "
                                     "range (max - min).")] = 0.15,
    threshold: opt.Threshold = 0.5,
    batch_size: opt.BatchSize = None,
    arch: opt.Arch = None,
    arch_args: opt.ArchArgs = None,
    classes: opt.Classes = None,
    labels: opt.Labels = None,
    device: opt.Device = "auto",
    size: opt.Size = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    fit: opt.Fit = None,
    trust_pickle: opt.TrustPickle = False,
    output: opt.Output = None,
    no_image: opt.NoImage = False,
    max_pixels: opt.MaxPixels = 100_000_000,
    skip_existing: opt.SkipExisting = False,
    skip_unreadable: opt.SkipUnreadable = False,
    shard: opt.Shard = None,
) -> None:
    from xaicli.cli.pipeline import ModelSession, finish, iter_records, load_options, progress
    from xaicli.errors import XaiUsageError
    from xaicli.explain import quadrature as quad
    from xaicli.explain.baselines import parse_baselines
    from xaicli.io.inputs import resolve
    from xaicli.io.background import background_writes, prefetch
    from xaicli.io.outputs import open_sink

    methods = []
    for m in method or ["integrated-gradients"]:
        key = METHODS.get(m.strip().lower())
        if key is None:
            raise XaiUsageError(f"--method {m!r}: use one of {', '.join(METHOD_CHOICES)}")
        if key not in methods:
            methods.append(key)
    try:
        quadrature = quad.canonical(quadrature)
    except ValueError:
        raise XaiUsageError(f"--quadrature {quadrature!r}: use one of {', '.join(QUADRATURES)}") from None
    least = quad.min_steps(quadrature)
    if tolerance is not None and not math.isfinite(tolerance):
        raise XaiUsageError(f"--tolerance {tolerance}: every delta meets it, so nothing is checked; pass a finite "
                            "bound such as 0.01, or omit it for fixed --steps")
    if tolerance is not None and max_steps < least:
        raise XaiUsageError(f"--max-steps {max_steps}: {quadrature} needs at least {least} steps")
    if tolerance is not None and steps is not None and steps > max_steps:
        raise XaiUsageError(f"--steps {steps} exceeds --max-steps {max_steps}: with --tolerance the steps start at "
                            "--steps and double up to --max-steps; lower --steps or raise --max-steps")
    if steps is None:
        steps = min(FIRST_TRY, max_steps) if tolerance is not None else 32
    if steps < least:
        raise XaiUsageError(f"--steps {steps}: {quadrature} needs at least {least}")
    if blur_sigma is not None and not math.isfinite(blur_sigma):
        raise XaiUsageError(f"--blur-sigma {blur_sigma}: use a finite sigma in pixels, e.g. 4, or omit it for 1/16 "
                            "of the image's shorter side")
    if blur_sigma is not None and blur_sigma < MIN_BLUR_SIGMA:
        raise XaiUsageError(f"--blur-sigma {blur_sigma:g}: below 1/6 px the blur leaves the image unchanged, so "
                            "every map would be 0; use at least 0.17, or omit it for 1/16 of the image's "
                            "shorter side")
    if not math.isfinite(noise_std):
        raise XaiUsageError(f"--noise-std {noise_std}: use a finite std relative to the image's value range, "
                            "e.g. 0.15")
    baselines = parse_baselines(baseline or ["black"])
    from xaicli.cli.targets import TargetMasks

    masks = TargetMasks(target_mask) if target_mask else None
    items = resolve(inputs or [], images=True, records=True, shard=shard)
    session = ModelSession(model, load_options(arch, classes, labels, size, mean, std, trust_pickle, fit, arch_args), device)
    sink = open_sink(output)
    params = {"methods": methods, "baselines": [b.name for b in baselines], "steps": steps,
              "quadrature": quadrature, "tolerance": tolerance, "max_steps": max_steps, "targets": target,
              "target_mask": target_mask, "classes": class_, "baseline_samples": baseline_samples,
              "blur_sigma": blur_sigma, "seed": seed, "samples": samples, "noise_std": noise_std,
              "batch_size": batch_size}
    settings = dict(methods=methods, baselines=baselines, baseline_samples=baseline_samples, blur_sigma=blur_sigma,
                    seed=seed, steps=steps, quadrature=quadrature, tolerance=tolerance, max_steps=max_steps,
                    target=target, masks=masks, classes=class_, samples=samples, noise_std=noise_std,
                    threshold=threshold, cache={})
    skip = sink.exists if skip_existing else None
    planner = None
    from xaicli.models.device import reproducible

    with reproducible(device, bool(batch_size)), sink, background_writes(sink) as out:
        records = prefetch(iter_records(items, session, max_pixels=max_pixels, skip=skip,
                                        skip_unreadable=skip_unreadable))
        for rec, image in progress(records, items.count, "attribute"):
            adapter = session.get()
            if planner is None:
                from xaicli.explain.chunking import BatchPlanner

                planner = BatchPlanner(adapter.device, batch_size)
            t0 = time.perf_counter()
            explain_record(rec, image, adapter, planner, **settings)
            out.write(finish(rec, "attribute", params, time.perf_counter() - t0, adapter.device, not no_image))
            adapter.release()


attribute.__doc__ = HELP


def explain_record(rec, image, adapter, planner, *, methods, baselines, baseline_samples, blur_sigma, seed, steps,
                   quadrature, tolerance, max_steps, target, masks, classes, samples, noise_std, threshold,
                   cache: dict | None = None) -> None:
    """Add one map per (method, baseline) to `rec`, all computed in one batched engine call."""
    import torch

    from xaicli.cli.state import log
    from xaicli.cli.targets import record_targets
    from xaicli.errors import XaiError
    from xaicli.explain.integrated_gradients import attribute as run_jobs
    from xaicli.io.record import LOGITS, MASK
    from xaicli.models.predict import add_prediction, predict_images

    if LOGITS not in rec.arrays or (adapter.task == "segmentation" and MASK not in rec.arrays):
        add_prediction(rec, adapter, predict_images(adapter, [image])[0], threshold)
    cache = {} if cache is None else cache
    hw = tuple(image.shape[:2])
    targets = record_targets(rec, adapter, target, masks, classes, hw)
    unit = adapter.image_to_unit(image).contiguous()

    def forward(x):
        return adapter.forward(adapter.normalize(x))

    out_hw = _output_hw(adapter, unit, forward, cache) if adapter.task == "segmentation" else None
    weights = torch.stack([t.weight(adapter.num_classes, out_hw, hw, adapter.device) for t in targets])
    for t in targets:
        if t.mask is not None and not t.mask.any():
            log.warning("%s: target %s has an empty region; its map is all zeros", rec.id, t.label)
    jobs, described = _jobs(rec.id, unit, adapter, methods, baselines, baseline_samples, blur_sigma, seed,
                            samples, noise_std)
    t0 = time.perf_counter()
    try:
        results = run_jobs(forward, jobs, weights, steps=steps, quadrature=quadrature, tolerance=tolerance,
                           max_steps=max_steps, planner=planner)
    except ValueError as exc:
        raise XaiError(f"{rec.id}: {exc}") from None
    seconds = time.perf_counter() - t0
    for (m, bname, extra), res in zip(described, results):
        _store(rec, m, bname, extra, res, targets, steps, quadrature, tolerance, max_steps, seconds)


def _jobs(key, unit, adapter, methods, baselines, baseline_samples, blur_sigma, seed, samples, noise_std):
    """Engine jobs, and (method, baseline name, meta) for each: one per method x baseline (gradient methods: one)."""
    from xaicli.explain import gradients as gm
    from xaicli.explain.baselines import default_blur_sigma, make_baselines
    from xaicli.explain.integrated_gradients import Job

    jobs, described = [], []
    noise = {"samples": samples, "noise_std": noise_std, "seed": seed}
    for m in methods:
        if m not in USES_BASELINE:
            if m == "saliency":
                jobs.append(gm.saliency_job(unit))
                extra = {"absolute": True}
            elif m == "input_x_gradient":
                jobs.append(gm.input_x_gradient_job(unit))
                extra = {}
            else:
                jobs.append(gm.smoothgrad_job(unit, samples, noise_std, seed=seed, key=key))
                extra = dict(noise)
            described.append((m, "none", {"baseline": None, **extra}))
            continue
        for b in baselines:
            base = make_baselines(b, unit, mean=adapter.preprocessing.mean, samples=baseline_samples if b.random else 1,
                                  seed=seed, key=key, blur_sigma=blur_sigma, noise_std=noise_std,
                                  to_unit=adapter.image_to_unit)
            extra = {**b.to_meta(), "baseline_samples": int(base.shape[0])}
            if b.random:
                extra["seed"] = seed
            if b.kind == "noise":
                extra["noise_std"] = noise_std
            if b.kind == "blur":
                extra["blur_sigma"] = blur_sigma if blur_sigma is not None else default_blur_sigma(unit.shape[-2:])
            if m == "integrated_gradients":
                jobs.append(Job(m, base, unit.expand(base.shape[0], *unit.shape[1:])))
            else:
                jobs.append(gm.smoothgrad_ig_job(unit, base, samples, noise_std, seed=seed, key=key))
                extra.update(noise)
            described.append((m, b.name, extra))
    return jobs, described


def _store(rec, m, bname, extra, res, targets, steps, quadrature, tolerance, max_steps, seconds) -> None:
    """The map as float32 (T, C, H, W) under attr/<method>/<baseline>, its numbers in meta; warn on a large delta."""
    import numpy as np

    from xaicli.cli.state import log

    integral = m in USES_BASELINE
    info = {"kind": "attribution", "method": m, "baseline": bname if integral else None, "layer": None,
            "targets": [t.to_meta() for t in targets],
            "steps": max(s for s in res.steps if s is not None) if integral else None,
            "target_steps": res.steps if integral else None,
            "quadrature": quadrature if integral else None,
            "delta": res.delta, "relative_delta": res.relative_delta,
            "f_x": res.f_x, "f_baseline": res.f_baseline,
            "tolerance": tolerance if integral else None,
            "converged": res.converged if integral and tolerance is not None else None,
            "score": "sum of target weights x logits", "space": "image pixels in [0, 1] at image size",
            "steps_evaluated": res.steps_evaluated, "batch_size": res.batch_size,
            "seconds": round(seconds, 4), **extra}
    worst = max((r for r in res.relative_delta if r is not None), default=0.0) if integral else 0.0
    if integral and tolerance is None and worst > DELTA_WARN:
        log.warning("%s: %s/%s relative delta %.3g with %d steps; the map may be inaccurate: raise --steps "
                    "or let --tolerance 0.01 choose them", rec.id, m, bname, worst, steps)
    if integral and tolerance is not None and not all(res.converged):
        log.warning("%s: %s/%s did not reach --tolerance %g within --max-steps %d (relative delta %s)",
                    rec.id, m, bname, tolerance, max_steps,
                    ", ".join("-" if r is None else f"{r:.3g}" for r in res.relative_delta))
    rec.add_map(f"attr/{m}/{bname}", res.attributions.detach().float().cpu().numpy().astype(np.float32), info)


def _output_hw(adapter, unit, forward, cache: dict):
    """Spatial size of the segmentation logits for this input (one no-grad forward, cached per input size)."""
    import torch

    key = tuple(adapter.input_size(tuple(unit.shape[-2:])))
    if key not in cache:
        with torch.no_grad():
            cache[key] = tuple(forward(unit).shape[-2:])
    return cache[key]
