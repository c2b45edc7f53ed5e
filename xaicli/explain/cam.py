"""The Grad-CAM family on any ModelAdapter: one pipeline, methods plugged in.

Why our own pipeline around grad-cam's method code rather than grad-cam's `__call__`:

- Raw maps. grad-cam min-max scales every map; the record keeps maps raw (ReLU'd,
  bilinearly resized) where the method allows. grad-cam's output is exactly the
  min-max scaling of what we store, since bilinear resizing commutes with it.
- One forward per image for every method, layer and target: hooks capture all layers
  at once, and each target costs one backward (`autograd.grad` into the layer outputs,
  so nothing below the lowest layer is recorded or differentiated).
- Memory and speed traps removed: a thin SVD for every eigen projection (grad-cam's
  full SVD needs 32 GiB on a 256x256 layer), ScoreCAM that scores all targets per pass,
  chunks its masks and batches by memory (cams/scorecam.py), and hooks that live only
  while one image is explained.

The per-method arithmetic (channel weights of Grad-CAM, Grad-CAM++, XGrad-CAM, FEM,
KPCA-CAM, random) is grad-cam's own code, called on our activations and gradients, so
those maps equal a direct grad-cam call; ScoreCAM, AblationCAM and ShapleyCAM are ours
(xaicli/explain/cams/) and are tested against grad-cam by correlation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xaicli.errors import XaiError, XaiUsageError


@dataclass(frozen=True)
class Method:
    name: str
    reference: str                 # the pytorch_grad_cam class it reproduces
    gradients: bool                # needs d(score)/d(activations)
    tasks: tuple[str, ...] = ("classification", "segmentation")
    in_all: bool = True            # part of `--method all`
    summary: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradcam", "GradCAM", True, summary="channel weights: mean gradient"),
    Method("hirescam", "HiResCAM", True, summary="gradient x activation, summed over channels"),
    Method("gradcam++", "GradCAMPlusPlus", True, summary="channel weights from 2nd/3rd-order gradient terms"),
    Method("xgradcam", "XGradCAM", True, summary="channel weights: activation-weighted gradients"),
    Method("layercam", "LayerCAM", True, summary="positive gradient x activation, per pixel"),
    Method("gradcam-elementwise", "GradCAMElementWise", True, summary="ReLU(gradient x activation), per pixel"),
    Method("eigencam", "EigenCAM", False, summary="first principal component of the activations (no target)"),
    Method("eigengradcam", "EigenGradCAM", True, summary="first principal component of gradient x activation"),
    Method("segeigencam", "SegEigenCAM", True, summary="principal component of |gradient| x activation, sign-corrected"),
    Method("scorecam", "ScoreCAM", False, summary="channel weights: softmax of the target score of the masked input"),
    Method("ablationcam", "AblationCAM", False, summary="channel weights: score drop when the channel is ablated"),
    Method("shapleycam", "ShapleyCAM", True, summary="gradient and Hessian-vector product weights"),
    Method("fem", "FEM", False, summary="channels weighted by their k-sigma outlier fraction (no target)"),
    Method("kpcacam", "KPCA_CAM", False, summary="kernel-PCA component of the activations (no target)"),
    Method("finercam", "FinerCAM", True, ("classification",),
           summary="Grad-CAM of the target against its most similar classes"),
    Method("fullgrad", "FullGrad", True, summary="input and bias gradients of every conv/BN layer (ignores --layer)"),
    Method("refinecam", "RefineCAM", True,
           summary="product of the Grad-CAM++ maps of all --layer values (one map)"),
    Method("randomcam", "RandomCAM", False, in_all=False, summary="random channel weights: a baseline for metrics"),
)}

ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "gradcamelementwise": "gradcam-elementwise",
           "kpca_cam": "kpcacam", "kpca-cam": "kpcacam", "score-cam": "scorecam", "grad-cam": "gradcam",
           "grad-cam++": "gradcam++", "ablation-cam": "ablationcam", "eigen-cam": "eigencam",
           "layer-cam": "layercam", "hires-cam": "hirescam", "finer-cam": "finercam", "shapley-cam": "shapleycam",
           "seg-eigen-cam": "segeigencam", "random": "randomcam"}

# Methods whose map does not depend on the layer list entry by entry.
WHOLE_MODEL = ("fullgrad", "refinecam")


def method_names() -> list[str]:
    return list(METHODS)


def resolve_methods(names: Sequence[str] | None, task: str | None = None, layers: int = 1) -> list[str]:
    """Canonical method names from `--method` values; `all` = every method that fits the task
    (refinecam only with `layers` >= 2 distinct modules). An empty name is a usage error."""
    out: list[str] = []
    for raw in names or ["gradcam"]:
        for name in str(raw).split(","):
            key = name.strip().lower()
            if not key:
                raise XaiUsageError(f"--method {raw!r} has an empty method name; use one of "
                                    f"{', '.join(METHODS)} or all, comma-separated without empty entries")
            if key == "all":
                picked = [m.name for m in METHODS.values() if m.in_all and (task is None or task in m.tasks)
                          and not (m.name == "refinecam" and layers < 2)]
            else:
                key = ALIASES.get(key, ALIASES.get(key.replace("_", ""), key))
                if key not in METHODS:
                    raise XaiUsageError(f"unknown --method {name.strip()!r}; use one of {', '.join(METHODS)} or all")
                m = METHODS[key]
                if task is not None and task not in m.tasks:
                    raise XaiUsageError(f"--method {key} applies to {' and '.join(m.tasks)} models only, "
                                        f"not to this {task} model")
                picked = [key]
            out.extend(p for p in picked if p not in out)
    return out


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


class FinerScore:
    """FinerCAM's target: the class against its most similar classes (grad-cam's FinerWeightedTarget)."""

    def __init__(self, main: int, comparison: list[int], alpha: float = 1.0):
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

        self.target = FinerWeightedTarget(main, comparison, alpha)
        self.main, self.comparison, self.alpha = main, comparison, alpha

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return self.target(out)


@dataclass
class CamMap:
    key: str
    values: np.ndarray            # (T, H, W) float32 at the image size
    info: dict[str, Any]


# -- hooks ----------------------------------------------------------------------

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


# -- projections (thin SVD) -----------------------------------------------------

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


# -- the engine -----------------------------------------------------------------

class CamEngine:
    """Computes CAM maps for one image at a time with fixed methods, layers and options."""

    def __init__(self, adapter, layers, methods: Sequence[str], *, aug_smooth: bool = False,
                 eigen_smooth: bool = False, batch_size: int | None = None, progress: bool = False,
                 largest_bytes: int = 0, scorecam_exact: bool | None = None, seed: int = 0):
        self.adapter = adapter
        self.layers = list(layers)
        self.methods = list(methods)
        self.aug_smooth = aug_smooth
        self.eigen_smooth = eigen_smooth
        self.batch_size = batch_size
        self.progress = progress
        self.largest_bytes = largest_bytes      # the largest module output of one sample (layer probe)
        # None: by device. The bfloat16 screen pays only where bf16 convolutions are fast (a GPU);
        # on a CPU it made ScoreCAM 5.3x slower than grad-cam's (FIELD-NOTES), so it is opt-in there.
        self.scorecam_exact = adapter.device.type != "cuda" if scorecam_exact is None else bool(scorecam_exact)
        self.seed = seed
        self._gc: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}

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

        if self.aug_smooth:
            maps = self._aug_smooth(x, scorers_for, seg)
        else:
            maps = self._at_model_size(x, scorers_for)
        out = []
        for (method, lname), m in maps.items():
            full = ad.to_image_size(m[None].float(), image_hw)[0]
            out.append(CamMap(f"cam/{method}/{lname}", full.cpu().numpy().astype(np.float32, copy=False),
                              self._info(method, lname, self.targets)))
        return out

    # -- info -------------------------------------------------------------------
    def _info(self, method: str, lname: str, targets) -> dict[str, Any]:
        if method == "fullgrad":
            module = None
        elif method == "refinecam":
            module = "+".join(la.path for la in distinct_modules(self.layers))
        else:
            module = next(la.path for la in self.layers if la.name == lname)
        normalised = self.aug_smooth or method in ("fullgrad", "refinecam")
        info = {"kind": "cam", "method": method, "layer": lname, "module": module,
                "targets": [t.to_meta() for t in targets], "normalised": bool(normalised),
                "aug_smooth": self.aug_smooth, "eigen_smooth": self.eigen_smooth,
                "reference": f"pytorch_grad_cam.{METHODS[method].reference}"}
        if "scores" in self.last_stats:
            info["scores"] = self.last_stats["scores"]
        extra = self.last_stats.get(method, {}).get(lname)
        if extra:
            info.update(extra)
        if method in ("eigencam", "fem", "kpcacam"):
            info["target_independent"] = True
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
                m = minmax(m)
                m = tr.deaugment_mask(m[:, None])[:, 0]
                acc[key] = acc[key] + m if key in acc else m
            n += 1
        self.last_stats["scores"] = scores
        return {k: v / n for k, v in acc.items()}

    # -- one pass at model resolution ------------------------------------------
    def _at_model_size(self, x: torch.Tensor, scorers_for) -> dict[tuple[str, str], torch.Tensor]:
        ad = self.adapter
        net = ad.net
        per_layer = [m for m in self.methods if m not in WHOLE_MODEL]
        if "refinecam" in self.methods and "gradcam++" not in per_layer:
            per_layer.append("gradcam++")
        need_grad = any(METHODS[m].gradients for m in per_layer)
        second = "shapleycam" in per_layer
        finer = "finercam" in per_layer
        out: dict[tuple[str, str], torch.Tensor] = {}
        stats = self.last_stats
        model_hw = tuple(x.shape[-2:])
        scorers: list = []
        layers = distinct_modules(self.layers)     # each module once, whatever names it was given
        if per_layer and layers:
            taps = Taps(layers)
            with taps, _second_order(second):
                with torch.enable_grad() if need_grad else torch.no_grad():
                    logits = net(x)
                    tensors = taps.tensors()
                    scorers = scorers_for(logits)
                    stats["scores"] = [float(s(logits[0].detach())) for s in scorers]
                    reshapes = [la.reshape_transform(model_hw) for la in layers]
                    acts = [(r(t) if r else t).detach() for t, r in zip(tensors, reshapes)]
                    grads = shap = fgrads = None
                    if need_grad and scorers:
                        grads, shap = self._gradients(logits, tensors, reshapes, scorers, second, keep=finer)
                        if finer:
                            fs = self._finer_scores(logits[0].detach(), self.targets)
                            fgrads, _ = self._gradients(logits, tensors, reshapes, fs, False)
                            stats.setdefault("finercam", {})
                            for la in layers:
                                stats["finercam"][la.name] = {"comparison": [f.comparison for f in fs]}
            taps.clear()
            del logits
            T = len(scorers)
            for i, layer in enumerate(layers):
                a = acts[i].float().cpu().numpy()           # (1, C, h, w)
                g = grads[i] if grads is not None else None
                for m in per_layer:
                    if m == "finercam":
                        gc_w = self._gc_obj("gradcam").get_cam_weights
                        cam = np.concatenate([self._weighted(a, gc_w(None, None, None, a, fgrads[i][t:t + 1]))
                                              for t in range(T)])
                    else:
                        cam = self._cam_image(m, layer, x, a, g, shap[i] if shap else None, tensors[i], scorers,
                                              net, T)
                    cam = np.maximum(cam, 0)
                    out[(m, layer.name)] = _resize(cam, model_hw)
            del tensors, acts
            first = {la.path: la.name for la in layers}
            for layer in self.layers:                   # the other names of a module: the same map
                name = first[layer.path]
                if layer.name != name:
                    for m in per_layer:
                        out[(m, layer.name)] = out[(m, name)].clone()
                    for v in stats.values():
                        if isinstance(v, dict) and name in v:
                            v[layer.name] = v[name]
        if "fullgrad" in self.methods:
            if not scorers:
                with torch.no_grad():
                    scorers = scorers_for(net(x))
            out[("fullgrad", "bias-layers")] = self._fullgrad(x, scorers)
        if "refinecam" in self.methods:
            prod = None
            for layer in layers:                        # a module named twice counts once
                m = minmax(out[("gradcam++", layer.name)])
                prod = m if prod is None else prod * m
            out[("refinecam", "+".join(la.name for la in self.layers))] = minmax(prod)
            if "gradcam++" not in self.methods:
                for layer in self.layers:
                    out.pop(("gradcam++", layer.name), None)
        return out

    def _gradients(self, logits, tensors, reshapes, scorers, second: bool, keep: bool = False):
        """Per target: d score / d layer output (reshaped, numpy), and ShapleyCAM's HVP terms."""
        grads = [[] for _ in tensors]
        hvps = [[] for _ in tensors] if second else None
        for t, score_fn in enumerate(scorers):
            score = score_fn(logits[0])
            last = t == len(scorers) - 1 and not keep
            gs = torch.autograd.grad(score, tensors, retain_graph=second or not last, create_graph=second,
                                     allow_unused=True)
            for i, (g, tensor, r) in enumerate(zip(gs, tensors, reshapes)):
                g = torch.zeros_like(tensor) if g is None else g
                if second:
                    from xaicli.explain.cams.shapley import hessian_vector

                    h = hessian_vector(g, tensor, retain=not (last and i == len(tensors) - 1))
                    hvps[i].append((r(h) if r else h).detach().float().cpu().numpy())
                grads[i].append((r(g) if r else g).detach().float().cpu().numpy())
        return [np.concatenate(g) for g in grads], ([np.concatenate(h) for h in hvps] if second else None)

    def _finer_scores(self, logits_row: torch.Tensor, targets) -> list[FinerScore]:
        out = []
        k = logits_row.shape[0]
        vals = logits_row.float().cpu().numpy()
        for t in targets:
            order = [int(i) for i in np.argsort(np.abs(vals - vals[t.index]), kind="stable") if i != t.index]
            out.append(FinerScore(t.index, order[:min(3, k - 1)]))
        return out

    def _gc_obj(self, name: str):
        """A hook-free grad-cam method object, for its arithmetic only (no target layers → no hooks)."""
        obj = self._gc.get(name)
        if obj is None:
            import pytorch_grad_cam as gc

            cls = getattr(gc, METHODS[name].reference)
            obj = cls(self.adapter.net, [])
            self._gc[name] = obj
        return obj

    def _weighted(self, acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        weighted = np.asarray(weights, dtype=np.float32)[:, :, None, None] * acts
        return projection(weighted) if self.eigen_smooth else weighted.sum(axis=1)

    def _elementwise(self, weighted: np.ndarray) -> np.ndarray:
        return projection(weighted) if self.eigen_smooth else weighted.sum(axis=1)

    def _cam_image(self, m: str, layer, x, a, g, hvp, raw, scorers, net, T: int) -> np.ndarray:
        """(T, h, w) map before ReLU for method `m` on one layer.

        Computed target by target on (1, C, h, w) rows, as one grad-cam call per image
        does: channel sums of gradient x activation cancel heavily, and summing a (T, ...)
        array in another order changes their low bits.
        """
        rows = range(T)
        if m in ("gradcam", "gradcam++", "xgradcam"):
            cw = self._gc_obj(m).get_cam_weights
            return np.concatenate([self._weighted(a, cw(None, None, None, a, g[t:t + 1])) for t in rows])
        if m == "hirescam":
            return np.concatenate([self._elementwise(g[t:t + 1] * a) for t in rows])
        if m == "gradcam-elementwise":
            return np.concatenate([self._elementwise(np.maximum(g[t:t + 1] * a, 0)) for t in rows])
        if m == "layercam":
            return np.concatenate([self._elementwise(np.maximum(g[t:t + 1], 0) * a) for t in rows])
        if m == "eigencam":
            return np.repeat(projection(a), T, axis=0)
        if m == "eigengradcam":
            return np.concatenate([projection(g[t:t + 1] * a) for t in rows])
        if m == "segeigencam":
            return np.concatenate([projection(np.abs(g[t:t + 1]) * a, sign_correct=True) for t in rows])
        if m == "fem":
            return np.repeat(self._gc_obj("fem").get_cam_image(None, None, None, a, None, False), T, axis=0)
        if m == "kpcacam":
            a_k, grid = kpca_input(a)
            if grid is not None:
                self.last_stats.setdefault("kpcacam", {})[layer.name] = {"kpca_grid": list(grid)}
            return np.repeat(self._gc_obj("kpcacam").get_cam_image(None, None, None, a_k, None, False), T, axis=0)
        if m == "randomcam":
            w = np.random.RandomState(self.seed).uniform(-1, 1, size=(1, a.shape[1]))   # as RandomCAM draws
            return np.repeat(self._weighted(a, w), T, axis=0)
        if m == "shapleycam":
            w = (g - 0.5 * hvp).mean(axis=tuple(range(2, g.ndim)))
        elif m == "scorecam":
            from xaicli.explain.cams.scorecam import scorecam_weights

            w, info = scorecam_weights(net, x, torch.from_numpy(a).to(x.device), scorers,
                                       batch_size=self._batch(x), progress=self.progress,
                                       exact=self.scorecam_exact, desc=f"scorecam {layer.name}",
                                       screen_size=self._screen_size(x), screen_net=self._screen_net())
            self.last_stats.setdefault("scorecam", {})[layer.name] = {"scorecam": info}
        elif m == "ablationcam":
            from xaicli.explain.cams.ablation import ablation_weights

            w, info = ablation_weights(net, layer.module, x, raw.detach(), a, scorers, batch_size=self._batch(x),
                                       progress=self.progress, desc=f"ablationcam {layer.name}",
                                       vit=layer.tokens is not None)
            self.last_stats.setdefault("ablationcam", {})[layer.name] = {"ablation": info}
        else:
            raise AssertionError(m)
        return np.concatenate([self._weighted(a, w[t:t + 1]) for t in rows])

    def _screen_net(self):
        """The bfloat16 copy ScoreCAM screens with, made once per engine (None: use autocast)."""
        if self.scorecam_exact:
            return None
        if not hasattr(self, "_twin"):
            from xaicli.explain.cams.scorecam import screening_copy

            self._twin = screening_copy(self.adapter.net)
        return self._twin

    def _screen_size(self, x: torch.Tensor) -> tuple[int, int] | None:
        """ScoreCAM's screening input: a quarter of the model's size, a multiple of what the model needs."""
        mult = max(1, int(getattr(self.adapter.preprocessing, "multiple", 1) or 1))
        h, w = x.shape[-2:]
        sh, sw = max(mult, (h // 4) // mult * mult), max(mult, (w // 4) // mult * mult)
        return (sh, sw) if (sh, sw) != (h, w) else None

    def _batch(self, x: torch.Tensor) -> int:
        """Passes per forward for ScoreCAM: --batch-size, else what a quarter of free memory holds."""
        if self.batch_size:
            return self.batch_size
        return memory_batch(self.adapter.device, self.largest_bytes or x.numel() * 4 * 16, x.numel() * 4)

    def _fullgrad(self, x: torch.Tensor, scorers) -> torch.Tensor:
        from xaicli.explain.cams.fullgrad import fullgrad

        return fullgrad(self.adapter.net, x, scorers, self.eigen_smooth)


KPCA_MAX_POSITIONS = 4096


def kpca_input(a: np.ndarray):
    """KPCA-CAM builds an N x N kernel over the N positions of the layer (34 GB at 256x256):
    above KPCA_MAX_POSITIONS the activations are average-pooled to fit, and the grid is noted."""
    n = a.shape[-1] * a.shape[-2]
    if n <= KPCA_MAX_POSITIONS:
        return a, None
    k = math.ceil(math.sqrt(n / KPCA_MAX_POSITIONS))
    pooled = F.avg_pool2d(torch.from_numpy(a), k, ceil_mode=True).numpy()
    return pooled, tuple(pooled.shape[-2:])


def _second_order(on: bool):
    """ShapleyCAM differentiates twice: fused attention kernels (flash, efficient) have no
    double backward, so attention runs on the math kernel while it is asked for."""
    import contextlib

    if not on:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def release_gradcam(cam) -> None:
    """Remove a grad-cam object's hooks. Its own release() detaches saved gradients in place,
    which raises on views (ConvNeXt's gradients are views): drop the lists first."""
    aag = getattr(cam, "activations_and_grads", None)
    if aag is None:
        return
    aag.activations = []
    aag.gradients = []
    aag.release()


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


def _resize(cam: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """(T, h, w) → (T, H, W) bilinear, half-pixel centres: what grad-cam's cv2.resize does."""
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    return F.interpolate(t[:, None], size=tuple(hw), mode="bilinear", align_corners=False)[:, 0]
