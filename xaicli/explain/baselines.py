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
- a file: an image (read like any input image) or a `.npy` array: uint8 (0-255) or
  uint16 (0-65535) pixel values, or finite floats in [0, 1] (unit-space values); HxW,
  HxWxC or CxHxW, the image's size. Other integer types and floats outside [0, 1] are
  refused: their scale would be a guess. Its map key is `file-<stem>`; two files with
  one stem get `-<8 hex of sha1(absolute path)>` appended, like record ids.

Random baselines are reproducible: their generator is seeded from `--seed` and the
record id, so a rerun, or the same image in another order, gets the same noise.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from xaicli.errors import XaiError, XaiUsageError

if TYPE_CHECKING:
    import numpy as np

# numpy and hashlib are imported where they are used: the CLI reads KINDS for --help and completion.
KINDS = {                # the named baselines, and what each is (--baseline's help)
    "black": "zeros before normalisation, the default",
    "zero": "zeros after normalisation",
    "white": "ones",
    "mean": "the image's per-channel mean colour",
    "blur": "a Gaussian blur of the image",
    "noise": "the image + seeded Gaussian noise",
    "uniform": "seeded uniform pixels",
}
RANDOM_KINDS = ("noise", "uniform")
FLOAT_SLACK = 1e-6       # float baselines may stray this far outside [0, 1] (rounding), no further


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


def parse_baselines(texts: Sequence[str]) -> list[Baseline]:
    """The `--baseline` values in order, each baseline once, with distinct names (map keys).

    Files whose names collide (one stem in two folders, or stems that differ only in
    characters made `_`) get `-<8 hex of sha1(absolute path)>` appended, as record ids
    do: the suffix depends only on the path, so a file keeps its key across runs with
    the same baselines. The same file given twice (under two spellings) counts once.
    """
    out: list[Baseline] = []
    for text in texts:
        b = parse_baseline(text)
        if not any(_same(b, p) for p in out):
            out.append(b)
    counts = Counter(b.name for b in out)
    for b in out:
        if b.kind == "file" and counts[b.name] > 1:
            b.name = f"{b.name}-{_path_hash(b.path)}"
    seen: dict[str, Baseline] = {}
    for b in out:                      # only a file named like another's hashed key gets here
        if b.name in seen:
            raise XaiUsageError(f"--baseline {seen[b.name].path} and {b.path} would both be stored as "
                                f"attr/<method>/{b.name}; rename one of the files")
        seen[b.name] = b
    return out


def _same(a: Baseline, b: Baseline) -> bool:
    if a.kind != b.kind:
        return False
    return a.kind != "file" or os.path.abspath(a.path) == os.path.abspath(b.path)


def _path_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]


def _read_file(path: Path) -> np.ndarray:
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise XaiUsageError(f"--baseline {path}: not a readable .npy array ({exc})") from None
        if arr.dtype.kind not in "uif" or arr.ndim not in (2, 3) or arr.size == 0:
            raise XaiUsageError(f"--baseline {path}: expected a non-empty 2-D or 3-D numeric array, got "
                                f"{arr.dtype} {arr.shape}")
        _check_values(path, arr)
        return arr
    from xaicli.io.images import read_image

    try:
        return read_image(path)
    except XaiError as exc:
        raise XaiUsageError(f"--baseline {exc}") from None


def _check_values(path: Path, arr: np.ndarray) -> None:
    """uint8 / uint16 pixel values, or finite floats in [0, 1]: any other scale would be a guess."""
    import numpy as np

    if arr.dtype.kind in "ui":
        if not _pixel_ints(arr.dtype):
            raise _unknown_scale(path, arr.dtype)
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise XaiUsageError(f"--baseline {path}: {bad} of {arr.size} values are NaN or infinite; a float "
                            "baseline needs finite values in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        raise XaiUsageError(f"--baseline {path}: float values span [{lo:.6g}, {hi:.6g}], outside [0, 1]; "
                            "floats are pixels scaled to [0, 1] (divide 8-bit values by 255), or save "
                            "uint8 (0-255) or uint16 (0-65535) pixel values")


