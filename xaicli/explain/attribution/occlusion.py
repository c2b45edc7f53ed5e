"""Occlusion (Zeiler & Fergus 2014): the score drop when a square of the image becomes the baseline.

A window of side w slides over the image in steps of s (Captum's `Occlusion` with
sliding_window_shapes (C, w, w) and strides (C, s, s): starts 0, s, 2s, ... until the
window reaches the far edge, the last one cut at the border); each pixel gets the mean
drop S(x) − S(x with the window replaced by the baseline) over the windows that cover it,
the same value in every channel. The occluded copies go through the engine's batched,
chunked forward (`step.scores`), a group at a time so memory stays bounded on big
images; every target comes from the same forward. With K random baseline draws
(--baseline-samples), the map is the mean over the draws.
"""

from __future__ import annotations

import math

from xaicli.errors import XaiError, XaiUsageError
from xaicli.explain.attribution import AttributionMethod
from xaicli.explain.registry import Option

GROUP_BYTES = 64 << 20     # occluded copies built at once (the forward chunks them further)
WINDOW = Option("occlusion_window", int, None, min=1, show_default=False,
                help="Occlusion: the window's side in image pixels (default: 1/8 of the shorter side).")
STRIDE = Option("occlusion_stride", int, None, min=1, show_default=False,
                help="Occlusion: the step between windows in pixels, at most the window (default: half the "
                     "window).")


def window_and_stride(options, hw: tuple[int, int], key: str) -> tuple[int, int]:
    """The window and stride for an image of size `hw`, defaults filled, checked like Captum's asserts."""
    window = options["occlusion_window"] or max(1, round(min(hw) / 8))
    stride = options["occlusion_stride"] or max(1, window // 2)
    if stride > window:
        raise XaiUsageError(f"--occlusion-stride {stride} exceeds the window {window}: pixels between windows "
                            f"would get no value; use a stride of at most {window}")
    if window > min(hw):
        raise XaiError(f"{key}: --occlusion-window {window} exceeds the image ({hw[0]}x{hw[1]}); use at most "
                       f"{min(hw)}, or omit it for 1/8 of the shorter side")
    return window, stride


def starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, as Captum counts them: ceil((size - window) / stride) + 1."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


class Occlusion(AttributionMethod):
    name = "occlusion"
    summary = "mean score drop when a sliding square covering the pixel is replaced by the baseline"
    reference, reference_package = "Occlusion", "captum.attr"
    checked = "within 1e-5 of the larger of the map's largest value and |S(x)| (small CNN, smp U-Net++, HF ConvNeXt)"
    notes = ("window and stride in image pixels; the occluded copies in batched, chunked no-grad forwards, all "
             "targets at once; the mean over random baseline draws")
    options = (WINDOW, STRIDE)
    baseline = True
    gradients = False
    order = 60

    def compute(self, step):
        import torch

        x = step.x
        c, h, w = x.shape[1:]
        window, stride = window_and_stride(step.options, (h, w), step.key)
        boxes = [(top, left) for top in starts(h, window, stride) for left in starts(w, window, stride)]
        f_x = step.scores(x)[0]                                          # (T,)
        total = torch.zeros(f_x.shape[0], h, w, dtype=torch.float64, device=x.device)
        group = max(1, GROUP_BYTES // (x.numel() * x.element_size()))
        for base in step.baseline:
            for lo in range(0, len(boxes), group):
                part = boxes[lo:lo + group]
                batch = x.expand(len(part), c, h, w).clone()
                for i, (top, left) in enumerate(part):
                    batch[i, :, top:top + window, left:left + window] = base[:, top:top + window, left:left + window]
                drop = (f_x - step.scores(batch)).double()                 # (n, T)
                for i, (top, left) in enumerate(part):
                    total[:, top:top + window, left:left + window] += drop[i, :, None, None]
        count = torch.zeros(h, w, dtype=torch.float64, device=x.device)
        for top, left in boxes:
            count[top:top + window, left:left + window] += 1
        step.info.update(occlusion_window=window, occlusion_stride=stride, windows=len(boxes), f_x=f_x.tolist())
        attr = (total / (count * step.baseline.shape[0])).to(x.dtype)
        return attr[:, None].expand(-1, c, h, w).contiguous()
