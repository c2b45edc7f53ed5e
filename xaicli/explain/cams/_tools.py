"""The CAM pipeline's parts that methods share: layer hooks, projections, scaling, resizing, memory.

Kept apart from the method modules, which import no torch at top level (the CLI reads
their declarations for `--help`); they import from here inside their steps.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xaicli.errors import XaiError


class Taps:
    """Forward hooks on the CAM layers for one forward pass; removed on exit.

    Each hooked output is replaced by a copy: the first layer reached becomes a leaf
    that requires grad (so the graph starts there: nothing below it is recorded), and
    later in-place ops downstream (an inplace ReLU) cannot change what we captured.
    """

    def __init__(self, layers):
        self.layers = layers
        self.raw: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.handles: list = []

    def __enter__(self) -> "Taps":
        for layer in distinct_modules(self.layers):   # two names for one module: one hook, so one call
            self.handles.append(layer.module.register_forward_hook(self._hook(layer.path)))
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def clear(self) -> None:
        self.raw.clear()
        self.calls.clear()

    def _hook(self, path: str):
        def hook(module, args, output):
            self.calls[path] = self.calls.get(path, 0) + 1
            t = output[0] if isinstance(output, (tuple, list)) else output
            if not torch.is_tensor(t):
                return None
            if torch.is_grad_enabled():
                kept = t if t.requires_grad else t.detach().requires_grad_(True)
            else:
                kept = t.detach()
            self.raw[path] = kept
            new = kept.clone()
            if isinstance(output, tuple):
                return (new, *output[1:])
            if isinstance(output, list):
                return [new, *output[1:]]
            return new
        return hook

    def tensors(self) -> list[torch.Tensor]:
        missing = [la.path for la in self.layers if la.path not in self.raw]
        if missing:
            raise XaiError(f"layer {missing[0]} was not called by this forward pass; pick another --layer")
        twice = [p for p, n in self.calls.items() if n > 1]
        if twice:
            raise XaiError(f"layer {twice[0]} ran {self.calls[twice[0]]} times in one forward pass; pick its parent")
        return [self.raw[la.path] for la in self.layers]


def distinct_modules(layers) -> list:
    """The first layer given for each module path, in order.

    Two `--layer` names can resolve to one module (`last` and `stage1`): its map is
    computed once and stored under each name.
    """
    first: dict[str, Any] = {}
    for la in layers:
        first.setdefault(la.path, la)
    return list(first.values())


def projection(batch: np.ndarray, sign_correct: bool = False) -> np.ndarray:
    """grad-cam's get_2d_projection with a thin SVD: same map, memory O(h·w·C) not O((h·w)²).

    (B, C, h, w) → (B, h, w): the centred pixels (h·w × C) projected on the first right
    singular vector. `sign_correct` flips maps whose minimum outweighs their maximum
    (Seg-Eigen-CAM, Eq. 13).
    """
    out = []
    for act in batch:
        a = np.nan_to_num(np.asarray(act, dtype=np.float32), nan=0.0, posinf=np.inf, neginf=-np.inf)
        x = a.reshape(a.shape[0], -1).T
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        p = (x @ vt[0]).reshape(a.shape[1:])
        if sign_correct and abs(p.min()) > abs(p.max()):
            p = -p
        out.append(p)
    return np.float32(out)


def minmax(maps: torch.Tensor | np.ndarray, eps: float = 1e-7):
    """grad-cam's scale_cam_image per map (no resize): (x - min) / (eps + max - min)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1)[0] if torch.is_tensor(flat) else flat.min(1)
    shifted = flat - lo[:, None]
    hi = shifted.max(1)[0] if torch.is_tensor(shifted) else shifted.max(1)
    return (shifted / (eps + hi[:, None])).reshape(maps.shape)


def resize(cam: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """(T, h, w) → (T, H, W) bilinear, half-pixel centres: what grad-cam's cv2.resize does."""
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    return F.interpolate(t[:, None], size=tuple(hw), mode="bilinear", align_corners=False)[:, 0]


def memory_batch(device, largest_bytes: int, input_bytes: int, cap: int | None = None) -> int:
    """Masked inputs per no-grad pass (ScoreCAM, AblationCAM): what a quarter of free memory holds.

    A no-grad forward keeps a few outputs alive at a time: about 4x the largest module
    output per sample, plus the masked input. On a CPU bigger batches are not faster
    (cache), so the cap is 16 (grad-cam's ScoreCAM default); on a GPU 64.
    """
    from xaicli.models.device import free_memory_bytes

    cap = cap or (64 if device.type == "cuda" else 16)
    free = free_memory_bytes(device)
    if not free:
        return min(cap, 8)
    need = max(1, 4 * largest_bytes + 2 * input_bytes)
    return int(max(1, min(cap, (free // 4) // need)))


def release_gradcam(cam) -> None:
    """Remove a grad-cam object's hooks. Its own release() detaches saved gradients in place,
    which raises on views (ConvNeXt's gradients are views): drop the lists first."""
    aag = getattr(cam, "activations_and_grads", None)
    if aag is None:
        return
    aag.activations = []
    aag.gradients = []
    aag.release()


def second_order(on: bool):
    """Methods that differentiate twice: fused attention kernels (flash, efficient) have no
    double backward, so attention runs on the math kernel while one is asked for."""
    if not on:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def hessian_vector(grad: torch.Tensor, activation: torch.Tensor, retain: bool = True,
                   method: str = "shapleycam") -> torch.Tensor:
    """H·a, the derivative of (gradient · activation) with respect to the activation, from a
    gradient taken with create_graph=True (ShapleyCAM's second-order term; grad-cam keeps
    its whole model graph for it, here only the graph above the hooked layer)."""
    if not grad.requires_grad:
        return torch.zeros_like(activation)
    try:
        (hvp,) = torch.autograd.grad(grad, activation, grad_outputs=activation.detach(), retain_graph=retain,
                                     allow_unused=True)
    except RuntimeError as exc:
        raise XaiError(f"{method} needs second derivatives, which this model does not support "
                       f"({str(exc).splitlines()[0]}); use another --method") from None
    return torch.zeros_like(activation) if hvp is None else hvp
