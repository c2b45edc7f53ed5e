"""The per-channel CAM matrix of issue 23 §1: ScoreCAM against grad-cam's and against the floor.

    python bench/bench_cam_matrix.py --quick             # every cell, 4 channels each (make bench)
    python bench/bench_cam_matrix.py --channels 0        # every channel of every layer (hours on a CPU)
    python bench/bench_cam_matrix.py --only unet-resnet18 --sizes 128

Cells: smp U-Net++ and Unet with efficientnet-b0/b5 and resnet18/50 at 128² and 256², layers
`encoder_mid`, `encoder_last`, `decoder_last`; a Hugging Face ConvNeXt (tiny widths) and a
ViT (base widths) at 224², layer `last`. Random weights: the time of a pass depends on the
architecture and the input size, not on the weights. One line per cell:

- ours: `xai cam -M scorecam` through the engine (exact float32 scores, `--scorecam-exact`: the
  passes grad-cam runs; bench_cam.py measures the bfloat16 screen),
  with --scorecam-channels K; grad-cam: its ScoreCAM (batch 16) on the same K channels
  (the weights of the others set to 0 in both), same input and target;
- floor: (K + 1) × the best per-sample no-grad forward over batch sizes 1, 2, 4, 8, 16 up
  to K (K channel passes and the pass that reads the activations);
- ours/grad-cam (goal ≤ 1) and ours/floor (goal ≤ 1.1), and the chunk ours settled on.

Ours is timed as a run's later images are: the chunk plan of the input shape (which, on a
CPU, climbs over powers of two to the fastest size per sample) is kept for the model's
cells, after up to WARM_RUNS runs of the first layer have let it settle (a climb goes no
higher than the channels asked for: the quick form explores chunks of 1 to 4, and
grad-cam's batch of 16 gets 4 channels, so its fixed batch costs it nothing there).

The quick form times K channels per layer: a channel's pass costs the same whatever the
channel, so its ratios are those of the full layer to within the one activation pass (1/C).
Timed in the process's CPU seconds with one thread (the default): other processes on the
machine cannot inflate them, and the engine's chunk tuning uses the same clock. Even so the
same passes scatter ±15% run to run at a quarter second (12 interleaved runs of one cell:
0.21–0.29 s ours, 0.20–0.26 s grad-cam), so ours and grad-cam run in alternating pairs
until PAIR_BUDGET seconds are spent (1 to PAIR_MOST pairs): ours/grad-cam is the median of
the pairs' ratios (a slow spell hits both halves of a pair), ours/floor the least of ours
over the floor's least. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cam import build, scan  # noqa: E402  (the smp models and scans of the ScoreCAM benchmark)

SMP = [(arch, enc, size) for arch in ("unetplusplus", "unet") for enc in ("efficientnet-b0", "efficientnet-b5",
                                                                            "resnet18", "resnet50")
       for size in (128, 256)]
SMP_LAYERS = ("encoder_mid", "encoder_last", "decoder_last")
HF = [("convnext", 224), ("vit", 224)]
BATCHES = (1, 2, 4, 8, 16)
CLOCK = time.perf_counter      # main() makes it the process's CPU time with one thread
WARM_RUNS = 4          # runs before the timed ones, until the chunk has settled
PAIR_BUDGET, PAIR_MOST = 4.0, 9   # seconds of ours + grad-cam pairs per cell, most pairs
GOALS = {"gradcam": 1.0, "floor": 1.1}


def hf_adapter(kind: str, size: int, device: str, folder: Path):
    import torch
    import transformers
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    from xaicli.models.loader import load_model

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    if kind == "convnext":
        ConvNextForImageClassification(ConvNextConfig(num_labels=10, image_size=size)).eval().save_pretrained(folder)
        ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0).save_pretrained(folder)
    else:
        ViTForImageClassification(ViTConfig(num_labels=10, image_size=size)).eval().save_pretrained(folder)
        ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return load_model(str(folder), device=device)


def classifier_case(ad, size: int):
    """(adapter, image, targets): the built-in segmentation scan at `size` in RGB, its top class as target."""
    import numpy as np
    import torch

    from xaicli.explain.targets import Target

    img = np.repeat(scan(size)[..., None], 3, axis=-1)
    with torch.no_grad():
        k = int(ad.forward(ad.prepare(img))[0].argmax())
    return ad, img, [Target("class", k, ad.labels[k])]


def fastest(fn, budget: float = 1.2, most: int = 3):
    """fn() → (result, seconds) run until `budget` seconds are spent (at most `most` times, at least
    once): the result and the least seconds. Sub-second cells are noise otherwise."""
    best, spent, runs = None, 0.0, 0
    while runs < most and (runs == 0 or spent < budget):
        out, seconds = fn()
        spent, runs = spent + seconds, runs + 1
        if best is None or seconds < best[1]:
            best = (out, seconds)
    return best


def pairs(fa, fb, budget: float = PAIR_BUDGET, most: int = PAIR_MOST):
    """fa(), fb() → (result, seconds), alternated until `budget` seconds are spent (at least one pair,
    at most `most`): the first pair's results and both lists of seconds."""
    first, ta, tb = None, [], []
    while len(ta) < most and (not ta or sum(ta) + sum(tb) < budget):
        (ra, sa), (rb, sb) = fa(), fb()
        first = first or (ra, rb)
        ta.append(sa)
        tb.append(sb)
    return first, ta, tb


