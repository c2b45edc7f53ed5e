"""The model's own processor vs the old squash: what predict + attribute cost, in one process.

    python bench/bench_preprocess.py            # ConvNeXt (~3.5 M parameters), ConvNeXt-T widths (28 M),
                                                # ViT-Tiny widths; a 480x300 image
    python bench/bench_preprocess.py --quick    # one repetition, no ConvNeXt-T

`--fit processor` (the default for Hugging Face folders: the processor's bicubic resize to
409x256 and centre crop, clamp, normalise) against `--fit squash` (the pre-issue-16
pipeline: one bilinear antialiased resize of the whole image to 224x224), same model and
image; predict = one no-grad forward through the pipeline, attribute = IG with 32 steps in
chunks of 8 (fixed, so both sides do equal model work). Times are the minimum over --reps
interleaved repetitions of the process's CPU time with one torch thread. Goal: ratio
(processor / squash) <= 1.05 for predict + attribute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(kind: str, folder: Path) -> Path:
    import torch
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    torch.manual_seed(0)
    if kind.startswith("convnext"):
        widths, depths = ([96, 192, 384, 768], [3, 3, 9, 3]) if kind == "convnext-t" else ([48, 96, 192, 384], [1, 1, 3, 1])
        cfg = ConvNextConfig(hidden_sizes=widths, depths=depths, num_labels=5, image_size=224)
        ConvNextForImageClassification(cfg).eval().save_pretrained(folder)
        ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(folder)
    else:
        cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                        intermediate_size=768, num_labels=5)
        ViTForImageClassification(cfg).eval().save_pretrained(folder)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def cpu_time(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repetition")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)

    import numpy as np
    import torch

    from xaicli.explain.integrated_gradients import integrated_gradients
    from xaicli.models.loader import LoadOptions, load_model
    from xaicli.models.predict import predict_images

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = (rng.random((300, 480, 3)) * 255).astype(np.uint8)
    print(f"# one thread, CPU seconds, min of {reps}; image 300x480; IG 32 steps, chunks of 8")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("convnext", "vit") if args.quick else ("convnext", "convnext-t", "vit"):
            folder = build(kind, Path(tmp) / kind)
            ads = {fit: load_model(str(folder), LoadOptions(fit=fit), device="cpu") for fit in ("squash", "processor")}
            best = {(fit, part): float("inf") for fit in ads for part in ("predict", "attribute")}
            for _ in range(reps + 1):                      # the first round warms kernels up, untimed
                for fit, ad in ads.items():
                    unit = ad.image_to_unit(image)
                    weights = torch.zeros(1, ad.num_classes)
                    weights[0, 0] = 1

                    def fwd(x, ad=ad):
                        return ad.forward(ad.normalize(x))

                    tp = cpu_time(lambda ad=ad: predict_images(ad, [image]))
                    ta = cpu_time(lambda: integrated_gradients(fwd, unit, torch.zeros_like(unit), weights, steps=32,
                                                               batch_size=8))
                    best[(fit, "predict")] = min(best[(fit, "predict")], tp) if _ else float("inf")
                    best[(fit, "attribute")] = min(best[(fit, "attribute")], ta) if _ else float("inf")
            for part in ("predict", "attribute"):
                s, p = best[("squash", part)], best[("processor", part)]
                print(f"{kind:10s} {part:10s} squash {s:7.3f} s   processor {p:7.3f} s   ratio {p / s:5.2f}")
            s = best[("squash", "predict")] + best[("squash", "attribute")]
            p = best[("processor", "predict")] + best[("processor", "attribute")]
            worst = max(worst, p / s)
            print(f"{kind:10s} {'both':10s} squash {s:7.3f} s   processor {p:7.3f} s   ratio {p / s:5.2f} (goal <= 1.05)")
    print(f"worst predict+attribute ratio {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
