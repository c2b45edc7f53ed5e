"""Recipro-CAM's pointing game on the built-in demo models: does its peak lie in the evidence?

    python bench/check_reciprocam.py [--count 100] [--start 5000] [--only cls|seg] [--kernel gaussian]

Draws `--count` demo images per model (seeds from `--start`), explains the default target
(top class / predicted mask) with `recipro-cam` through the library, and prints how often
the map's peak lies inside the evidence (classifier: the object; segmenter: the blobs),
against the goal of 95%. The classifier uses its default layer (8x8); the segmenter
`encoder_mid` (24x24, stride 4: its `encoder_last`, stride 8, is coarser than the blobs,
and its `decoder_last` is 96x96, 9216 forwards an image). Exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

GOAL = 0.95
MODELS = {"cls": ("builtin:shapes-cls", "classification", None),
          "seg": ("builtin:shapes-seg", "segmentation", "encoder_mid")}


def main(argv: list[str] | None = None) -> int:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_cam_demo import peak_hits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--start", type=int, default=5000)
    ap.add_argument("--only", choices=sorted(MODELS))
    ap.add_argument("--kernel", default="gaussian")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    missed = 0
    for key, (spec, task, layer) in MODELS.items():
        if args.only and key != args.only:
            continue
        t0 = time.perf_counter()
        hits = peak_hits(spec, task, layer, "recipro-cam", range(args.start, args.start + args.count),
                         recipro_kernel=args.kernel)
        share = float(np.mean(hits))
        missed += share < GOAL
        print(f"{spec} layer {layer or 'default'} kernel {args.kernel}: peak in the evidence {sum(hits)}/{len(hits)} "
              f"= {share:.2f} (goal >= {GOAL}), {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