def floor_per_sample(ad, x, most: int) -> tuple[float, int]:
    """The best seconds per sample of a no-grad forward over BATCHES up to `most` (each warmed once),
    and its batch."""
    import torch

    best = (float("inf"), 0)
    done = torch.cuda.synchronize if x.is_cuda else (lambda: None)    # CUDA runs ahead of the host clock
    with torch.inference_mode():
        for b in (b for b in BATCHES if b <= most):
            xb = x.expand(b, *x.shape[1:]).contiguous()
            ad.net(xb)
            done()

            def once(xb=xb):
                t0 = CLOCK()
                ad.net(xb)
                done()
                return None, CLOCK() - t0

            best = min(best, (fastest(once)[1] / b, b))
    return best


def ours(ad, la, table, img, targets, k: int | None, cache: dict):
    """Our ScoreCAM through the engine; `cache` is the engine's per-run state (the chunk plan of
    each input shape), shared by the cells of one model as one `xai cam` run keeps it."""
    from xaicli.explain.cam import CamEngine

    eng = CamEngine(ad, [la], ["scorecam"], largest_bytes=table.largest_bytes, scorecam_channels=k,
                    scorecam_exact=True)
    eng.cache = cache
    t0 = CLOCK()
    maps = eng.explain(img, targets)
    seconds = CLOCK() - t0
    info = maps[0].info.get("scorecam", {})
    return maps[0].values[0], seconds, info


def gradcams(ad, la, img, targets, keep):
    """grad-cam's ScoreCAM on the channels `keep` (all when None): (map, seconds)."""
    import numpy as np
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    from xaicli.explain.cam import release_gradcam

    class Subset(ScoreCAM):
        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            if keep is None:
                return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)
            w = super().get_cam_weights(input_tensor, target_layer, targets, activations[:, keep], grads)
            full = np.zeros(activations.shape[:2], w.dtype)
            full[:, keep] = w
            return full

    x = ad.prepare(img)
    gc_targets = [SemanticSegmentationTarget(t.index, t.mask.astype("float32")) if t.kind == "mask"
                  else ClassifierOutputTarget(t.index) for t in targets]
    cam = Subset(ad.net, [la.module], reshape_transform=la.reshape_transform(tuple(x.shape[-2:])))
    try:
        t0 = CLOCK()
        with contextlib.redirect_stderr(io.StringIO()):
            out = cam(x.detach().clone(), gc_targets)
        return out[0], CLOCK() - t0
    finally:
        release_gradcam(cam)


def pearson(a, b) -> float:
    import numpy as np

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def model_cells(args):
    """(name, make(folder) -> (adapter, image, targets), size, layers) of every model asked for."""
    out = []
    for arch, enc, size in SMP:
        if size in args.sizes:
            out.append((f"{arch}-{enc}-{size}", lambda f, a=arch, e=enc, s=size: build(e, s, args.device, a),
                        size, SMP_LAYERS))
    for kind, size in HF:
        out.append((f"hf-{kind}-{size}", lambda f, k=kind, s=size: classifier_case(hf_adapter(k, s, args.device, f), s),
                    size, ("last",)))
    return [c for c in out if not args.only or any(o in c[0] for o in args.only.split(","))]