def _pixel_ints(dtype: np.dtype) -> bool:
    return dtype.kind == "u" and dtype.itemsize in (1, 2)


def _unknown_scale(path, dtype: np.dtype) -> XaiUsageError:
    return XaiUsageError(f"--baseline {path}: {dtype} integers have no known pixel scale; save the array as "
                         "uint8 (0-255), uint16 (0-65535) or floats in [0, 1]")


def derive_seed(seed: int, key: str, kind: str) -> int:
    """A stable 63-bit seed per (seed, record, kind): reproducible, independent of input order."""
    import hashlib     # here: importing it (OpenSSL) costs --help and completion, which read KINDS

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
    import numpy as np
    import torch

    arr = baseline.array
    h, w = unit.shape[-2:]
    if arr.dtype.kind in "ui":  # pixel values, like an image file
        if to_unit is None:
            raise ValueError("an image baseline needs to_unit")
        if not _pixel_ints(arr.dtype):
            raise _unknown_scale(baseline.path, arr.dtype)
        img = arr.astype(arr.dtype.newbyteorder("="), copy=False)    # native order (a big-endian .npy)
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
    """Separable Gaussian blur, radius round(3σ), replicated edges (scipy mode='nearest', truncate=3).

    Taps farther than the image's extent read only the edge pixel, so they are summed
    into the outermost tap: exact, and the work stays bounded by the image size for any
    finite sigma. sigma 0 (or below 1/6, radius 0) returns the image unchanged.
    """
    import torch.nn.functional as F

    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"blur sigma must be a finite number >= 0, got {sigma!r}")
    n, c, h, w = unit.shape
    x = unit.reshape(n * c, 1, h, w)
    kw, kh = _kernel(sigma, w), _kernel(sigma, h)
    rw, rh = (len(kw) - 1) // 2, (len(kh) - 1) // 2
    if rw == 0 and rh == 0:
        return unit.clone()
    x = _replicate_pad(x, rw, dim=-1)
    x = F.conv2d(x, kw.to(unit.device, unit.dtype).view(1, 1, 1, -1))
    x = _replicate_pad(x, rh, dim=-2)
    x = F.conv2d(x, kh.to(unit.device, unit.dtype).view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


EXACT_TAPS = 1 << 20    # kernels up to this radius are summed tap by tap; wider tails in closed form


def _kernel(sigma: float, size: int):
    """The normalised 1-D taps (float64) of offsets -m..m, m = min(round(3σ), size - 1), tails folded in."""
    import torch

    sigma = min(sigma, 1e100)     # beyond, the taps over any image are flat to float64: the same result
    reach = float(math.floor(3.0 * sigma + 0.5))   # the radius
    m = int(min(reach, size - 1))
    if m <= 0:
        return torch.ones(1, dtype=torch.float64)
    t = torch.arange(-m, m + 1, dtype=torch.float64)
    core = torch.exp(-0.5 * (t / sigma) ** 2)
    if reach <= m:
        tail = 0.0
    elif reach <= EXACT_TAPS:
        tail = float(torch.exp(-0.5 * (torch.arange(m + 1, int(reach) + 1, dtype=torch.float64) / sigma) ** 2).sum())
    else:
        tail = _gauss_sum(sigma, m + 1, reach)
    core[0] += tail
    core[-1] += tail
    return core / core.sum()


def _gauss_sum(sigma: float, a: int, b: float) -> float:
    """Σ_{k=a..b} exp(-k²/2σ²) by Euler–Maclaurin (integral, ends, first derivatives), for a < b and
    σ > 10⁵, where the next term is below 1e-20 of the sum."""
    s2 = sigma * math.sqrt(2.0)

    def f(k: float) -> float:
        return math.exp(-0.5 * (k / sigma) ** 2)

    integral = sigma * math.sqrt(math.pi / 2.0) * (math.erf(b / s2) - math.erf(a / s2))
    return integral + (f(a) + f(b)) / 2.0 + (a * f(a) - b * f(b)) / sigma / sigma / 12.0


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
