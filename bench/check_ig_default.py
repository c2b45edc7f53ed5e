"""Is a plain `xai attribute` right? Completeness on the built-in models, and what it costs.

    python bench/check_ig_default.py [--count 20] [--model builtin:shapes-cls] [--baseline black] [--old]

For each built-in model and IG baseline, one `xai attribute` over `--count` generated
images with the default settings (no --steps, no --tolerance) and, with `--old`, one with
the former default of 32 fixed steps. Prints, per model × baseline, the worst stored
relative delta |Σ map − (S(x) − S(x'))| / |S(x) − S(x')| over images and targets, the
targets that stopped at --max-steps (their record says `converged: false`), the steps
used, and the median seconds per image (the records' own `history` time: reading,
prediction, IG and storing, without the process start; the median leaves out the first
image's chunk tuning). The check fails (exit 1) when a target
exceeds the default tolerance without being reported as not converged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

MODELS = {"builtin:shapes-seg": "segmentation", "builtin:shapes-cls": "classification"}
BASELINES = ("black", "zero", "white", "mean", "blur", "noise", "uniform")
TOLERANCE = 0.01


def xai() -> list[str]:
    script = Path(sys.executable).with_name("xai")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xaicli"]


def metas(tar_path: Path) -> list[dict]:
    out = []
    with tarfile.open(tar_path) as tar:
        for m in tar:
            with np.load(tar.extractfile(m), allow_pickle=False) as z:
                out.append(json.loads(str(z["meta"][()])))
    return out


def run(model: str, images: Path, baseline: str, extra: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([*xai(), "-q", "attribute", "-m", model, str(images), "-B", baseline, *extra, "-o", str(out)],
                   check=True, env=env)
    return metas(out)


def summary(records: list[dict], baseline: str) -> dict:
    rel, capped, steps, secs, bad = [], 0, [], [], 0
    for meta in records:
        info = meta["maps"][f"attr/integrated_gradients/{baseline}"]
        secs.append(meta["history"][-1]["seconds"])
        conv = info["converged"] or [None] * len(info["relative_delta"])
        for r, c, s in zip(info["relative_delta"], conv, info["target_steps"]):
            r = float("inf") if r is None else r
            rel.append(r)
            steps.append(s)
            capped += c is False
            bad += r > TOLERANCE and c is not False
    return {"worst": max(rel), "median": float(np.median(rel)), "capped": capped, "targets": len(rel),
            "unreported": bad, "steps": (min(steps), float(np.median(steps)), max(steps)),
            "s_per_image": float(np.median(secs))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--model", action="append", choices=list(MODELS))
    ap.add_argument("--baseline", action="append", choices=BASELINES)
    ap.add_argument("--old", action="store_true", help="also time the former default, 32 fixed steps")
    args = ap.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.model or list(MODELS):
            task = MODELS[model]
            images = tmp / task
            subprocess.run([sys.executable, "-m", "xaicli.models.builtin.shapes", str(images), "--count",
                            str(args.count), "--task", task], check=True, stdout=subprocess.DEVNULL)
            for baseline in args.baseline or BASELINES:
                new = summary(run(model, images, baseline, [], tmp / "new.tar"), baseline)
                failed += new["unreported"]
                line = (f"{model:19} {baseline:8} default: worst rel. delta {new['worst']:.2e} (median "
                        f"{new['median']:.1e}), capped {new['capped']}/{new['targets']}, steps min/median/max "
                        "%d/%g/%d, %.3f s/image" % (*new["steps"], new["s_per_image"]))
                if args.old:
                    old = summary(run(model, images, baseline, ["--steps", "32"], tmp / "old.tar"), baseline)
                    line += (f" | 32 fixed: worst {old['worst']:.2e}, {old['s_per_image']:.3f} s/image, "
                             f"ratio {new['s_per_image'] / old['s_per_image']:.2f}")
                print(line, flush=True)
    print("FAIL: targets above the tolerance without converged=false: %d" % failed if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
