"""Peak memory of `xai attribute ... | xai stats` over 20 vs 200 images: streaming means
constant memory, so the ratio of the peaks should stay near 1 (goal <= 1.1).

    python bench/bench_stream_rss.py [--small 20] [--large 200] [--steps 4] [-m builtin:shapes-seg]

Each run is a real shell-style pipe of two processes; the peak resident set size of each
comes from wait4(2) (ru_maxrss). Timings and sizes are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.1


def xai() -> list[str]:
    script = Path(sys.executable).with_name("xai")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xaicli"]


def make_images(folder: Path, count: int, task: str = "segmentation") -> None:
    subprocess.run([sys.executable, "-m", "xaicli.models.builtin.shapes", str(folder), "--count", str(count),
                    "--task", task], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(folder / "masks", ignore_errors=True)


def image_sets(tmp: Path, small: int, large: int, task: str = "segmentation") -> tuple[Path, Path]:
    """A folder of `large` demo images and one of the first `small` of them (hard links)."""
    small_dir, large_dir = tmp / "small", tmp / "large"
    make_images(large_dir, large, task)
    small_dir.mkdir()
    for p in sorted(large_dir.glob("*.png"))[:small]:
        os.link(p, small_dir / p.name)
    return small_dir, large_dir


def pipeline(images: Path, model: str, steps: int, env: dict) -> dict:
    """attribute | stats; returns wall time, peak RSS (MiB) of each, and the stats line count."""
    t0 = time.perf_counter()
    producer = subprocess.Popen([*xai(), "-q", "attribute", "-m", model, str(images), "--steps", str(steps)],
                                stdout=subprocess.PIPE, env=env)
    consumer = subprocess.Popen([*xai(), "-q", "stats"], stdin=producer.stdout, stdout=subprocess.PIPE, env=env)
    producer.stdout.close()
    lines = sum(1 for _ in consumer.stdout)
    peaks = {}
    for name, proc in (("attribute", producer), ("stats", consumer)):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"xai {name} failed with exit {proc.returncode}")
        peaks[name] = usage.ru_maxrss / 1024  # KiB on Linux
    return {"seconds": time.perf_counter() - t0, "lines": lines, **peaks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--steps", type=int, default=4, help="IG steps (the work per image, not the memory)")
    ap.add_argument("-m", "--model", default="builtin:shapes-seg")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="xai-bench-") as tmp:
        small, large = image_sets(Path(tmp), args.small, args.large)
        results = {n: pipeline(folder, args.model, args.steps, env)
                   for n, folder in ((args.small, small), (args.large, large))}
    print(f"xai attribute -m {args.model} --steps {args.steps} IMAGES | xai stats   (peak RSS per process)")
    print(f"{'images':>7} {'seconds':>8} {'stats rows':>10} {'attribute MiB':>14} {'stats MiB':>10}")
    for n, r in results.items():
        print(f"{n:>7} {r['seconds']:>8.1f} {r['lines']:>10} {r['attribute']:>14.1f} {r['stats']:>10.1f}")
    a = results[args.large]["attribute"] / results[args.small]["attribute"]
    s = results[args.large]["stats"] / results[args.small]["stats"]
    verdict = "met" if max(a, s) <= GOAL else "NOT met"
    print(f"peak RSS ratio {args.large}/{args.small}: attribute {a:.3f}, stats {s:.3f} (goal <= {GOAL}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
