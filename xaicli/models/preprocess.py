"""Preprocessing: image pixels in [0,1] → model input (resize, channels, mean/std).

Done in torch so gradients flow back to the original pixels: explanations can be
taken with respect to the image as displayed, at its own resolution.

Two fits: `processor` runs the model's own image processor (models/processor.py: resize as
it resizes, centre crop, normalise); `squash` resizes the whole image to the model size
(`size`, else the image's own size rounded to `multiple`) and standardises with mean/std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    channels: int = 3
    size: tuple[int, int] | None = None  # (h, w); None: the image's own size (rounded to `multiple`)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    multiple: int = 1                    # smp needs sides divisible by 32
    resize: str = "bilinear"
    source: str = "default"              # where these numbers came from, for the record
    notes: list[str] = field(default_factory=list)
    fit: str = "squash"                  # "processor" (the model's own pipeline) or "squash"
    pipeline: Any = field(default=None, repr=False, compare=False)   # a ProcessorPipeline for fit "processor"

    def __post_init__(self) -> None:
        # The ImageNet defaults are RGB: a model with other input channels gets their
        # channel average per channel (else the 3 values broadcast a 1-channel input to 3).
        if self.channels != 3:
            if tuple(self.mean) == IMAGENET_MEAN:
                self.mean = (round(sum(IMAGENET_MEAN) / 3, 3),) * self.channels
            if tuple(self.std) == IMAGENET_STD:
                self.std = (round(sum(IMAGENET_STD) / 3, 3),) * self.channels

    def geometry(self, image_hw: tuple[int, int]):
        """Where the model input lies in an image of this size (model size, crop box)."""
        from xaicli.models.processor import Geometry

        if self.pipeline is not None:
            return self.pipeline.geometry(image_hw)
        return Geometry(self.input_size(image_hw))

    def input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        if self.pipeline is not None:
            return self.pipeline.geometry(image_hw).model_hw
        if self.size is not None:
            return self.size
        m = self.multiple
        # halves up (Python's round() takes them to even: 48 went to 64 but 80 to 64)
        return tuple(max(m, (s + m // 2) // m * m) for s in image_hw)  # type: ignore[return-value]

    def to_meta(self, image_hw: tuple[int, int] | None = None) -> dict:
        d = {"channels": self.channels, "size": list(self.size) if self.size else None, "mean": list(self.mean),
             "std": list(self.std), "multiple": self.multiple, "resize": self.resize, "source": self.source,
             "notes": list(self.notes), "fit": self.fit, "crop": None}
        if image_hw:
            geo = self.geometry(image_hw)
            d["size"], d["crop"] = list(geo.model_hw), geo.to_meta()
        if self.pipeline is not None:
            d["processor"] = self.pipeline.describe()
        return d


def parse_size(text: str | None) -> tuple[int, int] | None:
    from xaicli.errors import XaiUsageError

    if not text:
        return None
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise XaiUsageError(f"--size {text!r}: expected N or HxW, e.g. 256 or 480x640") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise XaiUsageError(f"--size {text!r}: expected N or HxW, e.g. 256 or 480x640")
    return parts[0], parts[1]


def parse_floats(text: str | None, option: str, channels: int | None = None) -> tuple[float, ...] | None:
    from xaicli.errors import XaiUsageError

    if not text:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise XaiUsageError(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None
    if channels is not None and len(vals) not in (1, channels):
        raise XaiUsageError(f"{option} {text!r}: expected 1 or {channels} values for a {channels}-channel model")
    check_norm(vals, option, positive=option.endswith("std"))
    return vals


def check_norm(vals, option: str, positive: bool = False) -> None:
    """Normalisation values must be finite numbers, a std's also > 0 (a zero std divides by zero:
    every probability came out NaN, with exit 0)."""
    from xaicli.errors import XaiUsageError

    shown = ",".join(f"{v:g}" for v in vals)
    if not all(math.isfinite(v) for v in vals):
        raise XaiUsageError(f"{option} {shown}: values must be finite numbers, e.g. "
                            + ("0.229,0.224,0.225" if positive else "0.485,0.456,0.406"))
    if positive and not all(v > 0 for v in vals):
        raise XaiUsageError(f"{option} {shown}: a standard deviation must be > 0, e.g. 0.229,0.224,0.225 "
                            "(one value per input channel)")
