"""FullGrad (grad-cam's FullGrad, same map) that works on any module order and costs one resize per layer.

FullGrad sums |input x input-gradient| and, for every Conv2d/BatchNorm2d with a bias,
|bias x gradient of its output|, each channel min-max scaled and resized to the input
size. grad-cam pairs biases with gradients by position: biases in module definition
order, gradients in reverse execution order. When the two orders differ (U-Net++'s
dense decoder defines blocks in another order than it runs them) it multiplies the
wrong tensors and fails. Here each gradient is taken for the module's own output.
Resizing is linear, so the channels of a layer are summed before its single resize
(grad-cam resizes every channel: hundreds of thousands of resizes on an EfficientNet).

It ignores --layer and runs once per image. Its output is min-max scaled, as
grad-cam's: the per-layer parts are scaled before they are summed, so there is no raw
map to keep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bias_layers(net) -> list:
    """The layers grad-cam's FullGrad uses: Conv2d / BatchNorm2d (exact types) with a bias."""
    return [m for m in net.modules() if type(m) in (torch.nn.Conv2d, torch.nn.BatchNorm2d) and m.bias is not None]


def _bias(layer) -> torch.Tensor:
    if isinstance(layer, torch.nn.BatchNorm2d):
        return (-(layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)) + layer.bias).detach()
    return layer.bias.detach()


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """grad-cam's per-map scale_cam_image on (N, h, w): (x - min) / (1e-7 + max)."""
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True)[0]
    flat = flat / (1e-7 + flat.max(1, keepdim=True)[0])
    return flat.reshape(maps.shape)


def _resize(maps: torch.Tensor, hw) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(hw):
        return maps
    return F.interpolate(maps[None], size=tuple(hw), mode="bilinear", align_corners=False)[0]


def fullgrad(net, x: torch.Tensor, scorers, eigen_smooth: bool = False) -> torch.Tensor:
    """(T, H, W) FullGrad maps at model resolution, one per target, min-max scaled."""
    layers = bias_layers(net)
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, args, out):
        outputs.append((out, _bias(module)))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        xi = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = net(xi)
        tensors = [o for o, _ in outputs if o.requires_grad]
        biases = [b for o, b in outputs if o.requires_grad]
    finally:
        for h in handles:
            h.remove()
    hw = tuple(x.shape[-2:])
    maps = []
    for t, score_fn in enumerate(scorers):
        grads = torch.autograd.grad(score_fn(logits[0]), [xi, *tensors], retain_graph=t < len(scorers) - 1,
                                    allow_unused=True)
        with torch.no_grad():
            parts = [_scaled((grads[0] * xi).abs()[0])]          # (Cin, H, W): each input channel a part
            for g, b in zip(grads[1:], biases):
                if g is None:
                    g = torch.zeros(1, b.shape[0], 1, 1)
                layer_map = _scaled((b[None, :, None, None] * g).abs()[0]).sum(0, keepdim=True)
                parts.append(_resize(layer_map, hw))
            stack = torch.cat(parts)                               # (Cin + L, H, W)
            if eigen_smooth:
                maps.append(_eigen(stack, hw))
            else:
                maps.append(stack.sum(0))
    del outputs, tensors, logits
    out = torch.stack(maps)
    return _scaled(out).float()


def _eigen(stack: torch.Tensor, hw) -> torch.Tensor:
    """grad-cam's eigen-smooth for FullGrad: parts rescaled at 1/8 size, first principal component."""
    from xaicli.explain.cams._tools import projection

    small = (max(1, hw[0] // 8), max(1, hw[1] // 8))
    parts = _resize(_scaled(stack), small)
    proj = torch.from_numpy(projection(parts[None].numpy()))       # (1, h/8, w/8)
    return _resize(_scaled(proj), hw)[0]
