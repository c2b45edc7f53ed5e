"""The CUDA path, checked on a GPU host (CI has none): placement, precision, OOM retry, the CLI.

    python bench/check_cuda.py              # needs a CUDA GPU; about two minutes on one H200
    python bench/check_cuda.py --device cpu # the same comparisons CPU against CPU (a dry run)

1. Precision: IG (ours and Captum) in float32 on the GPU against ours in float64 on the
   CPU, same function, input, baseline, target and steps, for an smp U-Net++
   efficientnet-b5 at 256², a small HF ConvNeXt and a small HF ViT at 224², and the trained
   builtin:shapes-seg; with cuDNN's TF32 convolutions on (PyTorch's default) and off
   (xai's, `full_float32`). Prints max |float32 − float64| / max |float64| and the
   relative delta; with TF32 off the GPU's error must stay within 3× the CPU's float32
   error (or 1e-4). Float64 is the reference because float32 itself is off by up to 3e-3
   on some nets (max-pool, random init), where two float32 devices legitimately disagree.
2. Out of memory: the process is limited to a slice of the GPU
   (`torch.cuda.set_per_process_memory_fraction`), so the chunk chosen from free memory
   does not fit; the run must halve, retry and give the map of a small fixed chunk.
3. The 640×640, 30-step U-Net++ efficientnet-b5 case users wait minutes for: ours
   (the chunk xai picks, and fixed chunks) against Captum with its defaults, on the GPU.
4. The CLI with --device cuda: predict | attribute | cam | stats -m (deletion/insertion),
   the device in the record's history, and --device cuda:N past the last GPU as a
   one-line error.
5. Throughput (`--only throughput`, `--images N`, default 200): `xai attribute` over a folder
   of 640x640 PNG scans into -o DIR/ on U-Net++ efficientnet-b5, 30 steps, with the
   background reading and writing threads (default) and without (XAI_IO_THREADS=0):
   images per minute, GPU utilisation sampled by nvidia-smi every 0.2 s, and the pure
   compute time (the records' own `seconds` of the IG engine, summed) over the wall time
   after the model loaded. Goal: compute >= 90% of the wall time with the threads.

Prints what it measured and FAIL lines for what is wrong; exit 1 if any.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from xaicli.explain.chunking import sync  # noqa: E402 - after the path: waits for a CUDA device's queued kernels

FAILS: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILS.append(what)


def build_vit(folder: Path, size: int):
    import torch
    import transformers
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=size, patch_size=16, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                    intermediate_size=768, num_labels=10)
    ViTForImageClassification(cfg).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


class Problem:
    """One model on one device, with an image, a baseline and one target's logit weights."""

    def __init__(self, spec: str, device: str, image):
        import torch

        from xaicli.explain.targets import resolve_classification
        from xaicli.models.loader import load_model

        self.ad = load_model(spec, device=device)
        self.unit = self.ad.image_to_unit(image).contiguous()
        self.base = torch.zeros_like(self.unit)
        with torch.no_grad():
            logits = self.forward(self.unit)
        if self.ad.task == "segmentation":
            prob = torch.sigmoid(logits)[0, 0]
            self.w = (prob > prob.median()).to(logits.dtype)[None, None]         # (T=1, K=1, h, w)
        else:
            (t,) = resolve_classification(["top1"], self.ad.labels, torch.softmax(logits, 1)[0].cpu().numpy())
            self.w = t.weight(self.ad.num_classes, None, None)[None].to(self.unit.device)

    def forward(self, x):
        return self.ad.forward(self.ad.normalize(x))

    def double(self) -> "Problem":
        """The same problem in float64: the reference that float32 runs on any device are held to."""
        self.ad.module.double()
        self.unit, self.base, self.w = self.unit.double(), self.base.double(), self.w.double()
        return self

    def ours(self, steps: int, batch_size: int | None = None, planner=None):
        from xaicli.explain.integrated_gradients import integrated_gradients

        return integrated_gradients(self.forward, self.unit, self.base, self.w, steps=steps, batch_size=batch_size,
                                    planner=planner)

    def captum(self, steps: int, chunk: int | None = None):
        from captum.attr import IntegratedGradients

        w = self.w.to(self.unit.device)

        def score(x):
            return (self.forward(x) * w).flatten(1).sum(1)

        return IntegratedGradients(score).attribute(self.unit, self.base, n_steps=steps, internal_batch_size=chunk)


