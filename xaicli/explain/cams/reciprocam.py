"""Recipro-CAM (Byun & Lee 2022): the target's score when the layer keeps one position only.

For each position (i, j) of the layer's h x w grid the feature map F is masked to that
position, F ⊙ M(i,j), with M(i,j) a 3x3 Gaussian centred there (the paper's kernel;
`point`: 1 at (i, j) only, as openvino-xai's ReciproCAM for CNNs), and fed through the
rest of the model. The map at (i, j) is the target's score of that masked feature map
minus its score of an empty one (F = 0): what the position alone adds, ReLU'd like every
CAM. One forward per position, batched, every target scored from the same pass; no
gradients. On a global-average-pooled linear head the point map is exactly CAM / (h·w)
(tests/test_method_reciprocam.py).

The rest of the model runs as AblationCAM's does (cams/_ablation.py): the whole model
on the input repeated, a forward hook substituting the masked feature maps for the
layer's output, so skip connections from below the layer (a U-Net) see the image.
Token layers (ViT, Swin) are masked on their patch grid; the CLS token is kept, as
openvino-xai's ViT-ReciproCAM keeps it.
"""

from __future__ import annotations

from xaicli.errors import XaiUsageError
from xaicli.explain.cams import CamMethod
from xaicli.explain.registry import Option

KERNELS = {"gaussian": ((1, 2, 1), (2, 4, 2), (1, 2, 1)), "point": ((0, 0, 0), (0, 16, 0), (0, 0, 0))}   # x 1/16


def _kernel(value: str) -> None:
    if value not in KERNELS:
        raise XaiUsageError(f"--recipro-kernel {value!r}: use one of {', '.join(KERNELS)}")


KERNEL = Option("recipro_kernel", str, "gaussian", choices=lambda: list(KERNELS), check=_kernel,
                help="Recipro-CAM: the mask around each position, `gaussian` (3x3, the paper's) or `point` (that "
                     "position only, openvino-xai's ReciproCAM for CNNs).")


class ReciproCAM(CamMethod):
    name = "recipro-cam"
    aliases = ("reciprocam",)
    summary = "target score when the layer keeps one position (3x3 Gaussian), minus its score of an empty layer"
    reference = "ReciproCAM"
    reference_package = "openvino_xai.methods"
    checked = ("identical maps (`point`: ReciproCAM on a CNN, `gaussian`: ViTReciproCAM on a ViT, both shifted by "
               "the empty-layer score; bench/check_reciprocam_openvino.py); closed form CAM/(h·w) on a pooled "
               "linear head; pointing game >= 95% on the built-in models")
    notes = ("ours: one forward per position of the layer (h·w: 64 on builtin:shapes-cls `last`, 9216 on "
             "builtin:shapes-seg `decoder_last`), batched by memory, every target per pass; logit scores "
             "(openvino-xai's), not the paper's softmax, so segmentation targets work")
    options = (KERNEL,)
    gradients = False
    order = 120

    def cam_image(self, step):
        import numpy as np

        scores, empty = recipro_scores(step.engine.adapter.net, step.layer, step.x, step.raw.detach(), step.scorers,
                                       step.options["recipro_kernel"], step.batch_size(), step.engine.progress)
        step.note(recipro={"positions": int(scores.shape[1]), "empty_score": [float(e) for e in empty]})
        h, w = step.acts.shape[-2:]
        return (scores - empty[:, None]).reshape(len(empty), h, w).astype(np.float32)


def masks(kernel: str, idx, h: int, w: int):
    """(k, h, w) masks of the positions `idx` (row-major over the h x w grid)."""
    import torch

    g = torch.tensor(KERNELS[kernel], dtype=torch.float32) / 16
    idx = torch.as_tensor(list(idx))
    out = torch.zeros(len(idx), h, w)
    rows, i, j = torch.arange(len(idx)), idx // w, idx % w
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = i + dy, j + dx
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            out[rows[ok], y[ok], x[ok]] = g[dy + 1, dx + 1]
    return out


def recipro_scores(net, layer, x, raw, scorers, kernel: str = "gaussian", batch_size: int = 16,
                   progress: bool = False):
    """(T, h·w) target scores with the layer's output masked to each position, and (T,) with it all zero."""
    import sys

    import numpy as np
    import torch

    grid = layer.reshape_transform(tuple(x.shape[-2:]))
    acts = grid(raw) if grid else raw                       # (1, C, h, w)
    _, _, h, w = acts.shape
    positions = h * w
    state: dict = {}

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (state["out"], *output[1:])
        return state["out"]

    def to_layer(masked):                                   # (k, C, h, w) back into the layer's own layout
        if not grid:
            return masked
        k = masked.shape[0]
        prefix = raw.shape[1] - h * w
        out = raw.expand(k, *raw.shape[1:]).clone()
        out[:, prefix:, :] = masked.permute(0, 2, 3, 1).reshape(k, h * w, -1)
        return out

    def run(masked) -> np.ndarray:
        state["out"] = to_layer(masked.to(raw.dtype))
        out = net(x.expand(masked.shape[0], *x.shape[1:]))
        return np.stack([s(out).float().cpu().numpy() for s in scorers])   # (T, k)

    chunk = max(1, int(batch_size))
    starts = range(0, positions, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"recipro-cam {layer.name}", unit="pass", file=sys.stderr, leave=False)
    scores = np.zeros((len(scorers), positions), np.float32)
    handle = layer.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            empty = run(torch.zeros_like(acts))[:, 0]
            for s in starts:
                idx = range(s, min(s + chunk, positions))
                m = masks(kernel, idx, h, w).to(acts.device, acts.dtype)
                scores[:, s:s + len(idx)] = run(acts * m[:, None])
    finally:
        handle.remove()
        state.clear()
    return scores, empty
