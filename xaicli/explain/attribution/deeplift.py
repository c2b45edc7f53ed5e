"""DeepLift (Shrikumar et al. 2017) with Captum's rules: Rescale on ReLU-like ops, Captum's max-pool rule.

The map is (x − x') ⊙ m, with m the gradient of the score at x when every nonlinear op
passes back Δout/Δin (its output's change over its input's change between x and the
baseline x') instead of its derivative: then Σ map = S(x) − S(x') (summation-to-delta),
stored like IG's delta. As in Captum, x and x' go through the model in one batch, x rows
first, so every op sees both; where |Δin| < 1e-10 an op passes its plain gradient back.

The rules (explain/backward_rules.py) apply to every call of relu, elu, leaky_relu,
sigmoid, tanh, softplus and max_pool1d/2d/3d, modules or functions alike, each call on
its own. Captum hooks nn modules instead, which gives three differences, all where
Captum's map misses summation-to-delta: (1) a module called twice per forward
(torchvision's ResNet blocks) makes Captum fail; (2) two hooked modules in a row (a ReLU
feeding a max-pool: every ResNet stem) share one tensor, and Captum reads the gradient
there before the second module's rule rewrites it; (3) Captum's max-pool rule routes the
output changes back with max_unpool, which keeps one of two routes into one input where
windows overlap (3x3 stride-2 pools); here the pool's own gradient routes them and adds
them up. Where none of these occurs the maps are equal. Captum's max-pool rule also takes,
where |Δin| < 1e-10, the gradient of the batch's first row for every row; here each pair
takes its own input's (the same for one baseline).

Any other nonlinear op (GELU, SiLU, LayerNorm, softmax, a product of two activations ...)
has no rule, here or in Captum, where it silently keeps its gradient and Σ map drifts from
S(x) − S(x'): here the method refuses such a model, naming the module (and warns if the
delta shows an op the checks did not recognise).

With K baseline draws (-B noise / uniform, --baseline-samples K) the map is the mean over
the K pairs (x, x'_k): DeepLiftShap (attribution/deeplift_shap.py).
"""

from __future__ import annotations

import logging
import weakref

from xaicli.explain.attribution import AttributionMethod

EPS = 1e-10              # Captum's: below, an op's Δin counts as zero and its gradient passes
INCOMPLETE = 1e-3        # relative delta above which a map is said to miss summation-to-delta
RESCALED = ("relu", "elu", "leaky_relu", "sigmoid", "tanh", "softplus")
POOLS = ("max_pool1d", "max_pool2d", "max_pool3d")
OUTSIDE = {"gelu", "silu", "mish", "hardswish", "hardsigmoid", "relu6", "hardtanh", "selu", "celu", "glu", "prelu",
           "rrelu", "logsigmoid", "softsign", "softmax", "log_softmax", "softmin", "layer_norm", "group_norm",
           "instance_norm", "local_response_norm", "rms_norm", "scaled_dot_product_attention", "exp", "log", "sqrt",
           "rsqrt", "erf", "pow", "__pow__", "abs", "sin", "cos", "square", "clamp", "clip", "threshold", "hardshrink",
           "softshrink", "tanhshrink", "max", "amax", "min", "amin", "adaptive_max_pool1d", "adaptive_max_pool2d",
           "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices"}