def precision(folder: Path, device: str) -> None:
    import numpy as np
    import torch

    from bench_ig import build_convnext, build_unetpp

    print("\n== 1. IG in float32 on", device, "against float64 on the CPU (max |diff| / max |map|; relative delta)")
    rng = np.random.default_rng(0)
    for name, build, size, steps in (("U-Net++ effb5", build_unetpp, 256, 16), ("ConvNeXt", build_convnext, 224, 32),
                                     ("ViT", build_vit, 224, 32), ("builtin:shapes-seg (trained)", None, 96, 32)):
        spec = str(build(folder / name.replace(" ", "_"), size)) if build else name.split()[0]
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        exact = Problem(spec, "cpu", image).double().ours(steps, batch_size=8).attributions[0]
        scale = float(exact.abs().max())

        def err(attr) -> float:
            return float((attr.cpu().double() - exact).abs().max()) / scale

        # float32's own error on this problem, on the CPU: ~1e-7 on the HF models, but 1e-4 to 3e-3 on
        # the max-pool shapes-seg (gates and pool winners flip with rounding along the path).
        cpu = Problem(spec, "cpu", image)
        ref = cpu.ours(steps, batch_size=8)
        cpu_err = err(ref.attributions[0])
        print(f"{name} at {size}², {steps} steps: CPU float32 relative delta {ref.relative_delta[0]:.2e}, "
              f"error {cpu_err:.1e}; chunk 1 vs 8 error {err(cpu.ours(steps, batch_size=1).attributions[0]):.1e}")
        gpu = Problem(spec, device, image)
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            gpu.ours(steps)                                                      # warm-up
            sync(gpu.unit.device)
            t0 = time.perf_counter()
            res = gpu.ours(steps)
            sync(gpu.unit.device)
            dt = time.perf_counter() - t0
            diff = err(res.attributions[0])
            print(f"  cudnn tf32 {'on ' if tf32 else 'off'}: ours {dt * 1000:7.1f} ms, chunk {res.batch_size}, "
                  f"error {diff:.1e}, relative delta {res.relative_delta[0]:.2e}; "
                  f"Captum error {err(gpu.captum(steps)[0]):.1e}", flush=True)
            if not tf32:                                                     # xai's setting: checked
                rd, cd = res.relative_delta[0], ref.relative_delta[0]
                check(rd <= 2 * cd + 1e-4, f"{name}: GPU relative delta {rd:.1e} near the CPU's {cd:.1e}")
                bound = max(1e-4, 3 * cpu_err)
                check(diff <= bound, f"{name}: GPU float32 map within {bound:.0e} of float64 ({diff:.1e})")
        torch.backends.cudnn.allow_tf32 = False                                 # xai's default on CUDA


def out_of_memory(folder: Path, device: str) -> None:
    import numpy as np
    import torch

    from bench_ig import build_unetpp
    from xaicli.explain.chunking import BatchPlanner, activation_bytes

    print("\n== 2. out of memory: the chunk chosen from free memory does not fit a capped process")
    dev = torch.device(device)
    spec = str(build_unetpp(folder / "oom", 512))
    image = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    p = Problem(spec, device, image)
    per = activation_bytes(p.forward, p.unit)
    fixed = p.ours(32, batch_size=2)
    torch.cuda.empty_cache()
    idx = torch.cuda.current_device()           # the fraction wants an index, not torch.device('cuda')
    total = torch.cuda.get_device_properties(idx).total_memory
    allow = torch.cuda.memory_allocated(idx) + 6 * 2 * per                  # room for about 6 samples
    torch.cuda.set_per_process_memory_fraction(allow / total, idx)
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logging.getLogger("xai").addHandler(handler)
    try:
        res = p.ours(32, planner=BatchPlanner(dev))
    finally:
        logging.getLogger("xai").removeHandler(handler)
        torch.cuda.set_per_process_memory_fraction(1.0, idx)
    diff = float((res.attributions[0] - fixed.attributions[0]).abs().max() / fixed.attributions[0].abs().max())
    print(f"  {per / 2**20:.0f} MiB saved per sample, process capped at {allow / 2**30:.1f} GiB; "
          f"retries: {warnings}; final chunk {res.batch_size}; diff to -b 2: {diff:.1e}")
    check(any("out of memory" in w for w in warnings), "an OOM was met and retried with half the chunk")
    # Other chunk sizes round differently (up to 2e-3 of the max on this random-init net, see 1.);
    # a chunk lost or counted twice in the retry would be off by the order of the map itself.
    check(diff <= 1e-2, f"the retried run equals the fixed-chunk run up to rounding ({diff:.1e})")
    rd, rf = res.relative_delta[0], fixed.relative_delta[0]
    print(f"  relative delta: retried {rd:.2e}, fixed chunk {rf:.2e}")
    check(rd <= 2 * rf + 1e-3, "completeness holds after the retry (no chunk lost or counted twice)")


