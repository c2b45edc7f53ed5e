"""Wall time of `xai --help` against a bare interpreter start (`python -c pass`).

    python bench/bench_help.py [-n 15]

Runs each command N times in a fresh process and prints the medians: `xai --help`, a
subcommand completion (`xai pre<TAB>`) and an option-value completion
(`xai attribute --baseline b<TAB>`), each against the goal of 0.25 s, and what xai adds to
a bare interpreter start. Timings are printed, never asserted (tests stay unflaky).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 0.25


def xai_command() -> list[str]:
    script = Path(sys.executable).with_name("xai")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xaicli"]


def median_wall(cmd: list[str], n: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=15, help="runs per command (median taken)")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    xai = xai_command()
    subprocess.run([*xai, "--help"], stdout=subprocess.DEVNULL, env=env, check=True)  # warm the file cache
    ref = median_wall([sys.executable, "-c", "pass"], args.runs, env)
    helps = median_wall([*xai, "--help"], args.runs, env)
    comp_env = {**env, "_XAI_COMPLETE": "complete_bash", "COMP_WORDS": "xai pre", "COMP_CWORD": "1"}
    comp = median_wall(xai, args.runs, comp_env)
    opt_env = {**env, "_XAI_COMPLETE": "complete_bash", "COMP_WORDS": "xai attribute --baseline b",
               "COMP_CWORD": "3"}
    opt = median_wall(xai, args.runs, opt_env)

    def verdict(t: float) -> str:
        return "met" if t <= GOAL_S else "NOT met"

    print(f"python -c pass                          {ref:.3f} s  (median of {args.runs})")
    print(f"xai --help                              {helps:.3f} s  (goal <= {GOAL_S:.2f} s: {verdict(helps)})")
    print(f"TAB: xai pre<TAB>                       {comp:.3f} s  (goal <= {GOAL_S:.2f} s: {verdict(comp)})")
    print(f"TAB: xai attribute --baseline b<TAB>    {opt:.3f} s  (goal <= {GOAL_S:.2f} s: {verdict(opt)})")
    print(f"xai's own share (minus python -c pass): --help {helps - ref:+.3f} s, TAB {comp - ref:+.3f} s, "
          f"option TAB {opt - ref:+.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