PRODUCTS = {"mul", "__mul__", "__rmul__", "__imul__", "div", "__truediv__", "__rtruediv__", "__itruediv__", "matmul",
            "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "einsum", "addcmul", "addcdiv"}


class DeepLift(AttributionMethod):
    name = "deeplift"
    summary = "(x - x') times multipliers: each nonlinear op passes back Δout/Δin between x and the baseline"
    reference, reference_package = "DeepLift", "captum.attr"
    checked = ("equal to 1e-5 where Captum applies its rules as written (small CNN, smp U-Net++ with "
               "non-overlapping pools); Σ map = S(x) - S(x') to 1e-4 also where Captum's misses it (U-Net++ "
               "resnet10t, resnet18)")
    notes = ("x and the baseline in one batch; Rescale on relu, elu, leaky_relu, sigmoid, tanh, softplus and "
             "max-pool, on every call (reused modules, functional ReLU); delta stored like IG's; a model with another "
             "nonlinear op is refused naming its module (left out of --method all)")
    baseline = True
    order = 56

    def unfit(self, adapter, image):
        return outside_rules(adapter, image, self.name)

    def compute(self, step):
        return deeplift(step, self.name)


def rescale(x, y, g, call):
    """Rescale: g·Δy/Δx per element, the op's own gradient where |Δx| < EPS (Captum's `nonlinear`)."""
    import torch

    from xaicli.explain.backward_rules import plain_gradient

    (x1, x0), (y1, y0) = x.chunk(2), y.chunk(2)
    din, dout = torch.cat([x1 - x0] * 2), torch.cat([y1 - y0] * 2)
    return torch.where(din.abs() < EPS, plain_gradient(x, g, call), g * dout / din)


def max_pool(x, y, g, call):
    """Captum's `maxpool` rule: the output changes routed back through each row's own argmax, over Δin.

    Captum routes them with max_unpool, which keeps one of two routes to one input (windows that
    overlap: ResNet's 3x3 stride-2 pool) and so loses summation-to-delta there; the pool's own
    gradient applied to g·Δout routes them alike and adds them up (the same map where windows do
    not overlap)."""
    import torch

    from xaicli.explain.backward_rules import plain_gradient

    (x1, x0), (y1, y0) = x.chunk(2), y.chunk(2)
    din = torch.cat([x1 - x0] * 2)
    top = torch.max(y1, y0)
    u1, u0 = plain_gradient(x, g * torch.cat([top - y0, y1 - top]), call).chunk(2)
    plain = plain_gradient(x, g, call).chunk(2)[0]
    return torch.where(din.abs() < EPS, torch.cat([plain] * 2), torch.cat([u1 + u0] * 2) / din)


RULES = {**dict.fromkeys(RESCALED, rescale), **dict.fromkeys(POOLS, max_pool)}


def unruled(name: str, args: tuple) -> str | None:
    """What a call does that the rules do not cover (None: linear, or ruled)."""
    import torch

    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    if base in OUTSIDE:
        return base
    if base in PRODUCTS:
        flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
        if sum(torch.is_tensor(a) and a.grad_fn is not None for a in flat) >= 2:
            return f"{base.strip('_')} of two activations"
    return None


def refusal(adapter, found: list[tuple[str | None, str]], method: str) -> str:
    path, op = found[0]
    modules = dict(adapter.module.named_modules())
    where = ("the model's preprocessing" if path is None else
             f"module {path or '(the model)'} ({type(modules[path]).__name__})" if path in modules else f"module {path}")
    return (f"{where} calls {op}, outside DeepLift's rules (Rescale on relu, elu, leaky_relu, sigmoid, tanh, "
            f"softplus; max-pool), so {method}'s map would not sum to S(x) - S(x'); use integrated-gradients or "
            "gradient-shap")


_FOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()      # model -> [(module, op)] outside the rules


def outside_rules(adapter, image, method: str) -> str | None:
    """Why the model is outside DeepLift's rules (None: inside), from one probe forward per model."""
    import torch

    from xaicli.explain.backward_rules import BackwardRules, scripted

    net = adapter.net
    if scripted(adapter, method):
        return scripted(adapter, method)
    if net not in _FOUND:
        x = adapter.image_to_unit(image).requires_grad_(True)
        with torch.enable_grad(), BackwardRules(adapter.module, {}, unruled) as rules:
            adapter.forward(adapter.normalize(x))
        _FOUND[net] = rules.unruled
    return refusal(adapter, _FOUND[net], method) if _FOUND[net] else None


def deeplift(step, method: str):
    """(T, C, H, W): the mean over the baseline's K draws of DeepLift against each, pairs batched and chunked;
    the summation-to-delta figures go to step.info."""
    import numpy as np
    import torch

    from xaicli.errors import XaiError
    from xaicli.explain.backward_rules import BackwardRules
    from xaicli.explain.integrated_gradients import target_scores

    x, base, weights = step.x, step.baseline, step.weights
    k, n_t = base.shape[0], weights.shape[0]
    total = torch.zeros(n_t, *x.shape[1:], dtype=x.dtype, device=x.device)
    scores = torch.zeros(2, n_t, dtype=torch.float64)       # Σ over pairs of S(x), S(x'_k)

    def work(lo: int, hi: int) -> None:
        nonlocal total, scores
        xs = x.expand(hi - lo, *x.shape[1:]).contiguous().requires_grad_(True)
        with torch.enable_grad():
            with BackwardRules(step.adapter.module, RULES, unruled) as rules:
                logits = step.forward(torch.cat([xs, base[lo:hi]]))
            if rules.unruled:
                raise XaiError(f"--method {method}: {refusal(step.adapter, rules.unruled, method)}")
            s = target_scores(logits, weights)                # (2n, T): x rows, then baseline rows
            grads = [torch.autograd.grad(s[:, t].sum(), xs, retain_graph=t < n_t - 1)[0] for t in range(n_t)]
        diff = xs.detach() - base[lo:hi]
        total = total + torch.stack([(diff * g).sum(0) for g in grads])
        scores = scores + s.detach().double().view(2, hi - lo, n_t).sum(1).cpu()
        step.evaluated += 2 * (hi - lo)

    step.planner.runner(x.unsqueeze(1).expand(1, 2, *x.shape[1:]), k).run(k, work)   # a pair is the unit
    attr = total / k
    f_x, f_b = (scores / k).numpy()
    delta = attr.flatten(1).double().sum(1).cpu().numpy() - (f_x - f_b)
    gap = np.abs(f_x - f_b)
    relative = [float(abs(d) / g) if g > 0 else None for d, g in zip(delta, gap)]
    step.info.update(delta=delta.tolist(), f_x=f_x.tolist(), f_baseline=f_b.tolist(), relative_delta=relative)
    if any(r is not None and r > INCOMPLETE for r in relative):     # an op the checks did not see
        logging.getLogger("xai").warning(
            "%s: %s map misses S(x) - S(x') by %s: the model has a nonlinear op outside DeepLift's rules that was "
            "not recognised (a custom autograd function?); check it, or use integrated-gradients", step.key, method,
            ", ".join(f"{r:.2%}" for r in relative if r is not None))
    return attr