def scan_640(folder: Path, device: str) -> None:
    import numpy as np
    import torch

    from bench_ig import build_unetpp

    print("\n== 3. U-Net++ efficientnet-b5, 640x640, 30 steps, predicted-mask target, on", device)
    spec = str(build_unetpp(folder / "scan", 640))
    image = np.random.default_rng(2).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    p = Problem(spec, device, image)
    from xaicli.explain.chunking import BatchPlanner

    planner = BatchPlanner(p.unit.device)       # kept across images, as `xai attribute` keeps it
    times, chunks = {}, {}
    chunk = {"captum": None}

    def captum():
        try:
            return p.captum(30, chunk["captum"])
        except torch.cuda.OutOfMemoryError:
            chunk["captum"] = 8
            print("  Captum's one pass does not fit: internal_batch_size=8")
            torch.cuda.empty_cache()
            return p.captum(30, 8)

    runs = {"ours, first image": lambda: p.ours(30), "ours, later images": lambda: p.ours(30, planner=planner),
            **{f"ours -b {b}": (lambda b=b: p.ours(30, batch_size=b)) for b in (10, 15, 30)}, "captum": captum}
    for name, fn in runs.items():
        out = fn()
        chunks[name] = getattr(out, "batch_size", None)
        best = float("inf")
        for _ in range(3):
            sync(p.unit.device)
            t0 = time.perf_counter()
            fn()
            sync(p.unit.device)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
        print(f"  {name}: {best:.3f} s, chunk {chunks[name]}, allocator peak {peak:.1f} GiB", flush=True)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
    first, later = times["ours, first image"], times["ours, later images"]
    print(f"  ours {first:.2f} s on a run's first image (measures its chunk), {later:.2f} s on later ones; "
          f"Captum default (one pass) {times['captum']:.2f} s; ratios {first / times['captum']:.2f}x, "
          f"{later / times['captum']:.2f}x (cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32})", flush=True)


