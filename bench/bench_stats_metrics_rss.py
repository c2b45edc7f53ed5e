"""Peak memory of `xai stats -m MODEL --metrics faithfulness` over 20 vs 200 records: every
model metric streams (one record's perturbed images at a time, one batch of them on the
model), so the ratio of the peaks should stay near 1 (goal <= 1.1).

    python bench/bench_stats_metrics_rss.py [--small 20] [--large 200] [--metrics faithfulness]
                                            [--extra '--samples 4 --subset-size 4096 --road-percentiles 50 --steps 4']

The records (Grad-CAM maps of the built-in classifier) are made once; each stats run is
its own process and its peak resident set size comes from wait4(2) (ru_maxrss).
`--extra` lowers the work per record (not the memory pattern) to keep the run short.
Timings and sizes are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stream_rss import GOAL, image_sets, xai  # noqa: E402  (the same goal and entry point as the pipe benchmark)


def make_records(folder: Path, model: str, env: dict) -> Path:
    out = folder.with_suffix(".tar")
    subprocess.run([*xai(), "-q", "cam", "-m", model, "-M", "gradcam", str(folder), "-o", str(out)], check=True,
                   env=env)
    return out


def run_stats(records: Path, args, env: dict) -> dict:
    t0 = time.perf_counter()
    cmd = [*xai(), "-q", "stats", str(records), "-m", args.model, "--device", "cpu", "--metrics", args.metrics,
           *shlex.split(args.extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    lines = sum(1 for _ in proc.stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed")
    return {"seconds": time.perf_counter() - t0, "lines": lines, "rss": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--metrics", default="faithfulness")
    ap.add_argument("--extra", default="--samples 4 --subset-size 4096 --road-percentiles 50 --steps 4")
    ap.add_argument("-m", "--model", default="builtin:shapes-cls")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="xai-bench-") as tmp:
        small, large = image_sets(Path(tmp), args.small, args.large, "classification")
        results = {n: run_stats(make_records(folder, args.model, env), args, env)
                   for n, folder in ((args.small, small), (args.large, large))}
    print(f"xai stats RECORDS -m {args.model} --metrics {args.metrics} {args.extra}   (peak RSS)")
    print(f"{'records':>8} {'seconds':>8} {'rows':>6} {'peak MiB':>9}")
    for n, r in results.items():
        print(f"{n:>8} {r['seconds']:>8.1f} {r['lines']:>6} {r['rss']:>9.1f}")
    ratio = results[args.large]["rss"] / results[args.small]["rss"]
    print(f"peak RSS ratio {args.large}/{args.small}: {ratio:.3f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
