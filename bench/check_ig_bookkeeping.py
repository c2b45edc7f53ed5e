"""The adaptive quadrature's own work per path point, where the g(α) are kept, against the model's.

    python bench/check_ig_bookkeeping.py [--sizes 256,640] [--device cuda] [--points 225]

The adaptive default (xaicli/explain/adaptive.py) keeps every point's g(α), in the model's dtype,
and does a dozen element-wise passes over a map per point (the intervals' values, changes and
error shares, and the running sums). A GPU does not speed that up where the points are kept on
the CPU: this script runs AdaptivePath alone, on the refinement schedule of the engine, over
synthetic maps of an RGB image of each size, one target, until --points points, and prints the
milliseconds per point in each of --dtypes with the points kept on the CPU (1 and all torch
threads) and, on a CUDA --device, kept there; then the model's own time per pass, a forward and
backward pass of U-Net++ efficientnet-b5 (random weights, float32) at that size, for --rows rows
(up to the first count that does not fit), and the ratio of each bookkeeping time to the best time
per row. Where a pass of more rows costs about the same, the adaptive default's rounds set its
time, not its points (each round is at least one pass). Each time is the best of --reps runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xaicli.explain.chunking import sync  # noqa: E402 - after the path: waits for a CUDA device's queued kernels


def per_point(size: int, store: torch.device, points: int, reps: int, dtype=torch.float32) -> float:
    """Seconds of AdaptivePath's work per point, kept in `dtype` (the model's) on `store`, where they arrive."""
    from xaicli.explain.adaptive import REFINE_LEAST, AdaptivePath

    gen = torch.Generator(store).manual_seed(0)
    noise = torch.randn(1, 3, size, size, generator=gen, device=store, dtype=dtype) * 0.01
    best = float("inf")
    for _ in range(reps):
        path, spent = AdaptivePath(1, store, dtype), 0.0
        while True:
            alphas = path.wanted()
            maps = torch.stack([noise + a for a in alphas])
            sync(store)
            t0 = time.perf_counter()
            path.add(alphas, maps)
            path.estimate(), path.error(), path.sum_change()
            if path.points < points:
                path.refine(max(REFINE_LEAST, len(path.intervals) // 4))
            sync(store)
            spent += time.perf_counter() - t0
            if path.points >= points:
                break
        best = min(best, spent / path.points)
    return best


def pass_seconds(size: int, device: torch.device, rows: list[int], reps: int) -> dict[int, float]:
    """Seconds of one forward and backward pass of U-Net++ efficientnet-b5 (random weights) per row count,
    up to the first that does not fit."""
    import segmentation_models_pytorch as smp

    from xaicli.models.device import is_oom

    torch.manual_seed(0)
    net = smp.UnetPlusPlus(encoder_name="efficientnet-b5", encoder_weights=None, classes=1).to(device).eval()
    out = {}
    for n in rows:
        try:
            best = float("inf")
            for _ in range(reps + 1):                  # the first pass sets the kernels up
                x = torch.rand(n, 3, size, size, device=device, requires_grad=True)
                sync(device)
                t0 = time.perf_counter()
                net(x).sum().backward()
                sync(device)
                best = min(best, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - out of memory ends the row counts; anything else is raised
            if not is_oom(exc):
                raise
            break
        finally:
            x = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        out[n] = best
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,640")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=225)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,float64", help="the kept points' dtypes (the model's)")
    ap.add_argument("--no-model", action="store_true", help="skip the model's passes")
    ap.add_argument("--rows", default=None, help="row counts of the model's passes (default 1, 2, 4, ... 128 on "
                    "CUDA, 1, 2, 4, 8 on the CPU)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    for size in (int(s) for s in args.sizes.split(",")):
        times = {}
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            name = str(dtype).removeprefix("torch.")
            for n in sorted({1, threads}):
                torch.set_num_threads(n)
                times[f"cpu, {n} thread{'s' * (n > 1)}, {name}"] = per_point(size, torch.device("cpu"), args.points,
                                                                             args.reps, dtype)
            torch.set_num_threads(threads)
            if device.type == "cuda":
                times[f"{device}, {name}"] = per_point(size, device, args.points, args.reps, dtype)
        rows = [int(r) for r in args.rows.split(",")] if args.rows else \
            [2 ** k for k in range(8 if device.type == "cuda" else 4)]
        passes = {} if args.no_model else pass_seconds(size, device, rows, args.reps)
        model = min((t / n for n, t in passes.items()), default=None)      # the best time per row
        for where, sec in times.items():
            ratio = f"  {sec / model:.2f}x the model's best per row" if model else ""
            print(f"{size}² RGB, {args.points} points, kept on {where}: {sec * 1e3:.2f} ms per point{ratio}",
                  flush=True)
        for n, t in passes.items():
            print(f"{size}²: U-Net++ efficientnet-b5 forward+backward of {n:3d} rows on {device} ({threads} threads): "
                  f"{t * 1e3:8.2f} ms per pass, {t / n * 1e3:7.2f} per row", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
