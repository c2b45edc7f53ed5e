"""Regenerate the stored figures that test_render compares against (tests/data/render_reference*.png).

Run it only on purpose, after a deliberate change to how figures look
(`make reference-images`), and look at the new images before committing them: the
test exists to catch changes nobody meant to make.

The records are analytic (no random numbers) and the figures small (low dpi) so the
stored PNGs stay a few kilobytes each:

- render_reference.png: the standard panel of one segmentation record (IG + Grad-CAM);
- render_reference_grid.png: the default grid of 3 CAM methods × 3 layers (3 × 3 + the image);
- render_reference_records.png: `--rows record --cols method`, 6 records × 2 methods (6 × 2);
- render_reference_records_1.png, _2.png: the same with `--max-rows 4` (4 + 2 rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REFERENCE = DATA / "render_reference.png"
OPTIONS = {"dpi": 40.0, "panel_size": 1.2}
H = W = 48
TARGET = [{"kind": "mask", "label": "blob", "index": 0}]


def _grid() -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[:H, :W].astype(np.float32)


def _bump(cy: float, cx: float, s: float) -> np.ndarray:
    yy, xx = _grid()
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s)


def _record(record_id: str, disc_y: float = 20, disc_x: float = 28):
    """A 48x48 segmentation record: a shaded background, a bright disc, its masks; no maps yet."""
    from xaicli.io.record import Record

    yy, xx = _grid()
    disc = ((yy - disc_y) ** 2 + (xx - disc_x) ** 2) < 100
    shade = (40 + 80 * xx / W + 40 * yy / H).astype(np.uint8)
    image = np.stack([shade, shade, shade], -1)
    image[disc] = (230, 200, 60)
    pred = (((yy - disc_y - 2) ** 2 + (xx - disc_x + 2) ** 2) < 110).astype(np.uint8)
    rec = Record.new(record_id, {"path": f"{record_id}.png", "sha256": "0" * 64, "shape": [H, W, 3],
                                 "dtype": "uint8"})
    rec.meta["task"] = "segmentation"
    rec.meta["model"] = {"spec": "builtin:shapes-seg", "sha256": "1" * 64, "arch": "test", "labels": ["blob"],
                         "format": "smp"}
    rec.meta["prediction"] = {"threshold": 0.5, "area_fraction": {"blob": float(pred.mean())}}
    rec.arrays.update({"image": image, "pred/mask": pred, "pred/probs": pred[None].astype(np.float32),
                       "gt/mask": disc.astype(np.uint8)})
    return rec


def _cam(rec, method: str, layer: str, cam: np.ndarray) -> None:
    rec.add_map(f"cam/{method}/{layer}", cam[None].astype(np.float32),
                {"kind": "cam", "method": method, "layer": layer, "targets": TARGET})


def canonical_record():
    """The standard panel's record: one IG map and one Grad-CAM map."""
    rec = _record("ref")
    inside, against = _bump(20, 28, 60.0), _bump(38, 10, 40.0)
    ig = np.stack([inside - 0.6 * against, 0.8 * inside - 0.4 * against, 0.5 * inside])[None] * 1e-3
    rec.add_map("attr/integrated_gradients/black", ig.astype(np.float32),
                {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
                 "targets": TARGET, "steps": 32, "quadrature": "gausslegendre", "delta": [0.0012]})
    _cam(rec, "gradcam++", "layer4", inside + 0.3 * _bump(8, 8, 30.0))
    return rec


def methods_by_layers_record():
    """3 CAM methods × 3 layers: the peak moves right with the layer, down with the method."""
    rec = _record("cams")
    for i, method in enumerate(("gradcam", "gradcam++", "layercam")):
        for j, layer in enumerate(("encoder_mid", "encoder_last", "decoder_last")):
            _cam(rec, method, layer, (i + 1) * _bump(12 + 10 * i, 12 + 10 * j, 40.0 + 20 * j))
    return rec


def scan_records(n: int = 6) -> list:
    """`n` scans, the disc moving across, each with IG (black baseline) and Grad-CAM at one layer."""
    out = []
    for k in range(n):
        cx = 12 + 24 * k / max(1, n - 1)
        rec = _record(f"scan_{k}", disc_y=24, disc_x=cx)
        ig = (_bump(24, cx, 50.0) - 0.5 * _bump(40, 48 - cx, 30.0)) * 1e-3 * (k + 1)
        rec.add_map("attr/integrated_gradients/black", np.stack([ig] * 3)[None].astype(np.float32),
                    {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
                     "targets": TARGET, "steps": 32, "delta": [0.001]})
        _cam(rec, "gradcam", "layer4", _bump(24, cx + 4, 80.0) + 0.2 * _bump(6, 42, 20.0))
        out.append(rec)
    return out


def figures() -> dict[str, tuple]:
    """file name → (how to make its jobs, options): every stored reference figure."""
    from xaicli.render import RenderOptions, jobs, multi_jobs

    records = {"rows": ("record",), "cols": ("method",), "layout": "grid"}
    return {
        "render_reference.png": (lambda o: jobs(canonical_record(), o), RenderOptions(**OPTIONS)),
        "render_reference_grid.png": (lambda o: jobs(methods_by_layers_record(), o),
                                      RenderOptions(**OPTIONS, layout="grid")),
        "render_reference_records.png": (lambda o: multi_jobs(scan_records(), o), RenderOptions(**OPTIONS, **records)),
        "render_reference_records_{part}.png": (lambda o: multi_jobs(scan_records(), o),
                                                RenderOptions(**OPTIONS, **records, max_rows=4)),
    }


def render_reference(name: str, folder: Path) -> list[Path]:
    """Draw the reference figure(s) `name` into `folder` with matplotlib's default style."""
    import matplotlib.style

    from xaicli.render import save

    make, opts = figures()[name]
    opts = opts.checked()
    paths = []
    with matplotlib.style.context("default"):
        for k, job in enumerate(make(opts), start=1):
            path = folder / name.format(part=k)
            save(job.build(), path, opts)
            paths.append(path)
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    out.mkdir(parents=True, exist_ok=True)
    for name in figures():
        for path in render_reference(name, out):
            print(path)
