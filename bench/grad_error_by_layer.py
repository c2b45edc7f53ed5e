"""Where in a network float32 gradients drift from float64: per module, forward and backward.

    python bench/grad_error_by_layer.py --device cuda   # the GPU's float32 against float64 on the CPU
    python bench/grad_error_by_layer.py --device cpu    # the CPU's own float32 error (a baseline)

Written for the one open check_cuda failure: on a random-init efficientnet-b5 U-Net++ at
256², the H200's float32 IG map was 4.5e-2 of its maximum off float64, the CPU's 4.5e-3,
while the logits agreed to ~1e-6 on both (so the drift is in the backward pass), with
cuDNN deterministic, benchmarking or off alike.
First the input gradient at every point of the IG path (image ↔ black, the check's
target, Gauss-Legendre) against float64, weighted as in the map: the worst point. There,
every leaf module's output and the gradient arriving at it are compared with float64 on
the CPU: max |diff| / max |float64|, printed in backward order (output first); the first
rows where the error jumps name the op.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def input_gradients(problem, alphas) -> list:
    """The input gradient of the target score at each point of the IG path (as float64, on the CPU)."""
    import torch

    grads = []
    for a in alphas:
        x = (problem.base + float(a) * (problem.unit - problem.base)).requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad((problem.forward(x) * problem.w).sum(), x)
        grads.append(g.detach().cpu().double())
    return grads


def trace(problem, alpha: float) -> dict[str, tuple]:
    """(module type, output, gradient at the output) per leaf module, at one point of the path."""
    import torch

    module = problem.ad.module
    for m in module.modules():
        if hasattr(m, "inplace"):
            m.inplace = False              # an in-place op would overwrite the outputs kept here
    seen: dict[str, tuple] = {}

    def keep(name):
        def hook(mod, args, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.retain_grad()
                seen[name] = (type(mod).__name__, out)
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in module.named_modules() if not list(m.children())]
    try:
        x = (problem.base + alpha * (problem.unit - problem.base)).requires_grad_(True)
        with torch.enable_grad():
            score = (problem.forward(x) * problem.w).sum()
            score.backward()
    finally:
        for h in handles:
            h.remove()
    out = {name: (kind, t.detach().cpu().double(), t.grad.cpu().double() if t.grad is not None else None)
           for name, (kind, t) in seen.items()}
    out["<input>"] = ("input", x.detach().cpu().double(), x.grad.cpu().double())
    return out


def rel(a, b) -> float:
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rows", type=int, default=40, help="rows to print, from the output backwards")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from bench_ig import build_unetpp
    from check_cuda import Problem
    from xaicli.explain.quadrature import rule

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; try --device cpu", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        spec = str(build_unetpp(Path(tmp) / "effb5", args.size))
        image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        problems = {"exact": Problem(spec, "cpu", image).double(), "cpu": Problem(spec, "cpu", image)}
        if args.device != "cpu":                                  # with --device cpu the device is the CPU
            problems["dev"] = Problem(spec, args.device, image)
        # The IG map sums weighted gradients along the path; they largely cancel on a random-init
        # net, so the map's error can come from a few points: find the worst one first.
        alphas, weights = rule("gausslegendre", args.steps)
        grads = {k: input_gradients(p, alphas) for k, p in problems.items()}
        grads.setdefault("dev", grads["cpu"])
        delta = (problems["exact"].unit - problems["exact"].base).cpu()

        def ig_map(gs):
            return sum(float(w) * g for w, g in zip(weights, gs)) * delta

        ig = ig_map(grads["exact"])
        scale = float(ig.abs().max())
        print(f"per-point gradient error x weight x (x - x'), over max |IG map| (float64), {args.steps} steps:")
        worst = {}
        for k in ("dev", "cpu"):
            errs = [float(((g - e) * float(w) * delta).abs().max()) / scale
                    for w, g, e in zip(weights, grads[k], grads["exact"])]
            worst[k] = int(np.argmax(errs))
            total = float((ig_map(grads[k]) - ig).abs().max()) / scale
            print(f"  {k:4s}: map error {total:.1e}; per point " + " ".join(f"{e:.0e}" for e in errs))
        alpha = float(alphas[worst["dev"]])
        print(f"tracing at alpha = {alpha:.3f} (the device's worst point)")
        traces = {k: trace(p, alpha) for k, p in problems.items()}
        exact, cpu = traces["exact"], traces["cpu"]
        dev = traces.get("dev", cpu)
    names = [n for n in exact if n in dev and n in cpu]          # forward order
    print(f"{len(names)} modules; errors against float64 (max |diff| / max |float64|), backward order")
    print(f"{'module':60s} {'type':14s} {'out ' + args.device:>10s} {'out cpu':>9s} "
          f"{'grad ' + args.device:>10s} {'grad cpu':>9s} {'flips':>11s}")
    rows, flips = [], {"dev": 0, "cpu": 0}
    for name in reversed(names):
        kind, a64, g64 = exact[name]
        d, c = dev[name], cpu[name]
        gd = rel(d[2], g64) if g64 is not None and d[2] is not None else float("nan")
        gc = rel(c[2], g64) if g64 is not None and c[2] is not None else float("nan")
        # a ReLU whose input sits within rounding of 0 opens in one precision and not the other:
        # the whole gradient at that pixel changes
        f = (int(((d[1] > 0) != (a64 > 0)).sum()), int(((c[1] > 0) != (a64 > 0)).sum())) if "ReLU" in kind else None
        if f:
            flips["dev"] += f[0]
            flips["cpu"] += f[1]
        rows.append((name, kind, rel(d[1], a64), rel(c[1], a64), gd, gc, f))
    shown = rows[:args.rows] + ([("...", "", *[float("nan")] * 4, None)] if len(rows) > args.rows + 1 else []) + rows[-1:]
    for name, kind, od, oc, gd, gc, f in shown:
        print(f"{name[-60:]:60s} {kind[:14]:14s} {od:10.1e} {oc:9.1e} {gd:10.1e} {gc:9.1e} "
              f"{f'{f[0]}/{f[1]}' if f else '':>11s}")
    print(f"ReLU gates flipped against float64 at this point: {args.device} {flips['dev']}, cpu {flips['cpu']}")
    # where the device's gradient error first exceeds 3x the CPU's (and 1e-4): the suspect
    worse = [r for r in rows if r[4] > max(3 * r[5], 1e-4)]
    if worse:
        name, kind, _od, _oc, gd, gc, _f = worse[0]
        print(f"\nfirst module (from the output) whose gradient is >3x the CPU's error: {name} ({kind}): "
              f"{gd:.1e} vs {gc:.1e}; {len(worse)} such modules in all")
    else:
        print("\nno module's gradient error exceeds 3x the CPU's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
