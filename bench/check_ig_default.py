"""Is a plain `xai attribute` right? Completeness on the built-in models, and what it costs.

    python bench/check_ig_default.py [--count 20] [--model builtin:shapes-cls] [--baseline black] [--old]

For each built-in model and IG baseline, one `xai attribute` over `--count` generated
images with the default settings (no --steps, no --tolerance) and, with `--old`, one with
the former default of 32 fixed steps. Prints, per model × baseline, the worst stored
relative delta |Σ map − (S(x) − S(x'))| / |S(x) − S(x')| over images and targets, the
targets that stopped at --max-steps (their record says `converged: false`), the steps
used, and the cost per image: path points evaluated (all rounds) and CPU seconds. The
commands run in this process, with one torch thread, timed by CPU time, so the cost
does not depend on what else the machine runs (model loading included, startup not).
The check fails (exit 1) when a target exceeds the default tolerance without being
reported as not converged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {"builtin:shapes-seg": "segmentation", "builtin:shapes-cls": "classification"}
BASELINES = ("black", "zero", "white", "mean", "blur", "noise", "uniform")
TOLERANCE = 0.01


def metas(tar_path: Path) -> list[dict]:
    out = []
    with tarfile.open(tar_path) as tar:
        for m in (m for m in tar if m.name.endswith(".npz")):   # streams hold start and end members too
            with np.load(tar.extractfile(m), allow_pickle=False) as z:
                out.append(json.loads(str(z["meta"][()])))
    return out


def run(model: str, images: Path, baseline: str, extra: list[str], out: Path) -> tuple[list[dict], float]:
    """The records' meta, and the CPU seconds of the command."""
    from xaicli.cli.app import run as xai

    t0 = time.process_time()
    code = xai(["-q", "attribute", "-m", model, str(images), "-B", baseline, *extra, "-o", str(out)])
    seconds = time.process_time() - t0
    if code != 0:
        raise SystemExit(f"xai attribute -B {baseline} {' '.join(extra)} failed with exit {code}")
    return metas(out), seconds


def summary(records: list[dict], seconds: float, baseline: str) -> dict:
    rel, capped, steps, points, bad = [], 0, [], [], 0
    for meta in records:
        info = meta["maps"][f"attr/integrated_gradients/{baseline}"]
        points.append(info["steps_evaluated"] / info["baseline_samples"])
        conv = info["converged"] or [None] * len(info["relative_delta"])
        for r, c, s in zip(info["relative_delta"], conv, info["target_steps"]):
            r = float("inf") if r is None else r
            rel.append(r)
            steps.append(s)
            capped += c is False
            bad += r > TOLERANCE and c is not False
    return {"worst": max(rel), "median": float(np.median(rel)), "capped": capped, "targets": len(rel),
            "unreported": bad, "steps": (min(steps), float(np.median(steps)), max(steps)),
            "points": float(np.mean(points)), "s_per_image": seconds / len(records)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--model", action="append", choices=list(MODELS))
    ap.add_argument("--baseline", action="append", choices=BASELINES)
    ap.add_argument("--old", action="store_true", help="also run the former default, 32 fixed steps")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from xaicli.models.builtin.shapes import write_samples

    torch.set_num_threads(1)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.model or list(MODELS):
            images = tmp / MODELS[model]
            write_samples(images, args.count, MODELS[model])
            run(model, images, "black", ["--steps", "2"], tmp / "warm.tar")    # imports and first-call set-up
            for baseline in args.baseline or BASELINES:
                new = summary(*run(model, images, baseline, [], tmp / "new.tar"), baseline)
                failed += new["unreported"]
                line = (f"{model:19} {baseline:8} default: worst rel. delta {new['worst']:.2e} (median "
                        f"{new['median']:.1e}), capped {new['capped']}/{new['targets']}, steps min/median/max "
                        "%d/%g/%d, %.0f points, %.3f CPU s/image" % (*new["steps"], new["points"],
                                                                    new["s_per_image"]))
                if args.old:
                    old = summary(*run(model, images, baseline, ["--steps", "32"], tmp / "old.tar"), baseline)
                    line += (f" | 32 fixed: worst {old['worst']:.2e}, {old['s_per_image']:.3f} CPU s/image; "
                             f"default/old: points {new['points'] / old['points']:.2f}, "
                             f"CPU {new['s_per_image'] / old['s_per_image']:.2f}")
                print(line, flush=True)
    print("FAIL: targets above the tolerance without converged=false: %d" % failed if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
