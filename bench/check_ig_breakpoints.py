"""Would ExactLine pay? Counts the ReLU and max-pool switches along IG's path on the built-in models.

    python bench/check_ig_breakpoints.py                      # both built-in models, 257 points
    python bench/check_ig_breakpoints.py --points 1025 --only shapes-cls

On a piecewise-linear network the IG integrand is constant between the path's breakpoints, so
ExactLine (Sotoudeh & Thakur 2019) needs one gradient per linear piece. Along x' + a(x - x')
from a black baseline, sampled at --points values of a, every ReLU's sign and every max-pool
window's winner is recorded, and the units that change between neighbouring samples counted:
distinct units switch at distinct a (almost surely), so the count is a lower bound on the pieces,
to set against the few hundred points the adaptive quadrature takes (README, xai attribute).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"shapes-seg": "segmentation", "shapes-cls": "classification"}


def count(spec: str, task: str, points: int, seed: int) -> dict:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    ad = load_model(spec, device="cpu")
    x = ad.image_to_unit(make_sample(seed, task)[0])
    seen: list = []

    def relu(mod, inp, out):
        seen.append((out > 0).flatten())

    def pool(mod, inp, out):
        _, idx = F.max_pool2d(inp[0], mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                              ceil_mode=mod.ceil_mode, return_indices=True)
        seen.append(idx.flatten())

    for m in ad.net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(relu)
        elif isinstance(m, nn.MaxPool2d):
            m.register_forward_hook(pool)
    switches, prev = [], None
    with torch.no_grad():
        for a in torch.linspace(0, 1, points):
            seen.clear()
            ad.net(ad.normalize(a * x))          # black baseline: x' = 0
            cur = torch.cat(seen)
            if prev is not None:
                switches.append(int((cur != prev).sum()))
            prev = cur
    return {"units": int(prev.numel()), "switches": sum(switches), "most": max(switches),
            "empty": sum(s == 0 for s in switches), "intervals": len(switches)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=257, help="samples of a along the path")
    ap.add_argument("--only", default="", help="one built-in model: shapes-seg or shapes-cls")
    ap.add_argument("--seed", type=int, default=0, help="generated image")
    args = ap.parse_args(argv)
    for name, task in MODELS.items():
        if args.only and args.only != name:
            continue
        r = count(f"builtin:{name}", task, args.points, args.seed)
        print(f"builtin:{name}: {r['units']} gated units; {r['switches']} switches between {args.points} points "
              f"(at most {r['most']} in one interval; {r['empty']} of {r['intervals']} intervals without any)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
