"""Benchmarks of `xai cam` (issue #4): ScoreCAM speed, EigenCAM memory, pipeline overhead.

    python bench/bench_cam.py            # U-Net++ efficientnet-b5 at 256x256 (grad-cam's ScoreCAM: minutes)
    python bench/bench_cam.py --quick    # U-Net++ efficientnet-b0 at 128x128 (a few minutes)
    python bench/bench_cam.py --only scorecam,eigencam,overhead [--exact]

Prints one line per measurement and the ratios the issue asks for:

- scorecam: grad-cam's ScoreCAM (its default, 16 masked inputs per pass) against ours
  (`--scorecam-screen`, the default where bfloat16 is fast: CUDA, AMX CPUs; --exact adds
  our float32 scoring of every channel, the default elsewhere) on
  `encoder_last`, same input and target; speed-up and Pearson correlation of the
  min-max scaled maps (must be >= 5x at >= 0.99).
- eigencam: EigenCAM on `decoder_last` in a fresh process; its peak RSS (must be
  < 2 GB; grad-cam's full SVD needs an (h·w)² matrix: 16 GiB in float32 at 256²).
- overhead: Grad-CAM on `decoder_last`, our engine against a direct grad-cam call on
  the same input and target, and the whole `xai cam` command per image (reading the
  PNG, predicting, writing the record) against the direct call, process start, imports
  and model loading excluded (the marginal time per image of a 1-image and a
  6-image run). Must be <= 1.05x.

Model weights are random (no network): the timings depend on the architecture and
input size, not on the weights. Runs on the CPU unless --device says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scan(size: int):
    """The built-in segmentation sample 0, resized to size x size (uint8, gray)."""
    import numpy as np
    import torch

    from xaicli.models.builtin.shapes import make_sample

    img, _, _ = make_sample(0, "segmentation")
    return np.asarray(torch.nn.functional.interpolate(torch.from_numpy(img)[None, None].float(), size=(size, size),
                                                      mode="bilinear")[0, 0].round().clamp(0, 255).byte())


def build(encoder: str, size: int, device: str = "cpu", arch: str = "unetplusplus"):
    """(adapter, image, targets) for a random-weight smp model (U-Net++; `arch` "unet": Unet) and a
    synthetic scan at `size`."""
    import segmentation_models_pytorch as smp
    import torch

    from xaicli.explain.targets import Target
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    torch.manual_seed(0)
    model = {"unetplusplus": smp.UnetPlusPlus, "unet": smp.Unet}[arch](encoder_name=encoder, encoder_weights=None,
                                                                       classes=1).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ad = ModelAdapter(LogitsModule(model), "segmentation", ["blob"],
                      Preprocessing(channels=3, size=(size, size), multiple=32), torch.device(device),
                      {"spec": f"bench:{arch}-{encoder}", "sha256": "0"})
    ad.net.to(device)
    img = scan(size)
    with torch.no_grad():
        logits = ad.forward(ad.prepare(img))[0, 0]
    mask = (logits > logits.median()).cpu().numpy()          # random weights: the upper half of the logits
    return ad, img, [Target("mask", 0, "blob", mask, {"region": "bench"})]


def norm(m):
    import numpy as np

    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def pearson(a, b) -> float:
    import numpy as np

    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def layer(ad, name: str, size: int):
    from xaicli.models.layers import layer_table

    table = layer_table(ad, (size, size))
    return table.resolve([name])[0], table


def gradcam_direct(cls, ad, la, img, targets, **attrs):
    """A direct pytorch_grad_cam call: (map, seconds)."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from xaicli.explain.cam import release_gradcam

    x = ad.prepare(img)
    gc_targets = [SemanticSegmentationTarget(t.index, t.mask.astype("float32")) for t in targets]
    cam = cls(ad.net, [la.module])
    for k, v in attrs.items():
        setattr(cam, k, v)
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            out = cam(x.detach().clone().requires_grad_(True), gc_targets)
        return out[0], time.perf_counter() - t0
    finally:
        release_gradcam(cam)


def ours(ad, layers, methods, img, targets, **kw):
    from xaicli.explain.cam import CamEngine

    eng = CamEngine(ad, layers, methods, **kw)
    t0 = time.perf_counter()
    maps = eng.explain(img, targets)
    return maps, time.perf_counter() - t0, eng


def bench_scorecam(args) -> dict:
    from pytorch_grad_cam import ScoreCAM

    ad, img, targets = build(args.encoder, args.size, args.device)
    la, table = layer(ad, "encoder_last", args.size)
    print(f"scorecam: {args.encoder} U-Net++ at {args.size}x{args.size}, encoder_last = {la.path} "
          f"{tuple(la.shape)}", flush=True)
    cache = Path(args.reference_cache) if args.reference_cache else None
    key = f"{args.encoder}-{args.size}-{args.device}"
    if cache is not None and cache.exists() and json.loads(cache.with_suffix(".json").read_text())["key"] == key:
        import numpy as np

        ref = np.load(cache)
        t_ref = json.loads(cache.with_suffix(".json").read_text())["seconds"]
        print(f"  grad-cam ScoreCAM (batch 16)      {t_ref:8.1f} s   (from {cache})", flush=True)
    else:
        ref, t_ref = gradcam_direct(ScoreCAM, ad, la, img, targets, batch_size=16)
        print(f"  grad-cam ScoreCAM (batch 16)      {t_ref:8.1f} s", flush=True)
        if cache is not None:
            import numpy as np

            np.save(cache, ref)
            cache.with_suffix(".json").write_text(json.dumps({"key": key, "seconds": t_ref}))
    res = {"grad_cam_s": t_ref}
    # the screen asked for by name: the default depends on the hardware (scorecam.screens_by_default)
    maps, t_ours, eng = ours(ad, [la], ["scorecam"], img, targets, largest_bytes=table.largest_bytes,
                             scorecam_exact=False)
    m = maps[0]
    r = pearson(norm(m.values[0]), ref)
    info = m.info.get("scorecam", {})
    print(f"  xai scorecam --scorecam-screen    {t_ours:8.1f} s   {t_ref / t_ours:5.1f}x faster   "
          f"Pearson {r:.5f}   max|diff| {abs(norm(m.values[0]) - ref).max():.2e}   "
          f"exact channels {info.get('exact_channels')}/{info.get('channels')}, passes {info.get('passes')}",
          flush=True)
    res.update({"screened_s": t_ours, "screened_speedup": t_ref / t_ours, "screened_pearson": r,
                "exact_channels": info.get("exact_channels"), "channels": info.get("channels")})
    if args.exact:
        maps, t_ex, _ = ours(ad, [la], ["scorecam"], img, targets, largest_bytes=table.largest_bytes,
                             scorecam_exact=True)
        r = pearson(norm(maps[0].values[0]), ref)
        print(f"  xai scorecam --scorecam-exact     {t_ex:8.1f} s   {t_ref / t_ex:5.1f}x faster   "
              f"Pearson {r:.5f}", flush=True)
        res.update({"exact_s": t_ex, "exact_speedup": t_ref / t_ex, "exact_pearson": r})
    return res


