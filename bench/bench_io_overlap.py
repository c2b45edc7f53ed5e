"""Reading ahead and writing behind (xaicli/io/background.py) on this host: does it slow a run?

    python bench/bench_io_overlap.py            # 32 images of 384x384, 3 repetitions
    python bench/bench_io_overlap.py --quick    # 12 images, 1 repetition

Whole `xai predict` and `xai attribute` processes over a folder of PNG scans into `-o DIR/`,
with the background threads (`XAI_IO_THREADS=1`) and without (`0`, the CPU's default), interleaved;
each time is the minimum wall time over the repetitions. On a GPU host the threads hide
decoding and writing behind the device's work (bench/check_cuda.py measures that); on a
CPU they compete with the model for the same cores: measured 1.23x slower for attribute on
2 cores, which is why the commands run inline on a CPU unless XAI_IO_THREADS=1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_scans(folder: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 8]
        img = 60 + 40 * rng.random((size, size)) + 120 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"scan_{i:03d}.png")


def run(args: list[str], threads: bool, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process)."""
    import resource

    env = {**os.environ, "XAI_IO_THREADS": "1" if threads else "0", "HF_HUB_OFFLINE": "1"}
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xaicli", "-q", *args, "-o", f"{out}/"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    count = 12 if args.quick else 32
    with tempfile.TemporaryDirectory() as tmp:
        scans = Path(tmp) / "scans"
        make_scans(scans, count, 384)
        cases = {"predict": ["predict", "-m", "builtin:shapes-seg", str(scans)],
                 "attribute": ["attribute", "-m", "builtin:shapes-seg", str(scans), "--steps", "4", "-b", "4"]}
        print(f"# {count} PNG scans of 384x384, builtin:shapes-seg, min of {reps}; load average "
              f"{os.getloadavg()[0]:.1f} (wall times are only meaningful on an idle machine)")
        worst = 0.0
        for name, cmd in cases.items():
            wall = {True: float("inf"), False: float("inf")}
            cpu = dict(wall)
            for _ in range(reps):
                for threads in (False, True):
                    w, c = run(cmd, threads, Path(tmp) / "out")
                    wall[threads], cpu[threads] = min(wall[threads], w), min(cpu[threads], c)
            ratio = wall[True] / wall[False]
            worst = max(worst, ratio)
            print(f"{name:10s} wall: inline {wall[False]:6.2f} s, threads {wall[True]:6.2f} s, ratio {ratio:5.2f} "
                  f"(threads pay here only if <= 1.05)   CPU: {cpu[False]:6.2f} s, {cpu[True]:6.2f} s, ratio {cpu[True] / cpu[False]:5.2f}")
        print(f"worst wall ratio {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
