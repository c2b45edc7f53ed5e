"""One interface over every model kind: a logits forward plus what explaining needs.

Methods take and return torch tensors on `self.device`. Images enter as uint8/uint16
arrays; `image_to_unit` makes them float in [0,1] at their own size, `normalize`
resizes and standardises them for the model (differentiably), `forward` gives logits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xaicli.errors import XaiError
from xaicli.models.preprocess import Preprocessing

# What a model raises when an input does not fit it (ViT: ValueError on the size; a flatten +
# Linear: RuntimeError on the shapes); other exception types are bugs, and propagate.
INPUT_FAILURES = (RuntimeError, ValueError, AssertionError, IndexError)


class ChannelError(XaiError, ValueError):
    """An image whose channels the model cannot take (a ValueError too: `--baseline` reports it as its own)."""


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to `size`, antialiased when either side shrinks.

    Under deterministic algorithms (`attribute -b` on CUDA) an antialiased resize runs as
    two matrix products with the same weights: torch's antialiased kernel has no
    deterministic CUDA backward (torch 2.11 warned so on an H200, and reruns differed).
    """
    aa = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if aa and torch.are_deterministic_algorithms_enabled():
        rows = _axis_weights(x.shape[-2], size[0], x.device, x.dtype)
        cols = _axis_weights(x.shape[-1], size[1], x.device, x.dtype)
        return rows @ x @ cols.T
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=aa)


@functools.lru_cache(maxsize=16)
def _axis_weights(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n_out, n_in) weights of torch's antialiased bilinear resize along one axis: the resize
    of an identity, the other axis kept (2 wide: torch 2.14's CPU kernel returns a constant
    for 1-wide inputs)."""
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in, 1).expand(-1, -1, -1, 2)
    w = F.interpolate(eye, size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True)
    return w[..., 0].reshape(n_in, n_out).T.contiguous().to(device, dtype)


class LogitsModule(nn.Module):
    """Wraps a model so forward returns a plain logits tensor (HF returns output objects)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, torch.Tensor):
            return out
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, (tuple, list)):
            logits = out[0]
        if logits is None and isinstance(out, dict):
            logits = out.get("logits", out.get("out"))
        return logits