def run_cell(case, name, size, layers, args, rows):
    from xaicli.models.layers import layer_table

    ad, img, targets = case
    x = ad.prepare(img)
    per, best_b = floor_per_sample(ad, x, args.channels or BATCHES[-1])
    table = layer_table(ad, tuple(x.shape[-2:]))
    cache: dict = {}
    k = args.channels or None
    warm = 0
    for _ in range(WARM_RUNS):        # the run's first images: the chunk climbs to the fastest size
        warm += ours(ad, table.resolve([layers[0]])[0], table, img, targets, k, cache)[1]
        if all(p.best is not None for key, p in cache.items() if key[0] == "chunk_plan"):
            break
    for lname in layers:
        la = table.resolve([lname])[0]
        kept: dict = {}

        def run_ours(la=la, kept=kept):
            m, seconds, info = ours(ad, la, table, img, targets, k, cache)
            kept["channels"] = info.get("kept_channels")      # grad-cam gets the same channels
            return (m, info), seconds

        ((m, info), ref), t_ours, t_ref = pairs(
            run_ours, lambda la=la, kept=kept: gradcams(ad, la, img, targets, kept["channels"]))
        keep = kept["channels"]
        n = len(keep) if keep else info.get("channels")
        total = la.shape[1] if la.tokens is None else la.shape[-1]
        floor = (n + 1) * per
        row = {"cell": f"{name} {lname}", "channels": f"{n}/{total}", "warm_s": warm, "ours": min(t_ours),
               "gradcam": min(t_ref), "pairs": len(t_ours),
               "vs_gradcam": statistics.median(a / b for a, b in zip(t_ours, t_ref)), "floor": floor,
               "vs_floor": min(t_ours) / floor, "chunk": info.get("chunk"), "best_batch": best_b,
               "pearson": pearson(m, ref)}
        rows.append(row)
        print(f"{row['cell']:44s} {row['channels']:>9s} ours {row['ours']:7.2f} s  grad-cam {row['gradcam']:7.2f} s  "
              f"{row['vs_gradcam']:5.2f}x ({row['pairs']} pairs)  floor {floor:7.2f} s  {row['vs_floor']:5.2f}x  "
              f"chunk {row['chunk']}  best batch {best_b}  Pearson {row['pearson']:.4f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 channels per layer (the default)")
    ap.add_argument("--channels", type=int, default=None, help="channels per layer; 0 = all (default: 4)")
    ap.add_argument("--sizes", default="128,256", help="smp input sizes")
    ap.add_argument("--only", default="", help="cells whose name holds one of these, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: timed in CPU seconds, "
                                                           "so a shared machine does not skew the ratios)")
    args = ap.parse_args(argv)
    args.channels = 4 if args.channels is None else args.channels
    args.sizes = {int(s) for s in args.sizes.split(",")}
    import torch

    global CLOCK
    torch.set_num_threads(args.threads)
    if args.threads == 1 and args.device == "cpu":
        CLOCK = time.process_time
    print(f"# {date.today()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{args.channels or 'all'} channels per layer", flush=True)
    rows: list[dict] = []
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xai-bench-") as tmp:
        for i, (name, make, size, layers) in enumerate(model_cells(args)):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            run_cell(make(folder), name, size, layers, args, rows)
    worst_gc = max(rows, key=lambda r: r["vs_gradcam"])
    worst_fl = max(rows, key=lambda r: r["vs_floor"])
    print(f"# {len(rows)} cells in {time.perf_counter() - wall:.0f} s; worst ours/grad-cam {worst_gc['vs_gradcam']:.2f}x "
          f"({worst_gc['cell']}; goal <= {GOALS['gradcam']}), worst ours/floor {worst_fl['vs_floor']:.2f}x "
          f"({worst_fl['cell']}; goal <= {GOALS['floor']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
