"""Synthetic images with a known answer: the demo data and the test oracle.

Pure numpy, seeded: `make_sample(seed, task)` returns (image, evidence_mask, label).
For segmentation the evidence is the blob mask (the target itself); for
classification it is the object's pixels: its colour decides the class (its shape,
circle, square or cross, is random), and the background is gray noise that carries
no class information. Training draws the background at a random level and contrast
(`vary_background`) so the classifier cannot lean on it; demo and test images keep
level 90.
"""

from __future__ import annotations

import numpy as np

SEG_SIZE = 96
CLS_SIZE = 64
CLS_LABELS = ("red", "green", "blue")
SHAPES = ("circle", "square", "cross")
SEG_LABELS = ("blob",)


def make_sample(seed: int, task: str = "segmentation", vary_background: bool = False):
    rng = np.random.default_rng(seed)
    if task == "segmentation":
        return _seg_sample(rng)
    if task == "classification":
        img, mask, label = _cls_sample(rng)
        return (_relevel(img, mask, rng) if vary_background else img), mask, label
    raise ValueError(f"unknown task {task!r}")


def _noise(rng, shape, level: float, spread: float) -> np.ndarray:
    return rng.normal(level, spread, shape)


def _seg_sample(rng):
    """Gray ultrasound-like image: speckle background, 1-3 bright ellipses (the mask)."""
    n = SEG_SIZE
    yy, xx = np.mgrid[0:n, 0:n]
    img = _noise(rng, (n, n), 70, 22)
    mask = np.zeros((n, n), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(12, n - 12, 2)
        ry, rx = rng.uniform(5, 13, 2)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img[mask] += rng.uniform(90, 140)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img, mask.astype(np.uint8), 0


def _cls_sample(rng):
    """RGB image: gray noise background and one object whose colour is the label."""
    n = CLS_SIZE
    label = int(rng.integers(0, len(CLS_LABELS)))
    shape = int(rng.integers(0, len(SHAPES)))
    yy, xx = np.mgrid[0:n, 0:n]
    cy, cx = rng.uniform(16, n - 16, 2)
    r = rng.uniform(8, 13)
    if shape == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif shape == 1:
        mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    else:
        w = r * 0.35
        mask = ((np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= w)) | ((np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= w))
    img = _noise(rng, (n, n), 90, 25)[..., None].repeat(3, axis=2) + rng.normal(0, 6, (n, n, 3))
    colour = rng.uniform(40, 100, 3)
    colour[label] = rng.uniform(170, 240)
    img[mask] = colour + rng.normal(0, 10, (int(mask.sum()), 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img, mask.astype(np.uint8), label


def _relevel(img: np.ndarray, mask: np.ndarray, rng) -> np.ndarray:
    """Move the background to a random gray level (30-170) and contrast (x0.3-1.6)."""
    level, spread = rng.uniform(30, 170), rng.uniform(0.3, 1.6)
    f = img.astype(float)
    bg = mask == 0
    f[bg] = level + (f[bg] - 90) * spread
    return np.clip(f, 0, 255).astype(np.uint8)


def write_samples(folder, count: int, task: str, start: int = 0) -> list:
    """Write `count` PNGs (and their masks under masks/) for the demo; returns image paths."""
    from pathlib import Path

    import imageio.v3 as iio

    folder = Path(folder)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        img, mask, label = make_sample(i, task)
        name = f"{task[:3]}_{i:03d}" + (f"_{CLS_LABELS[label]}" if task == "classification" else "")
        p = folder / f"{name}.png"
        iio.imwrite(p, img)
        iio.imwrite(folder / "masks" / f"{name}.png", mask * 255)
        paths.append(p)
    return paths


def main(argv=None) -> None:
    """`python -m xaicli.models.builtin.shapes OUT [--count N] [--task ...]`: demo images."""
    import argparse

    ap = argparse.ArgumentParser(description="Write synthetic demo images with their masks.")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--task", choices=["segmentation", "classification"], default="segmentation")
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args(argv)
    for p in write_samples(args.out, args.count, args.task, args.start):
        print(p)


if __name__ == "__main__":
    main()