def cli(folder: Path, device: str) -> None:
    print("\n== 4. the CLI with --device", device)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    xai = [sys.executable, "-m", "xaicli"]
    images = folder / "seg"
    subprocess.run([sys.executable, "-m", "xaicli.models.builtin.shapes", str(images), "--count", "3",
                    "--task", "segmentation"], check=True, env=env, capture_output=True)
    pipe = (f"{' '.join(xai)} predict -m builtin:shapes-seg --device {device} {images} "
            f"| {' '.join(xai)} attribute --device {device} --tolerance 0.01 "
            f"| {' '.join(xai)} cam --device {device} --method gradcam "
            f"| tee {folder / 'seg.tar'} "
            f"| {' '.join(xai)} stats -m builtin:shapes-seg --device {device} --steps 8")
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-o", "pipefail", "-c", pipe], env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    print(f"  pipeline exit {r.returncode} in {time.perf_counter() - t0:.1f} s, {len(rows)} stats rows; "
          f"stderr tail: {r.stderr.strip()[-300:]!r}")
    check(r.returncode == 0 and len(rows) >= 6, "predict | attribute | cam | stats -m on the device")
    if rows:
        keys = [k for k in rows[0] if "deletion" in k or "insertion" in k]
        print(f"  first row: {[(k, rows[0][k]) for k in keys]}")
        check(bool(keys) and all(rows[0][k] is not None for k in keys), "deletion/insertion computed")
    from xaicli.io.stream import read_tar

    with open(folder / "seg.tar", "rb") as f:
        recs = list(read_tar(f, "seg.tar"))
    devices = {h["command"]: h["device"] for h in recs[0].meta["history"]} if recs else {}
    print(f"  history devices: {devices}")
    check(bool(devices) and all(str(d).startswith(device.split(":")[0]) for d in devices.values()),
          "every command recorded the device it ran on")
    if device.startswith("cuda"):
        import torch

        bad = f"cuda:{torch.cuda.device_count()}"
        r = subprocess.run([*xai, "predict", "-m", "builtin:shapes-seg", "--device", bad, str(images)], env=env,
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        print(f"  --device {bad}: exit {r.returncode}, {lines}")
        check(r.returncode in (1, 2) and len(lines) == 1 and not r.stdout, f"--device {bad} is a one-line error")


def throughput(folder: Path, device: str, images: int = 200, size: int = 640, steps: int = 30) -> None:
    import numpy as np
    from PIL import Image

    from bench_ig import build_unetpp

    print(f"\n== 5. throughput: xai attribute over {images} scans of {size}x{size}, U-Net++ efficientnet-b5, "
          f"{steps} steps")
    spec = str(build_unetpp(folder / "tp-model", size))
    scans = folder / "tp-scans"
    scans.mkdir()
    rng = np.random.default_rng(5)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(scans / f"scan_{i:04d}.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for threads in ("1", "0"):
        out = folder / f"tp-out-{threads}"
        samples: list[float] = []
        sampler = None
        if device.startswith("cuda"):
            sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                        "-lms", "200"], stdout=subprocess.PIPE, text=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "xaicli", "-v", "attribute", "-m", spec, str(scans), "--steps", str(steps),
                            "--device", device, "-o", f"{out}/"], env={**env, "XAI_IO_THREADS": threads},
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if sampler is not None:
            sampler.terminate()
            samples = [float(v) for v in sampler.communicate()[0].split() if v.strip().replace(".", "").isdigit()]
        check(r.returncode == 0, f"attribute over {images} scans (threads {threads}): {r.stderr.strip()[-200:]}")
        loaded = [ln for ln in r.stderr.splitlines() if "loaded on" in ln]
        load_s = float(loaded[0].split(" in ")[-1].split()[0]) if loaded else 0.0
        from xaicli.io.record import Record

        compute = 0.0
        for f in sorted(out.glob("*.npz")):
            rec = Record.from_bytes(f.read_bytes(), str(f))
            compute += max(float(m.get("seconds") or 0) for m in rec.meta["maps"].values())
        busy = wall - load_s
        util = f", GPU utilisation mean {np.mean(samples):.0f}% (median {np.median(samples):.0f}%)" if samples else ""
        print(f"  threads {threads}: {images / wall * 60:.1f} images/min, wall {wall:.1f} s (model load {load_s:.1f} s), "
              f"compute {compute:.1f} s = {compute / busy:.0%} of the wall after loading{util}", flush=True)
        if threads == "1":
            check(compute >= 0.9 * busy, "reading and writing hidden behind the compute (>= 90% of the wall)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", choices=["precision", "oom", "scan", "cli", "throughput"], action="append")
    ap.add_argument("--images", type=int, default=200, help="scans for the throughput check")
    ap.add_argument("--tp-size", type=int, default=640, help="throughput: scan side (smaller for a CPU dry run)")
    ap.add_argument("--tp-steps", type=int, default=30, help="throughput: IG steps")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; try --device cpu for a dry run", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, {name}, cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
          f"matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}", flush=True)
    steps = {"precision": precision, "oom": out_of_memory, "scan": scan_640, "cli": cli,
             "throughput": lambda tmp, dev: throughput(tmp, dev, args.images, args.tp_size, args.tp_steps)}
    with tempfile.TemporaryDirectory() as tmp:
        for key, fn in steps.items():
            if args.only and key not in args.only:
                continue
            if key == "oom" and not args.device.startswith("cuda"):
                continue
            try:
                fn(Path(tmp), args.device)
            except Exception as exc:  # noqa: BLE001 - report and go on to the next check
                import traceback

                traceback.print_exc()
                check(False, f"{key}: {type(exc).__name__}: {exc}")
    print(f"\n{len(FAILS)} failed: {FAILS}" if FAILS else "\nall checks passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
