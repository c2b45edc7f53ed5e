"""ShapleyCAM's Hessian-vector product term (grad-cam's ShapleyCAM, same weights).

grad-cam computes it with its whole model graph kept (`detach=False`) and cannot
reshape ViT tokens before its weighted sum; here the pipeline differentiates into
the hooked layer output once with `create_graph=True`, and this returns H·a, the
derivative of (gradient · activation) with respect to the activation, per layer.
Weights are then mean(gradient - H·a / 2) over the positions.
"""

from __future__ import annotations

import torch

from xaicli.errors import XaiError


def hessian_vector(grad: torch.Tensor, activation: torch.Tensor, retain: bool = True) -> torch.Tensor:
    if not grad.requires_grad:
        return torch.zeros_like(activation)
    try:
        (hvp,) = torch.autograd.grad(grad, activation, grad_outputs=activation.detach(), retain_graph=retain,
                                     allow_unused=True)
    except RuntimeError as exc:
        raise XaiError(f"shapleycam needs second derivatives, which this model does not support "
                       f"({str(exc).splitlines()[0]}); use another --method") from None
    return torch.zeros_like(activation) if hvp is None else hvp
