"""Regenerate tests/data/render_reference.png, the stored figure that test_render compares against.

Run it only on purpose, after a deliberate change to how figures look
(`make reference-images`), and look at the new image before committing it: the
test exists to catch changes nobody meant to make.

The record is analytic (no random numbers) and the figure small (low dpi) so the
stored PNG stays a few kilobytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "render_reference.png"
OPTIONS = {"dpi": 40.0, "panel_size": 1.2}


def canonical_record():
    """A 48x48 segmentation record: a bright disc, its masks, one IG map and one Grad-CAM map."""
    from xaicli.io.record import Record

    h = w = 48
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    disc = ((yy - 20) ** 2 + (xx - 28) ** 2) < 100
    shade = (40 + 80 * xx / w + 40 * yy / h).astype(np.uint8)
    image = np.stack([shade, shade, shade], -1)
    image[disc] = (230, 200, 60)
    gt = disc.astype(np.uint8)
    pred = (((yy - 22) ** 2 + (xx - 26) ** 2) < 110).astype(np.uint8)
    inside = np.exp(-((yy - 20) ** 2 + (xx - 28) ** 2) / 60.0)
    against = np.exp(-((yy - 38) ** 2 + (xx - 10) ** 2) / 40.0)
    ig = np.stack([inside - 0.6 * against, 0.8 * inside - 0.4 * against, 0.5 * inside])[None] * 1e-3
    cam = (inside + 0.3 * np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 30.0))[None]
    target = [{"kind": "mask", "label": "blob", "index": 0}]

    rec = Record.new("ref", {"path": "ref.png", "sha256": "0" * 64, "shape": [h, w, 3], "dtype": "uint8"})
    rec.meta["task"] = "segmentation"
    rec.meta["model"] = {"spec": "builtin:shapes-seg", "sha256": "1" * 64, "arch": "test", "labels": ["blob"],
                         "format": "smp"}
    rec.meta["prediction"] = {"threshold": 0.5, "area_fraction": {"blob": float(pred.mean())}}
    rec.arrays.update({"image": image, "pred/mask": pred, "pred/probs": pred[None].astype(np.float32),
                       "gt/mask": gt})
    rec.add_map("attr/integrated_gradients/black", ig.astype(np.float32),
                {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
                 "targets": target, "steps": 32, "quadrature": "gausslegendre", "delta": [0.0012]})
    rec.add_map("cam/gradcam++/layer4", cam.astype(np.float32),
                {"kind": "cam", "method": "gradcam++", "layer": "layer4", "targets": target})
    return rec


def render_reference(path: Path) -> Path:
    """The standard panel of the canonical record, drawn with matplotlib's default style."""
    import matplotlib.style

    from xaicli.render import RenderOptions, jobs, save

    opts = RenderOptions(**OPTIONS).checked()
    with matplotlib.style.context("default"):
        (job,) = jobs(canonical_record(), opts)
        save(job.build(), path, opts)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE
    out.parent.mkdir(parents=True, exist_ok=True)
    print(render_reference(out))
