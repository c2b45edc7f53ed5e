"""The CAM pipeline on any ModelAdapter: the steps fixed here, each method one step (explain/cams/).

Why our own pipeline around grad-cam's method code rather than grad-cam's `__call__`:

- Raw maps. grad-cam min-max scales every map; the record keeps maps raw (ReLU'd,
  bilinearly resized) where the method allows. grad-cam's output is exactly the
  min-max scaling of what we store, since bilinear resizing commutes with it.
- One forward per image for every method, layer and target: hooks capture all layers
  at once, and each target costs one backward (`autograd.grad` into the layer outputs,
  so nothing below the lowest layer is recorded or differentiated).
- Memory and speed traps removed: a thin SVD for every eigen projection (grad-cam's
  full SVD needs 32 GiB on a 256x256 layer), ScoreCAM that scores all targets per pass,
  chunks its masks and batches by memory (cams/_scorecam.py), and hooks that live only
  while one image is explained.

The steps: hooks, forward, target scores, gradients (and Hessian-vector products for
`second_order` methods), then per method and layer `cam_image` (by default the
`channel_weights`-weighted channel sum), ReLU, resize to the model input; whole-model
methods `combine` after; then resize to the image and the meta. Methods are found in
the registry (explain/registry.py); nothing here names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from xaicli.explain import registry
from xaicli.explain.cams._tools import (distinct_modules, hessian_vector, memory_batch, minmax, projection,
                                        release_gradcam, resize, second_order, Taps)

__all__ = ["CamEngine", "CamMap", "TargetScore", "distinct_modules", "method_names", "minmax", "projection",
           "release_gradcam", "resolve_methods", "Taps"]


def __getattr__(name: str):
    if name == "METHODS":        # every CAM method's declaration by name: the registry's, when asked
        return registry.methods("cam")
    raise AttributeError(name)


def method_names() -> list[str]:
    return list(registry.methods("cam"))


def resolve_methods(names: Sequence[str] | None, task: str | None = None, layers: int = 1,
                    tokens: bool | None = None) -> list[str]:
    """Canonical method names from `--method` values (see registry.resolve)."""
    return [m.name for m in registry.resolve("cam", names, task, layers, tokens)]


class TargetScore:
    """grad-cam target callable from Target.weight: score = Σ W·logits for one output row.

    Called with one row (K,) / (K,h,w) it returns a scalar, as grad-cam targets do; with
    a batch (B, K, ...) it returns one score per row.
    """

    def __init__(self, weight: torch.Tensor, deaugment: Callable | None = None):
        self.weight = weight
        self.deaugment = deaugment

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        batched = out.dim() == self.weight.dim() + 1
        if self.deaugment is not None:   # aug-smooth on a segmenter: the region follows the flip
            out = self.deaugment(out if batched else out[None])
            out = out if batched else out[0]
        w = self.weight.to(out.dtype)
        if batched:
            return (out * w).flatten(1).sum(1)
        return (out * w).sum()


@dataclass
class CamMap:
    key: str
    values: np.ndarray            # (T, H, W) float32 at the image size
    info: dict[str, Any]


@dataclass
class LayerStep:
    """What a per-layer method sees for one layer of one image, at the layer's resolution."""

    engine: "CamEngine"
    method: str
    layer: Any                    # models.layers.Layer
    x: torch.Tensor               # the model input (1, C, H, W)
    acts: np.ndarray              # (1, C, h, w) activations (tokens laid out on their grid)
    grads: np.ndarray | None      # (T, C, h, w) d score_t / d activations
    hvp: np.ndarray | None        # (T, C, h, w) Hessian-vector products (second_order methods)
    raw: torch.Tensor             # the layer's output as the model made it
    scorers: list                 # the T scores

    @property
    def targets(self) -> int:
        return len(self.scorers)

    @property
    def options(self) -> dict[str, Any]:
        return self.engine.options

    def weighted(self, w: np.ndarray) -> np.ndarray:
        """(1, h, w): Σ_c w_c · A_c, or its first principal component under --eigen-smooth."""
        weighted = np.asarray(w, dtype=np.float32)[:, :, None, None] * self.acts
        return self.elementwise(weighted)

    def elementwise(self, weighted: np.ndarray) -> np.ndarray:
        return projection(weighted) if self.engine.eigen_smooth else weighted.sum(axis=1)

    def per_target(self, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """fn of each target's gradient row (1, C, h, w), concatenated: one grad-cam call per image
        sums in this order (channel sums cancel heavily; another order changes their low bits)."""
        return np.concatenate([fn(self.grads[t:t + 1]) for t in range(self.targets)])

    def batch_size(self) -> int:
        """Passes per forward for per-channel methods: --batch-size, else what a quarter of free memory holds."""
        e, x = self.engine, self.x
        if e.batch_size:
            return e.batch_size
        return memory_batch(e.adapter.device, e.largest_bytes or x.numel() * 4 * 16, x.numel() * 4)

    def chunk_plan(self):
        """The chunk plan (`explain.chunking.ChunkPlan`) of this input shape's no-grad passes, kept for
        the engine's whole run; None with -b, which fixes the chunk. On a CPU it climbs to the fastest
        size per sample, as IG's chunks do (a fixed 16 was 1.2-1.7x slower where a model is fastest at
        1-4 samples, bench/bench_cam_matrix.py); on an accelerator it is what memory holds."""
        e, x = self.engine, self.x
        if e.batch_size:
            return None
        key = ("chunk_plan", tuple(x.shape[1:]))
        if key not in e.cache:
            from xaicli.explain.chunking import CPU_MAX_ROWS, CPU_START_ROWS, ChunkPlan

            cpu = e.adapter.device.type == "cpu"
            plan = ChunkPlan(tune=cpu, start=CPU_START_ROWS)
            plan.cap = memory_batch(e.adapter.device, e.largest_bytes or x.numel() * 4 * 16, x.numel() * 4,
                                    cap=CPU_MAX_ROWS if cpu else None)
            e.cache[key] = plan
        return e.cache[key]

    def note(self, **info) -> None:
        """Figures for this map's meta."""
        self.engine.last_stats.setdefault(self.method, {}).setdefault(self.layer.name, {}).update(info)


@dataclass
class ModelStep:
    """What a whole-model method sees: the input, every per-layer map at model size, the layers."""

    engine: "CamEngine"
    x: torch.Tensor
    maps: dict                    # (method, layer name) -> (T, H, W) at the model input size
    layers: list                  # every --layer given
    modules: list                 # one per distinct module
    scorers_for: Callable         # logits -> the target scores
    found: list                   # the scores, if the per-layer pass made them

    def scorers(self) -> list:
        if not self.found:
            with torch.no_grad():
                self.found = self.scorers_for(self.engine.adapter.net(self.x))
        return self.found


class CamEngine:
    """Computes CAM maps for one image at a time with fixed methods, layers and options.

    `options` are the cam family's and the methods' declared options (aug_smooth,
    eigen_smooth, scorecam_exact, ...): what is not given takes its declared default.
    """

    def __init__(self, adapter, layers, methods: Sequence, *, batch_size: int | None = None, progress: bool = False,
                 largest_bytes: int = 0, seed: int = 0, **options):
        self.adapter = adapter
        self.layers = list(layers)
        self.decls = [registry.lookup("cam", m) if isinstance(m, str) else m for m in methods]
        if None in self.decls:
            raise ValueError(f"unknown CAM method in {list(methods)}")
        self.methods = [m.name for m in self.decls]
        defaults = registry.option_defaults("cam")
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise TypeError(f"CamEngine got unknown options {unknown}; declared: {sorted(defaults)}")
        self.options = {**defaults, **options}
        self.aug_smooth = bool(self.options["aug_smooth"])
        self.eigen_smooth = bool(self.options["eigen_smooth"])
        self.batch_size = batch_size
        self.progress = progress
        self.largest_bytes = largest_bytes      # the largest module output of one sample (layer probe)
        self.seed = seed
        self.cache: dict[str, Any] = {}         # per-engine objects of methods (grad-cam objects, model copies)
        self.last_stats: dict[str, Any] = {}
        self._modules: dict[tuple[str, str], str | None] = {}

    # -- public -----------------------------------------------------------------
    def explain(self, image: np.ndarray, targets) -> list[CamMap]:
        """Maps of every method x layer for `targets`, (T, H, W) at the image size.

        `targets` is a list of Target, or a function of the logits (1, K[, h, w]) that
        returns them: then the CAM's own forward pass also gives the prediction (one
        forward per image, not two).
        """
        x = self.adapter.prepare(image)
        return self.explain_input(x, targets, tuple(image.shape[:2]))

    def explain_input(self, x: torch.Tensor, targets, image_hw: tuple[int, int]) -> list[CamMap]:
        ad = self.adapter
        model_hw = tuple(x.shape[-2:])
        seg = ad.task == "segmentation"
        self.last_stats = {}
        self.targets: list = []

        def scorers_for(logits, deaugment=None):
            if not self.targets:
                self.targets = list(targets(logits.detach()) if callable(targets) else targets)
            with torch.enable_grad():    # a region's weight is an adjoint taken by autograd
                return [TargetScore(t.weight(ad.num_classes, model_hw if seg else None, image_hw if seg else None,
                                             ad.device), deaugment) for t in self.targets]

        maps = self._aug_smooth(x, scorers_for, seg) if self.aug_smooth else self._at_model_size(x, scorers_for)
        decls = {m.name: m for m in self.decls}
        out = []
        for (method, lname), m in maps.items():
            channels = decls[method].input_channels          # (T, C, h, w): resized per channel
            full = ad.to_image_size(m.float(), image_hw) if channels else ad.to_image_size(m[None].float(), image_hw)[0]
            out.append(CamMap(f"{'attr' if channels else 'cam'}/{method}/{lname}",
                              full.cpu().numpy().astype(np.float32, copy=False), self._info(decls[method], lname)))
        return out

    def grad_cam(self, cls: str):
        """A hook-free grad-cam method object of class `cls`, for its arithmetic only (no target layers)."""
        key = f"grad_cam.{cls}"
        if key not in self.cache:
            import pytorch_grad_cam as gc

            self.cache[key] = getattr(gc, cls)(self.adapter.net, [])
        return self.cache[key]

    # -- info -------------------------------------------------------------------
    def _info(self, m, lname: str) -> dict[str, Any]:
        module = self._modules.get((m.name, lname), next((la.path for la in self.layers if la.name == lname), None))
        info = {"kind": "attribution" if m.input_channels else "cam", "method": m.name, "layer": lname,
                "module": module, "targets": [t.to_meta() for t in self.targets],
                "normalised": bool((self.aug_smooth and not m.input_channels) or m.normalised),
                "aug_smooth": self.aug_smooth, "eigen_smooth": self.eigen_smooth,
                "reference": f"{m.reference_package}.{m.reference}", **m.option_meta(self.options)}
        if "scores" in self.last_stats:
            info["scores"] = self.last_stats["scores"]
        extra = self.last_stats.get(m.name, {}).get(lname)
        if extra:
            info.update(extra)
        if m.target_independent:
            info["target_independent"] = True
        if m.input_channels:            # stored under attr/: the meta says which engine redoes it, and no baseline
            info.update(family="cam", baseline=None)
        return info

    # -- aug smooth -------------------------------------------------------------
    def _aug_smooth(self, x, scorers_for, seg: bool):
        """grad-cam's test-time augmentation: flips x brightness, each map min-max scaled, then averaged.

        The targets and their scores come from the unaugmented image; on a segmenter the
        logits of a flipped image are flipped back before the target region is applied
        (grad-cam applies the region unflipped).
        """
        import ttach as tta

        with torch.no_grad():
            logits = self.adapter.net(x)
        scorers = scorers_for(logits)
        scores = [float(s(logits[0])) for s in scorers]
        del logits
        transforms = tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])
        acc: dict = {}
        n = 0
        for tr in transforms:
            xa = tr.augment_image(x)
            deaug = tr.deaugment_mask if seg else None
            maps = self._at_model_size(xa, lambda lg: scorers_for(lg, deaug))
            for key, m in maps.items():
                if m.ndim == 4:       # a signed per-channel map: averaged as it is
                    m = tr.deaugment_mask(m)
                else:
                    m = tr.deaugment_mask(minmax(m)[:, None])[:, 0]
                acc[key] = acc[key] + m if key in acc else m
            n += 1
        self.last_stats["scores"] = scores
        return {k: v / n for k, v in acc.items()}

    # -- one pass at model resolution ------------------------------------------
    def _at_model_size(self, x: torch.Tensor, scorers_for) -> dict[tuple[str, str], torch.Tensor]:
        per_layer = [m for m in self.decls if not m.whole_model]
        whole = [m for m in self.decls if m.whole_model]
        for name in (r for m in whole for r in m.requires):
            if name not in (m.name for m in per_layer):
                per_layer.append(registry.methods("cam")[name])
        out: dict[tuple[str, str], torch.Tensor] = {}
        layers = distinct_modules(self.layers)     # each module once, whatever names it was given
        scorers = self._per_layer(x, scorers_for, per_layer, layers, out) if per_layer and layers else []
        step = ModelStep(self, x, out, self.layers, layers, scorers_for, scorers)
        for m in whole:
            lname, module, cam = m.combine(step)
            out[(m.name, lname)] = cam
            self._modules[(m.name, lname)] = module
        for m in per_layer:
            if m not in self.decls:                 # asked for by a whole-model method only
                for layer in self.layers:
                    out.pop((m.name, layer.name), None)
        return out

    def _per_layer(self, x, scorers_for, per_layer, layers, out) -> list:
        """Every per-layer method's map on every distinct layer, from one hooked forward; the scores."""
        net = self.adapter.net
        need_grad = any(m.gradients for m in per_layer)
        second = next((m.name for m in per_layer if m.second_order), None)   # who differentiates twice
        stats = self.last_stats
        model_hw = tuple(x.shape[-2:])
        taps = Taps(layers)
        with taps, second_order(second):
            with torch.enable_grad() if need_grad else torch.no_grad():
                logits = net(x)
                tensors = taps.tensors()
                scorers = scorers_for(logits)
                stats["scores"] = [float(s(logits[0].detach())) for s in scorers]
                reshapes = [la.reshape_transform(model_hw) for la in layers]
                acts = [(r(t) if r else t).detach() for t, r in zip(tensors, reshapes)]
                own = {m.name: s for m in per_layer if (s := m.scorers(self, logits[0].detach(), self.targets))}
                grads = hvps = None
                alt: dict[str, list] = {}
                if need_grad and scorers:
                    grads, hvps = self._gradients(logits, tensors, reshapes, scorers, second, keep=bool(own))
                    for i, (name, fs) in enumerate(own.items()):
                        alt[name] = self._gradients(logits, tensors, reshapes, fs, None, keep=i < len(own) - 1)[0]
        taps.clear()
        del logits
        for i, layer in enumerate(layers):
            a = acts[i].float().cpu().numpy()           # (1, C, h, w)
            for m in per_layer:
                g = alt[m.name][i] if m.name in alt else grads[i] if grads is not None else None
                step = LayerStep(self, m.name, layer, x, a, g, hvps[i] if hvps else None, tensors[i],
                                 own.get(m.name, scorers))
                if m.input_channels:
                    out[(m.name, layer.name)] = torch.as_tensor(m.input_map(step))
                    continue
                cam = np.maximum(m.cam_image(step), 0)
                out[(m.name, layer.name)] = resize(cam, model_hw)
        del tensors, acts
        first = {la.path: la.name for la in layers}
        for layer in self.layers:                   # the other names of a module: the same map
            name = first[layer.path]
            if layer.name != name:
                for m in per_layer:
                    out[(m.name, layer.name)] = out[(m.name, name)].clone()
                for v in stats.values():
                    if isinstance(v, dict) and name in v:
                        v[layer.name] = v[name]
        return scorers

    def _gradients(self, logits, tensors, reshapes, scorers, second: str | None, keep: bool = False):
        """Per target: d score / d layer output (reshaped, numpy), and the Hessian-vector products
        when `second` (the method that needs them) is given."""
        grads = [[] for _ in tensors]
        hvps = [[] for _ in tensors] if second else None
        for t, score_fn in enumerate(scorers):
            score = score_fn(logits[0])
            last = t == len(scorers) - 1 and not keep
            gs = torch.autograd.grad(score, tensors, retain_graph=bool(second) or not last, create_graph=bool(second),
                                     allow_unused=True)
            for i, (g, tensor, r) in enumerate(zip(gs, tensors, reshapes)):
                g = torch.zeros_like(tensor) if g is None else g
                if second:
                    h = hessian_vector(g, tensor, retain=not (last and i == len(tensors) - 1), method=second)
                    hvps[i].append((r(h) if r else h).detach().float().cpu().numpy())
                grads[i].append((r(g) if r else g).detach().float().cpu().numpy())
        return [np.concatenate(g) for g in grads], ([np.concatenate(h) for h in hvps] if second else None)


# -- redoing a stored map (stats --randomize) --------------------------------------

def redo_problem(method, info: dict[str, Any]) -> str | None:
    return None


def redo(adapter, image: np.ndarray, target, method, info: dict[str, Any], key: str) -> np.ndarray:
    """The map `info` describes, recomputed with `adapter` for one target: (H, W) float32. Same
    method, layers (by module path), family and method options (from the meta) and target."""
    from xaicli.models.layers import layer_table

    table = layer_table(adapter, adapter.input_size(tuple(image.shape[:2])))
    module = info.get("module") or (info.get("layer") if not method.whole_model else None)
    layers = [table.one(p) for p in module.split("+")] if module else table.resolve(None)
    options = {o.name: info[o.name] for o in registry.options("cam") if info.get(o.name) is not None}
    engine = CamEngine(adapter, layers, [method], **options)
    return engine.explain(image, [target])[0].values[0]
