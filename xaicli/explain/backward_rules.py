"""Backward rules swapped in for one forward/backward pass: guided backprop, deconvolution, DeepLift.

Captum changes ReLU gradients with backward hooks on `nn.ReLU` modules. That misses a
ReLU called as a function (`x.relu()`, `F.relu`: the gradient stays plain there, and
nothing says so), needs care with inplace ReLUs, and DeepLift's module hooks fail on a
module called twice per forward (torchvision's ResNet blocks reuse one `nn.ReLU`).
Here a TorchFunctionMode sees every call of a ruled op while the context is open
(`nn.ReLU.forward` calls `F.relu`, so modules and functions alike), runs the op, and
passes its output through `_Ruled`: the identity forward, whose backward is the rule,
`rule(x, y, g, call)` → the gradient for the op's input x (y its output, g the
gradient arriving at y). Each call keeps its own x and y, so reused modules need
nothing special, and an inplace call is redone out of place on a copy, its result
copied back, so the caller's tensor carries the ruled graph.

Ops named by `watch` (nonlinear ops the rules do not cover) are recorded with the
module that called them (`unruled`), so a method can refuse a model its rules do not
cover, naming the module. `ruled` counts the calls that were ruled: none means the
model has no op of the rule (a guided backprop of a GELU network is its gradient).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode


@dataclass
class Call:
    """One call of a ruled op: its name, the function, the other arguments, the calling module."""

    name: str
    func: Callable
    args: tuple
    kwargs: dict
    module: str | None

    def again(self, x: torch.Tensor) -> torch.Tensor:
        """The op on `x` with the call's other arguments, out of place (to differentiate it again)."""
        return self.func(x, *self.args, **self.kwargs)


Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Call], torch.Tensor]


class _Ruled(torch.autograd.Function):
    """y as it is going forward; backward: rule(x, y, g) for x, nothing for y (the op's own graph is bypassed)."""

    @staticmethod
    def forward(ctx, x, y, rule, call):
        ctx.rule, ctx.call = rule, call
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return ctx.rule(x, y, g, ctx.call), None, None, None


def plain_gradient(x: torch.Tensor, g: torch.Tensor, call: Call) -> torch.Tensor:
    """g pulled back through the op itself at x (the gradient a rule replaces)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        (gi,) = torch.autograd.grad(call.again(xi), xi, g)
    return gi


class BackwardRules(TorchFunctionMode):
    """`with BackwardRules(model, {"relu": rule}):` — every relu inside backpropagates by `rule`.

    `rules` maps op names (`relu`, `max_pool2d`, ...; a trailing `_`, the inplace form, is
    the same op) to rules. `watch(name, args)` → a reason string for ops to report, or None.
    """

    def __init__(self, model: torch.nn.Module, rules: dict[str, Rule],
                 watch: Callable[[str, tuple], str | None] | None = None):
        super().__init__()
        self.model, self.rules, self.watch = model, rules, watch
        self.ruled = 0
        self.unruled: list[tuple[str | None, str]] = []     # (module path, what it calls)
        self._stack: list[str] = []
        self._handles: list = []

    def __enter__(self):
        self.ruled, self.unruled, self._stack = 0, [], []
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(lambda m, a, n=name: self._stack.append(n)))
            self._handles.append(module.register_forward_hook(self._leave))
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return super().__exit__(*exc)

    def _leave(self, module, args, output) -> None:
        self._stack.pop()

    @property
    def module(self) -> str | None:
        """The innermost module running ("" the model itself; None: outside it, e.g. the preprocessing)."""
        return self._stack[-1] if self._stack else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        rule = self.rules.get(name[:-1] if name.endswith("_") else name)
        x = args[0] if args else None
        if rule is None or not (torch.is_tensor(x) and x.requires_grad and torch.is_grad_enabled()):
            if self.watch is not None and rule is None:
                reason = self.watch(name, args)
                if reason:
                    self.unruled.append((self.module, reason))
            return func(*args, **kwargs)
        self.ruled += 1
        func, rest, kwargs, inplace = _out_of_place(func, name, tuple(args[1:]), kwargs)
        call = Call(name, func, rest, kwargs, self.module)
        pre = x.clone() if inplace else x          # an inplace op would overwrite the x the rule needs
        out = _Ruled.apply(pre, func(pre, *rest, **kwargs), rule, call)
        return x.copy_(out) if inplace else out


def _out_of_place(func, name: str, rest: tuple, kwargs: dict):
    """(function, other args, kwargs, whether the call was inplace) of the op's out-of-place form."""
    if name.endswith("_"):                          # x.relu_(), F.relu_(x)
        base = name[:-1]
        return getattr(torch, base, None) or getattr(torch.nn.functional, base), rest, kwargs, True
    try:
        bound = inspect.signature(func).bind(None, *rest, **kwargs)
    except (TypeError, ValueError):                 # a builtin without a signature: no inplace argument
        return func, rest, kwargs, False
    if not bound.arguments.get("inplace"):
        return func, rest, kwargs, False
    named = dict(list(bound.arguments.items())[1:])
    return func, (), {**named, "inplace": False}, True