@dataclass
class ModelAdapter:
    net: LogitsModule
    task: str                          # "classification" | "segmentation"
    labels: list[str]
    preprocessing: Preprocessing
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)  # spec, sha256, arch, format, load options
    model_size: tuple[int, int] | None = None  # an input size the model is known to take, for hints
    sizes_ok: set = field(default_factory=set, repr=False)  # input sizes whose forward has run

    @property
    def module(self) -> nn.Module:
        """The user's model itself: layer names (for CAM) are relative to it."""
        return self.net.model

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def sha256(self) -> str:
        return self.info.get("sha256", "")

    def meta(self) -> dict[str, Any]:
        return {**self.info, "task": self.task, "labels": list(self.labels)}

    # -- preprocessing ----------------------------------------------------------
    def image_to_unit(self, image: np.ndarray) -> torch.Tensor:
        """(1, C, H, W) float32 in [0,1] at the image's own size, channels as the model wants."""
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        # np.asarray(PIL image) is read-only, and torch.from_numpy warns on such arrays: copy those
        x = torch.from_numpy(np.require(image, requirements="CW")).to(self.device, torch.float32) / scale
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None].contiguous()   # NCHW, like a user's batch
        return self.match_channels(x)

    def match_channels(self, x: torch.Tensor) -> torch.Tensor:
        want, have = self.preprocessing.channels, x.shape[1]
        if have == want:
            return x
        if have == 1:
            return x.expand(-1, want, -1, -1).contiguous()
        if want == 1 and have == 3:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            return (x * w).sum(1, keepdim=True)
        raise ChannelError(f"a {have}-channel image cannot feed this {want}-channel model; give {want}-channel "
                           "images (or 1-channel ones, copied to every channel), or a model for "
                           f"{have}-channel input")

    def input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return self.preprocessing.input_size(image_hw)

    def normalize(self, unit: torch.Tensor) -> torch.Tensor:
        """Resize (or run the model's own processor) and standardise; differentiable."""
        if self.preprocessing.pipeline is not None:
            return self.preprocessing.pipeline(unit)
        size = self.input_size(tuple(unit.shape[-2:]))
        x = unit
        if tuple(x.shape[-2:]) != tuple(size):
            x = resize(x, tuple(size))
        mean = torch.tensor(self.preprocessing.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        return self.normalize(self.image_to_unit(image))

    # -- outputs ----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = tuple(x.shape[-2:])
        if hw in self.sizes_ok:
            return self.net(x)
        out = self.first_forward(lambda: self.net(x), hw)
        self.sizes_ok.add(hw)
        return out

    def first_forward(self, run, hw: tuple[int, int]):
        """`run()`, the first forward at input size `hw`: a model that cannot take that size fails here,
        and the user gets one line naming the size and --size, not a traceback from inside the model."""
        try:
            return run()
        except INPUT_FAILURES as exc:
            from xaicli.models.device import is_oom

            if isinstance(exc, XaiError) or is_oom(exc):
                raise
            raise self.input_error(hw, exc) from exc

    def input_error(self, hw: tuple[int, int], exc: BaseException) -> XaiError:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # TorchScript puts the serialized code first and the model's own error last.
        said = (lines[-1] if lines and lines[0].startswith("The following operation failed") else
                lines[0] if lines else "")
        if said.startswith(type(exc).__name__ + ": "):
            said = said[len(type(exc).__name__) + 2:]
        if len(said) > 160:
            said = said[:157] + "..."
        known = self.model_size or self.preprocessing.size
        if known and tuple(known) != tuple(hw):
            fix = f"pass --size {_size_text(known)}, the size the model takes"
        else:
            fix = "pass the --size the model was trained at"
        spec = self.info.get("spec", "the model")
        return XaiError(f"model {spec} failed on a {hw[0]}x{hw[1]} input ({type(exc).__name__}: {said}); "
                        f"it may not take that input size: {fix}")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes; sigmoid for a one-class segmenter (foreground vs background)."""
        if self.task == "segmentation" and logits.shape[1] == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def to_image_size(self, maps: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """(B, K, h, w) model-resolution maps at the image size: bilinear where the model saw the whole
        image; with a centre crop, bilinear inside the crop box and zero outside (nothing there was seen)."""
        box = self.preprocessing.geometry(image_hw).box
        if box is None:
            if tuple(maps.shape[-2:]) == tuple(image_hw):
                return maps
            return F.interpolate(maps, size=tuple(image_hw), mode="bilinear", align_corners=False)
        return paste_into_box(maps, image_hw, box)

    def release(self) -> None:
        """Drop cached GPU memory between images (hooks are owned by the explainers)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def paste_into_box(maps: torch.Tensor, image_hw: tuple[int, int], box) -> torch.Tensor:
    """Model-grid maps (B, K, h, w) onto an image grid where the model grid covers `box` = (top, left,
    bottom, right): bilinear with half-pixel centres (as F.interpolate with align_corners=False,
    edges clamped), 0 at image pixels whose centre lies outside the box."""
    h, w = maps.shape[-2:]
    top, left, bottom, right = box
    dev, dt = maps.device, maps.dtype

    def axis(n_img: int, lo: float, hi: float, n_model: int):
        centres = torch.arange(n_img, device=dev, dtype=torch.float64) + 0.5
        index = (centres - lo) * (n_model / (hi - lo)) - 0.5        # model-grid index of each image pixel
        inside = (centres >= lo) & (centres <= hi)
        return (2 * (index + 0.5) / n_model - 1).to(dt), inside        # grid_sample's align_corners=False units

    gy, in_y = axis(image_hw[0], top, bottom, h)
    gx, in_x = axis(image_hw[1], left, right, w)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)   # (H, W, 2): x then y
    grid = grid[None].expand(maps.shape[0], -1, -1, -1)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * (in_y[:, None] & in_x[None, :]).to(dt)


def _size_text(hw) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"
