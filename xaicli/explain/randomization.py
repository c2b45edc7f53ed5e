"""Model-parameter randomisation test (Adebayo et al., 2018), cascading from the top layer down.

If an explanation is faithful to the model, destroying the model's learnt weights must
change it. Layers are the modules that own parameters, in the order a forward pass
runs them; the cascade re-initialises them from the output end backwards (PyTorch's
own `reset_parameters`, or a random permutation of the values for modules without
one). The map is recomputed at `steps` checkpoints along the cascade (the first after
the top layer alone, the last with every layer randomised) and compared with the map
recomputed by the intact model (same method, settings and target, so only the
weights differ) by Spearman rank correlation of the signed spatial maps.

A map whose |rank correlation| stays at or above FLAG_AT after the whole model has
been randomised does not depend on what the model learnt: `rand_flag` = 1.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from typing import Any, Callable

import numpy as np

from xaicli.metrics.similarity import spearman
from xaicli.metrics.statistics import spatial

FLAG_AT = 0.5
log = logging.getLogger("xai")


def layer_order(adapter, image: np.ndarray) -> list[str]:
    """Names (relative to the user's model) of parameter-owning modules, in forward execution order."""
    import torch

    from xaicli.models.layers import refuse_torchscript

    refuse_torchscript(adapter, "--randomize (to order the layers)")
    order: list[str] = []
    handles = []
    for name, mod in adapter.module.named_modules():
        if any(True for _ in mod.parameters(recurse=False)):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
    try:
        with torch.no_grad():
            adapter.forward(adapter.prepare(image))
    finally:
        for h in handles:
            h.remove()
    seen: dict[str, None] = {}
    for n in order:
        seen.setdefault(n, None)
    return list(seen)


def checkpoints(n_layers: int, steps: int) -> list[int]:
    """How many top layers are randomised at each checkpoint: 1 first, all last (for steps ≥ 2)."""
    if n_layers < 1:
        return []
    if steps <= 1:
        return [1]
    return sorted({int(round(v)) for v in np.linspace(1, n_layers, min(steps, n_layers))})


def column(name: str) -> str:
    """A flat, snake_case key for a layer name: rand_spearman_decoder_blocks_x_0_4."""
    return "rand_spearman_" + (re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "model")


def _randomise(module, gen_seed: int) -> None:
    import torch

    if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
        module.reset_parameters()
        return
    g = torch.Generator().manual_seed(gen_seed)
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            flat = p.detach().flatten()
            p.copy_(flat[torch.randperm(flat.numel(), generator=g).to(flat.device)].view_as(p))


class Randomizer:
    """Builds the randomised models once (seeded) and scores any map-recomputing function against them."""

    def __init__(self, adapter, steps: int = 4, seed: int = 0):
        self.adapter, self.steps, self.seed = adapter, steps, seed
        self.layers: list[str] | None = None
        self.models: list[tuple[str, Any]] = []      # (deepest layer randomised, adapter copy)

    def prepare(self, image: np.ndarray) -> None:
        import torch

        if self.layers is not None:
            return
        self.layers = list(reversed(layer_order(self.adapter, image)))   # top (output end) first
        net = copy.deepcopy(self.adapter.net)
        modules = dict(net.model.named_modules())
        done = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for count in checkpoints(len(self.layers), self.steps):
                for i in range(done, count):
                    _randomise(modules[self.layers[i]], self.seed * 100003 + i)
                done = count
                snapshot = copy.deepcopy(net).eval()
                for p in snapshot.parameters():
                    p.requires_grad_(False)
                self.models.append((self.layers[count - 1], dataclasses.replace(self.adapter, net=snapshot)))

    def scores(self, image: np.ndarray, explain: Callable[[Any], np.ndarray | None]) -> dict[str, Any]:
        """Spearman of explain(randomised) with explain(intact), per checkpoint, plus top/all/flag."""
        self.prepare(image)
        original = explain(self.adapter)
        out: dict[str, Any] = {"rand_spearman_top": None, "rand_spearman_all": None, "rand_flag": None}
        values = []
        for name, ad in self.models:
            m = explain(ad) if original is not None else None
            rho = spearman(original, m) if m is not None else None
            out[column(name)] = rho
            values.append(rho)
        if values:
            out["rand_spearman_top"] = values[0]
            if self.layers and self.models[-1][0] == self.layers[-1]:
                out["rand_spearman_all"] = values[-1]
                out["rand_flag"] = None if values[-1] is None else int(abs(values[-1]) >= FLAG_AT)
        return out

    def evaluate(self, mt, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Scores for one map target of a record, recomputing it the way the record says it was made
        (why it cannot be goes to `warn`, see recompute_function)."""
        image = mt.record.image
        explain = recompute_function(mt, warn)
        if explain is None:
            return {"rand_spearman_top": None, "rand_spearman_all": None, "rand_flag": None}
        return self.scores(image, explain)


# -- recomputing a record's map --------------------------------------------------

def _target(mt):
    """The explain.targets.Target of a map target, or None when the record cannot rebuild it."""
    from xaicli.explain.targets import Target

    t = mt.target
    kind, index, label = t.get("kind", "class"), int(t.get("index", mt.t)), str(t.get("label", ""))
    if kind == "class":
        return Target("class", index, label)
    if kind == "mask" and mt.pred_mask is not None:
        return Target("mask", index, label, mt.pred_mask)
    if kind == "all-pixels":
        return Target("all-pixels", index, label, np.ones(mt.smap.shape, bool))
    return None                                   # a --target-mask region is not stored in the record


def recompute_function(mt, warn: Callable[[str], None] | None = None,
                       purpose: str = "--randomize") -> Callable[..., np.ndarray | None] | None:
    """A function (adapter, image=None, target=None) → (H,W) spatial map that redoes this map's
    method (on the record's image, or `image`: an array like it, float values allowed; for the
    map's target, or another `explain.targets.Target`); None if unsupported.

    The map's family engine (attribution or CAM) redoes it from its meta through the
    method registry, so every registered method is covered. Why a map cannot be redone
    goes to `warn` (one line without the record: callers warn once per run), else to the log."""
    import importlib

    from xaicli.explain import registry

    def problem(reason: str) -> None:
        if warn is not None:
            warn(reason)
        else:
            log.warning("%s %s: %s for %s; its keys are null", mt.record.id, mt.key, reason, purpose)

    info = mt.info
    target = _target(mt)
    if target is None:
        problem("targets made with --target-mask (the region is not stored) cannot be rebuilt")
        return None
    family = registry.family_of(mt.key, info)
    method = registry.by_key(family, info.get("method") or "") if family else None
    if method is None:
        problem(f"maps of method {info.get('method')!r} cannot be recomputed (not a registered method)")
        return None
    engine = importlib.import_module(registry.ENGINES[family])
    reason = engine.redo_problem(method, info)
    if reason:
        problem(reason)
        return None
    def explain(ad, image=None, target=target):
        return spatial(engine.redo(ad, mt.record.image if image is None else image, target, method, info,
                                   mt.record.id))

    return explain