def bench_eigencam(args) -> dict:
    cmd = [sys.executable, __file__, "--child-eigencam", "--encoder", args.encoder, "--size", str(args.size),
           "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n = res["positions"]
    print(f"eigencam: decoder_last {res['shape']} in a fresh process: {res['seconds']:.2f} s, peak RSS "
          f"{res['peak_rss_mb']:.0f} MB (< 2048: {'yes' if res['peak_rss_mb'] < 2048 else 'NO'}); grad-cam's full "
          f"SVD would allocate U of {n}x{n} float32 = {n * n * 4 / 2**30:.1f} GiB", flush=True)
    return res


def child_eigencam(args) -> None:
    ad, img, targets = build(args.encoder, args.size, args.device)
    la, table = layer(ad, "decoder_last", args.size)
    maps, seconds, _ = ours(ad, [la], ["eigencam"], img, targets)
    assert maps[0].values.shape == (1, args.size, args.size)
    peak = _peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "shape": list(la.shape),
                      "positions": la.shape[-1] * la.shape[-2]}))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss would do, except that Linux carries the
    parent's peak over exec into a child's ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_overhead(args) -> dict:
    import statistics

    from pytorch_grad_cam import GradCAM

    ad, img, targets = build(args.encoder, args.size, args.device)
    la, table = layer(ad, "decoder_last", args.size)
    direct, engine = [], []
    for _ in range(args.reps):
        direct.append(gradcam_direct(GradCAM, ad, la, img, targets)[1])
        engine.append(ours(ad, [la], ["gradcam"], img, targets)[1])
    d, e = statistics.median(direct), statistics.median(engine)
    print(f"overhead: Grad-CAM on decoder_last {tuple(la.shape)}, median of {args.reps}: direct grad-cam "
          f"{d:.3f} s, xai engine {e:.3f} s -> {e / d:.3f}x", flush=True)
    res = {"direct_s": d, "engine_s": e, "engine_ratio": e / d}
    cli = _cli_per_image(args, ad, img)
    print(f"overhead: xai cam per image (read PNG, predict, Grad-CAM, write record; startup excluded) "
          f"{cli:.3f} s -> {cli / d:.3f}x the direct call", flush=True)
    res.update({"cli_per_image_s": cli, "cli_ratio": cli / d})
    return res


def _cli_per_image(args, ad, img) -> float:
    """Marginal seconds per image of `xai cam` run in-process: (t(6 images) - t(1 image)) / 5."""
    import contextlib as cl

    import imageio.v3 as iio

    from xaicli.cli import app as app_module

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "model"
        with cl.redirect_stdout(io.StringIO()):
            ad.module.save_pretrained(model_dir)
        (model_dir / "xai.json").write_text(json.dumps({"size": [args.size, args.size]}))
        paths = []
        for i in range(6):
            p = tmp / f"img{i}.png"
            iio.imwrite(p, img)
            paths.append(str(p))

        def run(n: int) -> float:
            out = tmp / f"out{n}.tar"
            argv = ["cam", "-m", str(model_dir), *paths[:n], "--layer", "decoder_last", "--device", args.device,
                    "-o", str(out), "--target", "all-pixels"]
            t0 = time.perf_counter()
            code = app_module.run(argv)
            assert code == 0, code
            return time.perf_counter() - t0

        run(1)                          # warm caches (imports inside the command, allocator)
        ones = [run(1) for _ in range(2)]
        sixes = [run(6) for _ in range(2)]
        return (min(sixes) - min(ones)) / 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="efficientnet-b0 encoder at 128x128")
    ap.add_argument("--only", default="scorecam,eigencam,overhead")
    ap.add_argument("--exact", action="store_true", help="also time ScoreCAM scoring every channel in float32")
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reference-cache", default=None, metavar="FILE.npy",
                    help="keep grad-cam's ScoreCAM map and time here and reuse them (same encoder, size, device)")
    ap.add_argument("--child-eigencam", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.encoder = args.encoder or ("efficientnet-b0" if args.quick else "efficientnet-b5")
    args.size = args.size or (128 if args.quick else 256)
    if args.child_eigencam:
        child_eigencam(args)
        return
    import torch

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    results = {}
    for part in args.only.split(","):
        results[part] = {"scorecam": bench_scorecam, "eigencam": bench_eigencam, "overhead": bench_overhead}[part](args)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
