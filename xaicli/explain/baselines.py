"""IG baselines: the reference image x' the attribution is measured against.

All baselines live in *unit space*: the image's pixels scaled to [0, 1], at the
image's own size, with the model's channel count (as `ModelAdapter.image_to_unit`
gives them). The model sees `normalize(x')`, so:

- `black`: zeros in unit space (a black image before normalisation);
- `zero`: zeros in model-input space, i.e. the unit image equal to the normalisation
  mean in every pixel (normalize maps it to 0 exactly);
- `white`: ones;
- `mean`: the image's per-channel mean colour;
- `blur`: the image under a Gaussian blur (`sigma` in image pixels, edges replicated);
- `noise`: the image plus Gaussian noise (std `noise_std` × the image's value range),
  clipped to [0, 1]; seeded;
- `uniform`: independent uniform random pixels in [0, 1]; seeded;
- a file: an image (read like any input image) or a `.npy` array: integers are pixel
  values (uint8 / uint16 scale), floats are unit-space values; HxW, HxWxC or CxHxW,
  the image's size.

Random baselines are reproducible: their generator is seeded from `--seed` and the
record id, so a rerun, or the same image in another order, gets the same noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xaicli.errors import XaiError, XaiUsageError

KINDS = ("black", "zero", "white", "mean", "blur", "noise", "uniform")
RANDOM_KINDS = ("noise", "uniform")


@dataclass
class Baseline:
    kind: str                          # one of KINDS, or "file"
    name: str                          # the record key part: attr/<method>/<name>
    path: Path | None = None
    array: np.ndarray | None = None    # the file's contents, read once

    @property
    def random(self) -> bool:
        return self.kind in RANDOM_KINDS

    def to_meta(self) -> dict[str, Any]:
        d: dict[str, Any] = {"baseline": self.kind if self.kind != "file" else "file"}
        if self.path is not None:
            d["baseline_path"] = str(self.path)
        return d


def parse_baseline(text: str) -> Baseline:
    """A `--baseline` value: a kind name, or the path of an image or .npy file."""
    t = text.strip()
    if t.lower() in KINDS:
        return Baseline(t.lower(), t.lower())
    path = Path(t).expanduser()
    if not path.exists():
        looks_like_path = any(c in t for c in "/\\.") or path.suffix
        if looks_like_path:
            raise XaiUsageError(f"--baseline {text}: no such file; pass an image or .npy file, or one of "
                                + ", ".join(KINDS))
        raise XaiUsageError(f"--baseline {text!r}: unknown baseline; use one of {', '.join(KINDS)}, "
                            "or the path of an image or .npy file")
    if path.is_dir():
        raise XaiUsageError(f"--baseline {text}: is a folder; pass one image or .npy file")
    array = _read_file(path)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem) or "file"
    return Baseline("file", f"file-{stem}", path, array)


def _read_file(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise XaiUsageError(f"--baseline {path}: not a readable .npy array ({exc})") from None
        if arr.dtype.kind not in "uif" or arr.ndim not in (2, 3):
            raise XaiUsageError(f"--baseline {path}: expected a 2-D or 3-D numeric array, got "
                                f"{arr.dtype} {arr.shape}")
        return arr
    from xaicli.io.images import read_image

    try:
        return read_image(path)
    except XaiError as exc:
        raise XaiUsageError(f"--baseline {exc}") from None


def derive_seed(seed: int, key: str, kind: str) -> int:
    """A stable 63-bit seed per (seed, record, kind): reproducible, independent of input order."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_baselines(baseline: Baseline, unit, *, mean: tuple[float, ...], samples: int = 1, seed: int = 0,
                   key: str = "", blur_sigma: float | None = None, noise_std: float = 0.15,
                   to_unit: Callable | None = None):
    """(K, C, H, W) baselines for the unit image `unit` (1, C, H, W); K = samples for random kinds, else 1."""
    import torch

    c, h, w = unit.shape[1:]
    kind = baseline.kind
    if kind == "black":
        return torch.zeros_like(unit)
    if kind == "white":
        return torch.ones_like(unit)
    if kind == "zero":
        m = torch.as_tensor(mean, dtype=unit.dtype, device=unit.device).view(1, -1, 1, 1)
        return m.expand(1, c, h, w).clone()
    if kind == "mean":
        return unit.mean(dim=(-2, -1), keepdim=True).expand_as(unit).clone()
    if kind == "blur":
        return gaussian_blur(unit, blur_sigma if blur_sigma is not None else default_blur_sigma((h, w)))
    if kind in RANDOM_KINDS:
        gen = torch.Generator().manual_seed(derive_seed(seed, key, kind))
        shape = (max(1, samples), c, h, w)
        if kind == "uniform":
            return torch.rand(shape, generator=gen).to(unit.device, unit.dtype)
        spread = float(unit.max() - unit.min()) or 1.0
        eps = torch.randn(shape, generator=gen).to(unit.device, unit.dtype) * (noise_std * spread)
        return (unit + eps).clamp_(0.0, 1.0)
    if kind == "file":
        return file_baseline(baseline, unit, to_unit)
    raise ValueError(f"unknown baseline kind {kind!r}")


