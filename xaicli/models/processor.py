"""A Hugging Face image processor, run differentiably on the image's own pixels.

The model's own pipeline decides what the model sees: `processor(images=...)` in a user's
notebook resizes (`size` in all its forms, `crop_pct`, `resample`), centre-crops, rescales
and normalises. We call that same processor (transformers 5's torchvision backend, whose
transforms are torch ops) on float tensors that carry gradients from the image's pixels,
so predictions equal the notebook's and every map is at the image's own size: pixels the
centre crop drops get exactly zero gradient.

The processor's steps run in two parts: the geometry (resize and crop), then, after a
clamp to the pixel range, the rest (rescale, normalise, and whatever else that class does).
The clamp is what the notebook's uint8 pipeline does implicitly: a bicubic resize
overshoots at edges and uint8 saturates; on random-noise images the float path without it
was 0.19 (normalised units) away from the processor's own output, with it 0.01. Rounding
to whole grey levels is not reproduced (its gradient is zero everywhere): <= 0.5/255.
Each part runs as the processor's own call, or, where a one-time check against that call
on a random image shows it to be the same arithmetic, in a cheaper exact form: the
geometry as torch's resize + crop or as two matrix products with torchvision's resize
weights, the rest as one per-channel scale and shift (the processor's per-call overhead
and its extra copies cost as much as the resize on small models).

The geometry of one image size (model input size, and the box of the image the model
sees) is measured by running the processor's geometric step on coordinate ramps, so
any processor class's resize logic is covered without a table of its fields.

`PixelPipeline` holds what does not depend on whose pipeline it is (the geometry, the
exact fast forms, the clamp); `ProcessorPipeline` plugs in a Hugging Face processor,
`models/transforms.py` a torchvision-style transform (timm's data config, torchvision's
weights transforms).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaicli.errors import XaiError


def clamp_inside(x, lo: float, hi: float):
    """x clamped to [lo, hi], with gradient 1 at the bounds themselves (torch's clamp gives 0 there).

    The bounds are reached by real pixels: 0 and 255 in an image (saturated background), and a
    black baseline is 0 everywhere. With torch's clamp their gradient was 0, so saliency went
    blank on saturated pixels and IG's integrand had g(0) = 0 from a black baseline against
    g(0+) ≠ 0: a quadrature node at α = 0 (the adaptive trapezoid, Riemann left) counted that
    false value (tiny ConvNeXt from black: maps 0.5–0.7% off a 2048-node reference at 33 points;
    with this, 17 points and 0.03–0.13% under the 8-interval first cut of the time). Inside the range the pipeline is the identity, so the
    gradient at a bound is its limit from inside; beyond it (a resize's overshoot) it is 0."""
    import torch

    return torch.where((x >= lo) & (x <= hi), x, x.clamp(lo, hi))


# Fields that change pixels, recorded in the record's meta (from the processor object).
PIXEL_FIELDS = ("do_resize", "size", "resample", "crop_pct", "do_center_crop", "crop_size", "do_rescale",
                "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb", "do_pad")
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Geometry:
    """Where the model input lies in the image: `model_hw` pixels covering `box` =
    (top, left, bottom, right) in image pixel coordinates (edges, not centres). None: the
    whole image, squashed to `model_hw`."""

    model_hw: tuple[int, int]
    box: tuple[float, float, float, float] | None = None

    def to_meta(self) -> list[float] | None:
        return None if self.box is None else [round(v, 4) for v in self.box]


def load_processor(path: Path):
    """The folder's image processor with the torchvision backend, or None without a preprocessor_config.json."""
    if not (path / "preprocessor_config.json").exists():
        return None
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(str(path), local_files_only=True, backend="torchvision")
    except Exception as exc:
        raise XaiError(f"model {path}: its preprocessor_config.json did not load as a transformers image processor "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); fix the file, or "
                       "pass --fit squash with --size, --mean and --std") from None
    if getattr(proc, "backend", None) != "torchvision":
        raise XaiError(f"model {path}: {type(proc).__name__} has no torchvision backend, which xai runs "
                       "differentiably; pass --fit squash with --size, --mean and --std")
    return proc


class PixelPipeline:
    """`unit` (N, C, H, W) in [0, 1] → the model's input, through a library's own pipeline; differentiable.

    A subclass says how its library resizes and crops (`_geometric_call`, on 8-bit values), what
    follows (`_finish`, after the clamp), with which interpolation, and whether it resizes at all."""

    def __init__(self):
        self._geometry: dict[tuple[int, int], Geometry] = {}

    # -- what a library plugs in ---------------------------------------------------
    def _geometric_call(self, pixels):
        """The library's own resize + crop of (N, C, H, W) values in 0..255, nothing else."""
        raise NotImplementedError

    def _finish(self, shaped):
        """The library's steps after the crop (rescale, normalise) on clamped 0..255 values."""
        raise NotImplementedError

    def _mode(self):
        """The torchvision InterpolationMode of the resize (for the exact fast forms)."""
        raise NotImplementedError

    def _resizes(self) -> bool:
        return True

    def set_normalisation(self, mean, std) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def resample_name(self) -> str:
        raise NotImplementedError

    # -- the forward ------------------------------------------------------------
    def __call__(self, unit):
        return self._finish(clamp_inside(self.geometric(unit), 0.0, 255.0))

    def geometric(self, unit):
        """The image's 8-bit values (what a notebook passes), resized and cropped as the library does it
        (any class's own resize logic); nothing else.

        Where that step is a separable resize + crop (checked once per image size against the
        library itself), it runs in one of two exact forms (`_Resize.settle` says which):
        torch's resize at the library's resized size and then the crop, or two matrix products
        with torchvision's resize weights over the band of rows and columns the crop reaches.
        Under deterministic algorithms (attribute -b on CUDA) it is always the matrices: torch's
        antialiased resize has no deterministic CUDA backward."""
        import torch

        plan = self._plan(tuple(unit.shape[-2:]), unit.device, unit.dtype)
        if plan is not None:
            return plan(unit, deterministic=torch.are_deterministic_algorithms_enabled()) * 255.0
        return self._geometric_call(unit * 255.0)

    # -- geometry ---------------------------------------------------------------
    def geometry(self, image_hw: tuple[int, int]) -> Geometry:
        hw = (int(image_hw[0]), int(image_hw[1]))
        if hw not in self._geometry:
            self._geometry[hw] = self._measure(hw)
        return self._geometry[hw]

    def _ramps(self, hw: tuple[int, int]):
        """Channels: row centre, column centre, 1 (padding shows as 0). Float64: exact coordinates."""
        import torch

        h, w = hw
        ys = (torch.arange(h, dtype=torch.float64) + 0.5).view(h, 1).expand(h, w)
        xs = (torch.arange(w, dtype=torch.float64) + 0.5).view(1, w).expand(h, w)
        return torch.stack([ys, xs, torch.ones(h, w, dtype=torch.float64)])[None]

    def _measure(self, hw: tuple[int, int]) -> Geometry:
        import torch

        with torch.no_grad():
            ramp = self._geometric_call(self._ramps(hw))[0].double()
        mh, mw = int(ramp.shape[-2]), int(ramp.shape[-1])
        top, bottom = _axis_box(ramp[0, :, mw // 2])
        left, right = _axis_box(ramp[1, mh // 2, :])
        box = (top, left, bottom, right)
        # the fit's ripple is ~0.01 px; a real crop drops at least half a model pixel per side
        if max(abs(top), abs(left), abs(bottom - hw[0]), abs(right - hw[1])) < 0.05:
            box = None
        return Geometry((mh, mw), box)

    @functools.lru_cache(maxsize=8)
    def _plan(self, hw: tuple[int, int], device, dtype):
        """A `_Resize` for this image size when the library's geometric step is a plain separable resize
        + crop (both its forms reproduce the library on a random test image), else None."""
        import torch
        from torchvision.transforms.v2 import functional as tvF

        geo = self.geometry(hw)
        if not self._resizes() and geo.box is None:
            return None                                   # nothing to resize: the library's call is a no-op
        mode = self._mode()
        box = geo.box or (0.0, 0.0, float(hw[0]), float(hw[1]))
        axes = []
        for n_in, n_out, lo, hi in ((hw[0], geo.model_hw[0], box[0], box[2]), (hw[1], geo.model_hw[1], box[1], box[3])):
            scale = (hi - lo) / n_out                       # image pixels per model pixel
            resized, offset = round(n_in / scale), round(lo / scale)
            if offset < 0 or offset + n_out > resized:
                return None                                   # padding: not a plain resize + crop
            eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in, 1).expand(-1, -1, -1, 2)
            w = tvF.resize(eye, [resized, 2], interpolation=mode, antialias=True)[..., 0].reshape(n_in, resized).T
            w = w[offset:offset + n_out]
            used = torch.nonzero(w.abs().sum(0)).flatten()
            axes.append(_Axis(resized, offset, n_out, w, int(used.min()), int(used.max()) + 1))
        plan = _Resize(mode, *axes)
        probe = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            ref = self._geometric_call(probe.float() * 255).double() / 255
            for deterministic in (True, False):
                got = plan(probe, deterministic=deterministic)
                if got.shape != ref.shape or (got - ref).abs().max() > 1e-4:
                    return None
        plan.settle(device, dtype)
        return plan


class ProcessorPipeline(PixelPipeline):
    """A Hugging Face image processor (transformers 5's torchvision backend) as a PixelPipeline."""

    def __init__(self, processor, factor: float = 1.0):
        super().__init__()
        self.processor = processor
        self.factor = factor            # a [0, 1] pixel times this is what the processor normalises
        self.overrides: dict[str, Any] = {}

    def set_normalisation(self, mean, std) -> None:
        """--mean/--std (or xai.json), given for [0, 1] pixels, replace the processor's own."""
        self.overrides = {"do_normalize": True, "image_mean": [m * self.factor for m in mean],
                          "image_std": [s * self.factor for s in std]}
        self._affine.cache_clear()

    def _finish(self, shaped):
        import torch

        affine = self._affine(shaped.shape[1], shaped.device, shaped.dtype)
        if affine is not None:
            scale, shift = affine
            return shaped * scale + shift
        out = self.processor.preprocess(images=list(shaped), do_resize=False, do_center_crop=False,
                                        do_convert_rgb=False, return_tensors=None, **self.overrides)
        return torch.stack(list(out["pixel_values"])).to(shaped.dtype)

    @functools.lru_cache(maxsize=8)
    def _affine(self, channels: int, device, dtype):
        """The processor's steps after the crop as per-channel (scale, shift), when that is all they are
        (rescale, normalise; not e.g. EfficientNet's offset and double normalisation): checked once
        against the processor's own call on a test tensor, then applied without its per-call overhead."""
        import torch

        p = {**{k: getattr(self.processor, k, None) for k in ("do_rescale", "rescale_factor", "do_normalize",
                                                              "image_mean", "image_std")}, **self.overrides}
        scale = torch.ones(channels, dtype=torch.float64)
        shift = torch.zeros(channels, dtype=torch.float64)
        if p["do_rescale"]:
            scale *= float(p["rescale_factor"])
        if p["do_normalize"]:
            mean = torch.as_tensor(p["image_mean"], dtype=torch.float64).flatten()
            std = torch.as_tensor(p["image_std"], dtype=torch.float64).flatten()
            if mean.numel() not in (1, channels) or std.numel() not in (1, channels):
                return None
            shift, scale = -mean / std + shift, scale / std
        scale, shift = scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
        probe = torch.rand(2, channels, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
        try:
            with torch.no_grad():
                ref = torch.stack(list(self.processor.preprocess(
                    images=list(probe), do_resize=False, do_center_crop=False, do_convert_rgb=False,
                    return_tensors=None, **self.overrides)["pixel_values"])).double()
        except Exception:       # e.g. 3 means for a 1-channel model: the processor's own call says why later
            return None
        if ref.shape != probe.shape or (probe.double() * scale + shift - ref).abs().max() > 1e-4 * (1 + ref.abs().max()):
            return None
        return scale.to(device, dtype), shift.to(device, dtype)

    def _geometric_call(self, pixels):
        import torch

        out = self.processor.preprocess(images=list(pixels), do_rescale=False, do_normalize=False, do_pad=False,
                                        do_convert_rgb=False, return_tensors=None)
        return torch.stack(list(out["pixel_values"]))

    def _mode(self):
        from torchvision.transforms.v2 import functional as tvF
        from transformers.image_utils import pil_torch_interpolation_mapping

        resample = getattr(self.processor, "resample", None)
        return pil_torch_interpolation_mapping.get(resample, tvF.InterpolationMode.BILINEAR) \
            if resample is not None else tvF.InterpolationMode.BILINEAR

    def _resizes(self) -> bool:
        return bool(getattr(self.processor, "do_resize", True))

    # -- meta -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        p = self.processor
        fields = {}
        for name in PIXEL_FIELDS:
            v = getattr(p, name, None)
            if v is None:
                continue
            if type(v).__name__ == "SizeDict":              # iterates as its non-None (key, value) pairs
                v = dict(v)
            if isinstance(v, dict):
                v = {k: x for k, x in v.items() if x is not None}
            elif isinstance(v, tuple):
                v = list(v)
            elif hasattr(v, "value"):                       # PILImageResampling and other enums
                v = v.value
            fields[name] = v
        fields.update(self.overrides)
        return {"class": type(p).__name__, "backend": "torchvision", **fields}

    def resample_name(self) -> str:
        r = getattr(self.processor, "resample", None)
        r = getattr(r, "value", r)
        return RESAMPLE_NAMES.get(r, str(r)) if getattr(self.processor, "do_resize", True) else "none"


@dataclass
class _Axis:
    resized: int          # the processor's resized length along this axis
    offset: int           # where its crop starts
    size: int             # the model input's length
    weights: Any          # (size, n_in) float64: resize then crop, as one matrix
    lo: int               # the band of input pixels the crop reaches: [lo, hi)
    hi: int

    def band(self):
        return self.weights[:, self.lo:self.hi]


class _Resize:
    """The processor's resize + crop, exactly, in its cheaper form on this device (see `geometric`)."""

    def __init__(self, mode, rows: _Axis, cols: _Axis):
        self.mode, self.rows, self.cols = mode, rows, cols
        self.use_matrices = True
        self.mats = None

    def settle(self, device, dtype) -> None:
        """Matrices on the device, and the form to use: the choice depends on the configuration
        only, never on a timing, so reruns with a fixed chunk (-b) stay bit-identical.

        Forward + backward of 8 samples of 480x300, one CPU thread: torch's bilinear antialiased
        resize 26 ms, its bicubic one to 409x256 + crop 69 ms, the two matrix products over the
        crop's band 36-43 ms whatever the filter. So bilinear (and nearest) keep torch's kernel,
        wider filters (bicubic, lanczos, ...) use the matrices; on CUDA torch's kernels."""
        from torchvision.transforms.v2 import functional as tvF

        self.mats = (self.rows.band().to(device, dtype), self.cols.band().to(device, dtype))
        cheap = self.mode in (tvF.InterpolationMode.BILINEAR, tvF.InterpolationMode.NEAREST,
                              tvF.InterpolationMode.NEAREST_EXACT)
        self.use_matrices = device.type != "cuda" and not cheap

    def __call__(self, unit, deterministic: bool = False):
        from torchvision.transforms.v2 import functional as tvF

        r, c = self.rows, self.cols
        if self.use_matrices or deterministic:
            rows, cols = self.mats if self.mats is not None and self.mats[0].dtype == unit.dtype \
                and self.mats[0].device == unit.device else (r.band().to(unit), c.band().to(unit))
            return rows @ unit[..., r.lo:r.hi, c.lo:c.hi] @ cols.T
        out = tvF.resize(unit, [r.resized, c.resized], interpolation=self.mode, antialias=True)
        return out[..., r.offset:r.offset + r.size, c.offset:c.offset + c.size]


def _axis_box(coords) -> tuple[float, float]:
    """(first edge, last edge) in image coordinates of a model axis whose pixel centres are `coords`.

    Away from the borders an interpolating resize maps a linear ramp to a linear ramp, up to a
    ripple of ~0.01 px (an antialiased bicubic filter stretched by the scale is not exactly
    linear-preserving), so a least-squares line through the middle half gives scale and offset."""
    import torch

    n = int(coords.shape[0])
    if n < 4:
        step = float(coords[-1] - coords[0]) / max(1, n - 1) if n > 1 else 1.0
        first = float(coords[0]) - 0.5 * step
        return first, first + n * step
    idx = torch.arange(n // 4, n - n // 4, dtype=torch.float64)
    y = coords[n // 4: n - n // 4].double()
    xc = idx - idx.mean()
    step = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    first = float(y.mean() - step * (idx.mean() + 0.5))
    return first, first + n * step