# -- the rules of guided backpropagation and deconvolution (Captum's, on every ReLU) ----------

def guided(x, y, g, call):
    """Guided backprop (Springenberg et al. 2015): the ReLU's gradient, then only its positive part."""
    return torch.where(y > 0, g, torch.zeros_like(g)).clamp_min(0)


def deconvolution(x, y, g, call):
    """Deconvnet (Zeiler & Fergus 2014): the positive part of the gradient arriving, whatever the input's sign."""
    return g.clamp_min(0)


def relu_rules(model: torch.nn.Module, rule: Rule) -> BackwardRules:
    return BackwardRules(model, {"relu": rule})


# -- what the ReLU-rule methods share (guided-backprop, deconvolution, guided-gradcam) ---------

_RELUS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> ReLU calls per forward


def relu_problem(adapter, image, method: str) -> str | None:
    """Why `method` (a ReLU rule) cannot explain the model: it has no ReLU, neither an nn.ReLU module nor
    a relu call in its forward (one probe forward per model), so the map would be the plain gradient."""
    net = adapter.net
    if scripted(adapter, method):
        return scripted(adapter, method)
    if any(isinstance(m, torch.nn.ReLU) for m in net.modules()):
        return None
    if net not in _RELUS:
        x = adapter.image_to_unit(image).requires_grad_(True)
        with torch.enable_grad(), BackwardRules(net, {"relu": deconvolution}) as rules:
            adapter.forward(adapter.normalize(x))
        _RELUS[net] = rules.ruled
    return None if _RELUS[net] else no_relu(adapter, method)


def scripted(adapter, method: str) -> str | None:
    """A TorchScript model runs compiled ops that no rule can reach: why `method` cannot explain it."""
    if isinstance(adapter.module, torch.jit.ScriptModule):
        return (f"the model is TorchScript, whose compiled ops take no other backward rule than their gradient, "
                f"which {method} needs; pass it as an smp or Hugging Face folder, or as a state dict with --arch")
    return None


def no_relu(adapter, method: str) -> str:
    return (f"the model ({adapter.info.get('arch') or type(adapter.module).__name__}) has no ReLU (no nn.ReLU "
            f"module, no relu call) for {method}'s rule to change, so its map would be the plain gradient; use "
            "saliency or integrated-gradients")


def check_ruled(rules: BackwardRules, adapter, method: str) -> None:
    """A pass whose rule found no ReLU to change: the one-line error (the library path; the CLI checks first)."""
    if not rules.ruled:
        from xaicli.errors import XaiError

        raise XaiError(f"--method {method}: {no_relu(adapter, method)}")


def ruled_gradient(step, rule: Rule, method: str):
    """(T, C, H, W): every target's gradient at step.x with `rule` on every ReLU, in the shared engine's passes."""
    from xaicli.explain.integrated_gradients import Job, attribute

    with BackwardRules(step.adapter.net, {"relu": rule}) as rules:
        (res,) = attribute(step.forward, [Job(method, step.x, step.x, integral=False)], step.weights,
                           planner=step.planner)
    check_ruled(rules, step.adapter, method)
    step.evaluated += res.steps_evaluated
    step.info["f_x"] = res.f_x
    return res.attributions