def file_baseline(baseline: Baseline, unit, to_unit: Callable | None):
    import torch

    arr = baseline.array
    h, w = unit.shape[-2:]
    if arr.dtype.kind in "ui":  # pixel values, like an image file
        if to_unit is None:
            raise ValueError("an image baseline needs to_unit")
        img = arr if arr.dtype in (np.uint8, np.uint16) else arr.astype(np.uint8 if arr.dtype.itemsize == 1
                                                                         else np.uint16)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3, 4):
            img = np.moveaxis(img, 0, -1)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        try:
            x = to_unit(img)
        except ValueError as exc:
            raise XaiUsageError(f"--baseline {baseline.path}: {exc}") from None
    else:  # floats: unit-space values
        a = arr.astype(np.float32)
        if a.ndim == 2:
            a = a[None]
        elif a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3):
            a = np.moveaxis(a, -1, 0)
        x = torch.from_numpy(np.ascontiguousarray(a))[None].to(unit.device, unit.dtype)
        if x.shape[1] != unit.shape[1]:
            if x.shape[1] == 1:
                x = x.expand(-1, unit.shape[1], -1, -1).contiguous()
            else:
                raise XaiUsageError(f"--baseline {baseline.path}: {x.shape[1]} channels for a "
                                    f"{unit.shape[1]}-channel model")
    if tuple(x.shape[-2:]) != (h, w):
        raise XaiUsageError(f"--baseline {baseline.path}: size {x.shape[-1]}x{x.shape[-2]} differs from the "
                            f"image's {w}x{h}; pass a baseline of the image's size")
    return x.to(unit.device, unit.dtype)


def default_blur_sigma(hw: tuple[int, int]) -> float:
    """1/16 of the shorter side (at least 1 px): blurs away object-sized detail."""
    return max(1.0, min(hw) / 16.0)


def gaussian_blur(unit, sigma: float):
    """Separable Gaussian blur, radius round(3σ), replicated edges (scipy mode='nearest', truncate=3)."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return unit.clone()
    radius = int(3.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(unit.device, unit.dtype)
    n, c, h, w = unit.shape
    x = unit.reshape(n * c, 1, h, w)
    x = _replicate_pad(x, radius, dim=-1)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = _replicate_pad(x, radius, dim=-2)
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def _replicate_pad(x, r: int, dim: int):
    """Edge replication for any radius (F.pad's replicate mode caps the pad at the size on some builds)."""
    import torch

    if r == 0:
        return x
    first = x.narrow(dim, 0, 1)
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    reps = [1] * x.ndim
    reps[dim] = r
    return torch.cat([first.repeat(*reps), x, last.repeat(*reps)], dim=dim)
