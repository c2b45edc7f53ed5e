"""IG to a given accuracy: the adaptive default against fixed Gauss–Legendre, measured on the map.

    python bench/check_ig_accuracy.py [--quick] [--images 4] [--size 256] [--reference 2048] [--only vit]
                                      [--baselines black,blur] [--effb5-trained STEPS] [--first 7001] [--rungs]
                                      [--keep DIR]

For each model × baseline × image, through `xai attribute` in this process (one torch
thread): a reference map with `--reference` Gauss–Legendre nodes, the default run
(adaptive quadrature: estimated map error ≤ 1% and |delta| ≤ 1%), and fixed
Gauss–Legendre runs of 8, 16, 32, ... nodes until one is as close to the reference as
the default's map, then bisection between the last two rungs to within 1/32 of the least
count as close (`--rungs`: not), and Captum's default of 50 nodes. Per map it prints the
default's points, its measured and estimated relative L2 error, its |delta|, the least fixed
count as close (and the count below it found not as close) and the ratios of compute seconds
(the records' own `seconds`: default / that fixed run; goal ≤ 0.3) and of points, the error
of 50 nodes and the seconds ratio to them, and over all maps how often the estimate bounded
the measured error (goal ≥ 95%).

Models: the built-in segmenter (its scans enlarged to --size) and classifier, and tiny
randomly initialised Hugging Face ConvNeXt and ViT classifiers (GELU: smooth along the
path). --quick: 2 images, a 1024-node reference. `--effb5-trained STEPS` adds the issue's
smp U-Net++ efficientnet-b5 at --size (SiLU encoder, ReLU decoder), trained STEPS steps on the
built-in blobs at 128² (no ImageNet weights can be downloaded here) and saved with
`save_pretrained`; about 1 s per path point at 256² on one thread, so a 2048-node reference
takes over half an hour per image and baseline: run one process per baseline (`--baselines`).
`--keep DIR` keeps the fixed-node runs (the reference above all) and reuses them on the next
call with the same models, images and baseline: they do not depend on the adaptive code, so
a change to it is measured again in the default run's time only; so is the trained effb5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LADDER = (8, 16, 32, 64, 128, 256, 384, 512, 768, 1024)
FINE = 32      # the least count as close is bisected between rungs to within 1/FINE of it (--rungs: not)


def records(folder: Path, key: str) -> dict[str, tuple[np.ndarray, dict]]:
    out = {}
    for f in sorted(folder.glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            out[meta["id"]] = (z[key].astype(np.float64), meta["maps"][key])
    return out


def attribute(model: str, images: Path, baseline: str, extra: list[str], out: Path, target: str):
    from xaicli.cli.app import run as xai

    code = xai(["-q", "attribute", "-m", model, str(images), "-B", baseline, "--target", target, *extra,
                "-o", f"{out}/"])
    if code != 0:
        raise SystemExit(f"xai attribute -m {model} -B {baseline} {' '.join(extra)} failed with exit {code}")
    return records(out, f"attr/integrated_gradients/{baseline}")


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


def models(tmp: Path, size: int, count: int, effb5_steps: int = 0, first: int = 7001,
           keep: Path | None = None) -> dict[str, tuple[Path, str]]:
    """Model spec → (a folder of its images, the target)."""
    import imageio.v3 as iio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers_models import save_tiny_convnext, save_tiny_vit, smooth_image

    from xaicli.models.builtin.shapes import make_sample

    out = {}
    for spec, task in (("builtin:shapes-seg", "segmentation"), ("builtin:shapes-cls", "classification")):
        folder = tmp / task
        folder.mkdir()
        for i in range(count):
            img = make_sample(first + i, task)[0]
            if task == "segmentation" and img.shape[0] != size:
                from PIL import Image
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
            iio.imwrite(folder / f"s{first + i}.png", img)
        out[spec] = (folder, "predicted" if task == "segmentation" else "top1")
    if effb5_steps:
        from bench_scorecam_channels import train_effb5

        effb5 = (keep or tmp) / f"effb5-{effb5_steps}"
        if not effb5.is_dir():
            train_effb5(effb5_steps).save_pretrained(effb5)
        out[str(effb5)] = (tmp / "segmentation", "predicted")
    rgb = tmp / "rgb"
    rgb.mkdir()
    for i in range(count):
        iio.imwrite(rgb / f"r{i}.png", smooth_image(96, 96, seed=i))
    out[str(save_tiny_convnext(tmp / "convnext", size=64))] = (rgb, "top1")
    out[str(save_tiny_vit(tmp / "vit", size=64))] = (rgb, "top1")
    return out


def bisect(brackets: dict, runs: dict, go, close) -> None:
    """Narrow each map's (not as close, as close) pair of counts to within 1/FINE of the upper one.

    The rungs alone flatter the default: a map first as close at 512 may be as close at 400, and its
    ratio is then 1.3× the rung's. One run serves every map whose pair holds its count; the error of
    Gauss–Legendre is taken to fall with the count between the two (a run that is not as close raises
    the lower end)."""
    while True:
        wide = {rid: (lo, hi) for rid, (lo, hi) in brackets.items() if hi - lo > max(1, hi // FINE)}
        if not wide:
            return
        lo, hi = max(wide.values(), key=lambda b: b[1] - b[0])
        m = (lo + hi) // 2
        runs[m] = go(["--steps", str(m)])
        for rid, (lo, hi) in brackets.items():
            if lo < m < hi:
                brackets[rid] = (lo, m) if close(m, rid) else (m, hi)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reference", type=int, default=None)
    ap.add_argument("--only", default="", help="models whose name holds one of these, comma-separated "
                                               "(shapes-seg, shapes-cls, convnext, vit, effb5)")
    ap.add_argument("--baselines", default="black,blur")
    ap.add_argument("--effb5-trained", type=int, default=0, metavar="STEPS")
    ap.add_argument("--first", type=int, default=7001, help="the built-in samples' first seed")
    ap.add_argument("--rungs", action="store_true", help="the ladder's rungs only: no bisection between them")
    ap.add_argument("--keep", type=Path, default=None, help="a folder keeping the fixed-node runs for the next call")
    args = ap.parse_args(argv)
    count = args.images or (2 if args.quick else 4)
    reference = args.reference or (1024 if args.quick else 2048)
    torch.set_num_threads(1)
    bounded, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec, (folder, target) in models(tmp, args.size, count, args.effb5_trained, args.first, args.keep).items():
            name = spec if spec.startswith("builtin:") else Path(spec).name
            if args.only and not any(o in name for o in args.only.split(",")):
                continue
            for baseline in args.baselines.split(","):
                run = iter(range(10 ** 6))

                def go(extra, _b=baseline, _s=spec, _f=folder, _t=target):
                    if args.keep and extra:     # a fixed count: the same models and images give the same run
                        kept = args.keep / f"{Path(_s).name}-{_b}-{args.size}px-s{args.first}x{count}-{extra[-1]}"
                        if not kept.is_dir():
                            attribute(_s, _f, _b, extra, tmp / "kept", _t)
                            shutil.move(tmp / "kept", kept)
                        return records(kept, f"attr/integrated_gradients/{_b}")
                    return attribute(_s, _f, _b, extra, tmp / f"out{next(run)}-{Path(_s).name}-{_b}", _t)

                ref = go(["--steps", str(reference)])
                default = go([])
                errors = {rid: rel(amap, ref[rid][0]) for rid, (amap, _) in default.items()}
                captum = go(["--steps", "50"])                     # Captum's default n_steps
                runs = {}

                def close(n, rid, _runs=runs, _ref=ref, _errors=errors):   # n fixed nodes as close as the default
                    return rel(_runs[n][rid][0], _ref[rid][0]) <= _errors[rid]

                for n in (n for n in LADDER if n < reference):     # up to the count as close as every default map
                    runs[n] = go(["--steps", str(n)])
                    if all(close(n, rid) for rid in default):
                        break
                brackets = {}                                      # map → (a count not as close, one as close)
                for rid in default:
                    need = min((n for n in runs if close(n, rid)), default=None)
                    if need:
                        brackets[rid] = (max((n for n in runs if n < need), default=0), need)
                if not args.rungs:
                    bisect(brackets, runs, go, close)
                for rid, (amap, info) in default.items():
                    err = errors[rid]
                    est = info["estimated_error"][0]
                    bounded.append(est >= err)
                    below, need = brackets.get(rid, (None, None))
                    ratio = info["seconds"] / runs[need][rid][1]["seconds"] if need else float("nan")
                    ratios.append(ratio)
                    points = f"{info['steps'] / need:.2f}" if need else "nan"
                    c_err, c_info = rel(captum[rid][0], ref[rid][0]), captum[rid][1]
                    print(f"{name:22} {baseline:5} {rid:6} default {info['steps']:4d} pts  error {err:.4f}  "
                          f"estimate {est:.4f}  |delta| {info['relative_delta'][0]:.4f}  "
                          f"GL as close: {need or '>' + str(max(runs)):>5} (not {below})  "
                          f"ratio: seconds {ratio:.2f}, points {points}  |  "
                          f"Captum's 50: error {c_err:.4f}, seconds ratio {info['seconds'] / c_info['seconds']:.2f}",
                          flush=True)
    print(f"estimate >= measured error on {np.mean(bounded):.0%} of {len(bounded)} maps (goal >= 95%); "
          f"time ratio median {np.nanmedian(ratios):.2f}, worst {np.nanmax(ratios):.2f} (goal <= 0.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
