"""Layer aliases for CAMs: the names users know from scripts → the module to hook.

Aliases are found by inspecting the module tree *and* one probe forward with hooks
on every module, never by a table of names alone: `encoder._conv_head` exists on
efficientnet encoders but is never called, and what an smp encoder returns as its
stage features depends on the encoder family (efficientnet, resnet, timm `tu-*`).
An alias therefore resolves to the outermost module whose output *is* the feature
the model itself uses (the same tensor, or equal values), and only to modules the
forward pass calls exactly once.

Families and aliases (default marked *):

- smp (Unet, UnetPlusPlus, FPN, ...): `encoder_early`, `encoder_mid`, `encoder_last`,
  `encoder_1` .. `encoder_<depth>` (stage features, stride 2 .. 2**depth),
  `decoder_last`* (the module whose output the segmentation head reads), `seg_head`
  (the head's convolution).
- Hugging Face ConvNeXt (V2): `last`* (the last stage), `stage0` .. `stageN`.
- Hugging Face ViT-like (ViT, DeiT, ...): `last`* and `block0` .. `blockN`: the
  `layernorm_before` of an encoder layer, whose output carries the patch tokens (the
  layer's own output gives all-zero maps: only the CLS token reaches the head).
  Tokens become a (C, H/patch, W/patch) grid; CLS/distillation tokens are dropped.
- Hugging Face Swin: `last`* and `stage0` .. `stageN`: the last block's
  `layernorm_before` of each stage; tokens (B, L, C) become the stage's grid.
- Any other model (timm, torchvision, MONAI, ONNX, pickles), by what the probe saw:
  token models (blocks with a `norm1` / `layernorm_before` / `ln_1` over (B, L, C), as timm's
  and torchvision's ViTs): `last`* and `block0` .. `blockN` as for Hugging Face ViTs, the
  patch size from the patch-embedding convolution (kernel = stride);
  classifiers: `last`*, the last module called with a (B, C, h, w) output, and `stage0` ..
  `stageN`, the last module at each resolution;
  segmenters: `decoder_last`* (the module whose output the last convolution reads),
  `seg_head` (that convolution), `encoder_last` (the deepest feature map: smallest, then
  most channels) and `last`.

Any dotted module path (relative to the user's model) works too, including the
script spellings `encoder._blocks[-1]` and `decoder.blocks["x_0_4"]`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from xaicli.errors import XaiUsageError

SMP_ALIASES = ("encoder_early", "encoder_mid", "encoder_last", "decoder_last", "seg_head")


@dataclass
class Layer:
    """One resolved CAM layer: where to hook and how to read its output as (B, C, h, w)."""

    name: str                      # alias (or path) used in record keys
    alias: str | None
    path: str                      # dotted path relative to the user's model
    module: Any                    # torch.nn.Module
    shape: tuple[int, ...]         # raw output shape of the probe forward (batch 1)
    tokens: str | None = None      # None: (B,C,h,w); "vit": CLS + patch grid; "grid": (B,L,C) grid
    patch: tuple[int, int] | None = None

    def grid(self, length: int, input_hw: tuple[int, int]) -> tuple[int, int, int]:
        """(prefix tokens, grid height, grid width) for `length` tokens of an input of `input_hw`."""
        h, w = input_hw
        if self.tokens == "vit" and self.patch:
            gh, gw = h // self.patch[0], w // self.patch[1]
            if 0 < gh * gw <= length:
                return length - gh * gw, gh, gw
        stride = math.sqrt(h * w / length)
        gh, gw = max(1, round(h / stride)), max(1, round(w / stride))
        if gh * gw != length:
            gw = length // gh
        if gh * gw != length:
            raise ValueError(f"layer {self.path}: cannot arrange {length} tokens on a grid for a {h}x{w} input")
        return 0, gh, gw

    def reshape_transform(self, input_hw: tuple[int, int]):
        """grad-cam style reshape: token tensors (B, L, C) → (B, C, gh, gw); None for conv layers."""
        if self.tokens is None:
            return None

        def reshape(t):
            prefix, gh, gw = self.grid(t.shape[1], input_hw)
            return t[:, prefix:, :].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

        return reshape


@dataclass
class _Call:
    path: str
    start: int
    end: int = -1
    calls: int = 0
    shape: tuple[int, ...] | None = None
    fingerprint: tuple | None = None
    outputs: list = field(default_factory=list)   # fingerprints of list/tuple outputs (smp encoder)
    producers: list = field(default_factory=list)  # per list element: modules that returned that very tensor
    own: list = field(default_factory=list)        # for a tensor output: modules that returned that very tensor
    input_from: list = field(default_factory=list)  # modules that returned the tensor this one was called on


@dataclass
class LayerTable:
    """The aliases of one model at one input size, with what the probe forward saw."""

    family: str
    input_hw: tuple[int, int]
    aliases: dict[str, str]        # alias → path, in display order
    default: str
    calls: dict[str, _Call]
    modules: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)   # path → token kind
    patch: tuple[int, int] | None = None
    sample_bytes: int = 0          # bytes of all module outputs of one forward (batch 1)
    largest_bytes: int = 0         # bytes of the largest module output (batch 1)

    def resolve(self, names: list[str] | None) -> list[Layer]:
        """Layers for `--layer` values (default: the family's default); unknown → usage error."""
        out: list[Layer] = []
        for name in names or [self.default]:
            layer = self.one(name)
            if all(x.path != layer.path or x.name != layer.name for x in out):
                out.append(layer)
        return out

    def one(self, name: str) -> Layer:
        name = name.strip()
        if name in self.aliases:
            path, alias = self.aliases[name], name
        else:
            path, alias = canonical_path(self.modules, name, self.valid_names()), None
        call = self.calls.get(path)
        if call is None or call.calls == 0:
            raise XaiUsageError(f"--layer {name}: module {path or '(model)'} exists but the forward pass never calls it; "
                                f"use one of {', '.join(self.valid_names())} or another module path")
        if call.calls > 1:
            raise XaiUsageError(f"--layer {name}: module {path} runs {call.calls} times per forward pass, so its "
                                f"output is ambiguous; pick its parent or one of {', '.join(self.valid_names())}")
        if call.shape is None or len(call.shape) not in (3, 4):
            raise XaiUsageError(f"--layer {name}: module {path} outputs {call.shape or 'no tensor'}, not a feature map "
                                f"(B,C,h,w) or tokens (B,L,C); use one of {', '.join(self.valid_names())}")
        tokens = None
        if len(call.shape) == 3:   # (B, L, C): a patch grid, after CLS-like tokens when the model has a patch size
            tokens = self.tokens.get(path) or ("vit" if self.patch else "grid")
        return Layer(alias or path, alias, path, self.modules[path], call.shape, tokens, self.patch)

    def valid_names(self) -> list[str]:
        return list(self.aliases)

    def rows(self) -> list[dict[str, Any]]:
        """For --list-layers: alias, module path, output shape; the default first-class flagged."""
        rows = []
        for alias, path in self.aliases.items():
            layer = self.one(alias)
            shape = list(layer.shape)
            cam = None
            if layer.tokens:
                prefix, gh, gw = layer.grid(shape[1], self.input_hw)
                cam = [shape[0], shape[2], gh, gw]
            rows.append({"alias": alias, "module": path, "shape": shape, "cam_shape": cam or shape,
                         "default": alias == self.default})
        return rows


# -- probe ----------------------------------------------------------------------

def _fingerprint(t) -> tuple:
    import torch

    with torch.no_grad():
        f = t.detach().float()
        return (tuple(t.shape), float(f.sum()), float(f.abs().sum()))


def _same(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None or a[0] != b[0]:
        return False
    return all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a[1:], b[1:]))


def probe(model, input_shape: tuple[int, ...], device=None) -> tuple[dict[str, _Call], dict[str, Any], int, int]:
    """One no-grad forward with hooks on every module: call order, call counts, output shapes.

    Keeps fingerprints, not tensors, so the probe costs one forward's memory. Returns
    (calls by path, modules by path, bytes of all module outputs and of the largest one,
    per sample).
    """
    import torch

    modules = dict(model.named_modules())
    calls: dict[str, _Call] = {}
    counter = [0]
    total = [0]
    biggest = [0]
    handles = []

    def pre(path):
        def hook(mod, args):
            c = calls.get(path)
            if c is None:
                calls[path] = c = _Call(path, counter[0])
                counter[0] += 1
                if args and torch.is_tensor(args[0]):
                    c.input_from = list(getattr(args[0], "_xai_producers", []))
            c.calls += 1
        return hook

    def post(path):
        def hook(mod, args, out):
            c = calls[path]
            c.end = counter[0]
            counter[0] += 1
            t = out[0] if isinstance(out, tuple) and out and torch.is_tensor(out[0]) else out
            if torch.is_tensor(t):
                c.shape = tuple(t.shape)
                c.fingerprint = _fingerprint(t)
                total[0] += t.numel() * t.element_size()
                biggest[0] = max(biggest[0], t.numel() * t.element_size())
                # Tag the tensor object with who returned it: identity, not equal values, decides
                # which module produced a feature (untrained residual blocks return equal values).
                try:
                    t._xai_producers = getattr(t, "_xai_producers", []) + [path]
                    c.own = list(t._xai_producers)
                except (AttributeError, RuntimeError):
                    pass
            elif isinstance(out, (list, tuple)):
                c.outputs = [_fingerprint(o) if torch.is_tensor(o) else None for o in out]
                c.producers = [list(getattr(o, "_xai_producers", [])) if torch.is_tensor(o) else [] for o in out]
        return hook

    try:
        for path, mod in modules.items():
            handles.append(mod.register_forward_pre_hook(pre(path)))
            handles.append(mod.register_forward_hook(post(path)))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*input_shape, generator=gen)
        if device is not None:
            x = x.to(device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, modules, total[0] // max(1, input_shape[0]), biggest[0] // max(1, input_shape[0])


# -- families -------------------------------------------------------------------

def refuse_torchscript(adapter, what: str) -> None:
    import torch

    if isinstance(adapter.module, torch.jit.ScriptModule):
        raise XaiUsageError(f"model {adapter.info.get('spec', '')} is TorchScript, which has no module hooks, and "
                            f"{what} need them; pass the model as an smp or Hugging Face folder, or as a state "
                            "dict with --arch")


def layer_table(adapter, input_hw: tuple[int, int]) -> LayerTable:
    """Probe the adapter's model at `input_hw` and name its layers."""
    model = adapter.module
    refuse_torchscript(adapter, "CAM methods (and layer listings)")
    shape = (1, adapter.preprocessing.channels, *input_hw)
    calls, modules, sample_bytes, largest = adapter.first_forward(lambda: probe(model, shape, adapter.device),
                                                                  tuple(input_hw))
    adapter.sizes_ok.add(tuple(input_hw))
    table = LayerTable("generic", tuple(input_hw), {}, "last", calls, modules, sample_bytes=sample_bytes,
                       largest_bytes=largest)
    if all(hasattr(model, a) for a in ("encoder", "decoder", "segmentation_head")):
        _smp(table)
    else:
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "model_type", None):
            _hf(table, model, config)
    if not table.aliases:
        table.family = str(adapter.info.get("format") or "generic")
        if not _tokens(table):
            _generic(table)
            if adapter.task == "segmentation":
                _segmenter(table, adapter.num_classes)
            else:
                _stages(table, model)
    return table


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent + ".")


def _called(table: LayerTable, path: str) -> bool:
    c = table.calls.get(path)
    return c is not None and c.calls == 1 and c.shape is not None


def _producer(table: LayerTable, parent: str, fp: tuple | None, same_object: list[str] | None = None) -> str | None:
    """The module strictly inside `parent` that produced the feature with fingerprint `fp`.

    Candidates are the modules that returned that very tensor object (`same_object`)
    and whose output, when they returned it, already had the feature's values (an
    inplace ReLU changes the tensor its BatchNorm returned); the outermost of them
    wins. Without identity information, modules with equal values; the last to finish.
    """
    if same_object:
        found = [table.calls[p] for p in same_object if p in table.calls and _inside(p, parent)
                 and table.calls[p].calls == 1 and _same(table.calls[p].fingerprint, fp)]
        if found:
            return min(found, key=lambda c: c.start).path
    found = [c for p, c in table.calls.items()
             if _inside(p, parent) and c.calls == 1 and _same(c.fingerprint, fp)]
    return max(found, key=lambda c: c.end).path if found else None


def _smp(table: LayerTable) -> None:
    enc = table.calls.get("encoder")
    features = enc.outputs if enc is not None else []
    stages: list[str] = []
    producers = enc.producers if enc is not None else []
    for i, fp in enumerate(features[1:], start=1):
        if fp is None or len(fp[0]) != 4 or 0 in fp[0]:
            continue  # transformer-style encoders return an empty stride-2 placeholder
        path = _producer(table, "encoder", fp, producers[i] if i < len(producers) else None)
        if path is None:   # e.g. a permute + contiguous after the module: take the last same-shape module
            same = [c for p, c in table.calls.items() if _inside(p, "encoder") and c.calls == 1 and c.shape == fp[0]]
            path = max(same, key=lambda c: c.end).path if same else None
        if path is not None:
            table.aliases[f"encoder_{i}"] = path
            stages.append(path)
    head_in = None
    dec = table.calls.get("decoder")
    if dec is not None:
        head_in = _producer(table, "decoder", dec.fingerprint, dec.own)
        if head_in is None:
            inside = [c for p, c in table.calls.items() if _inside(p, "decoder") and c.calls == 1
                      and c.shape is not None and len(c.shape) == 4]
            head_in = max(inside, key=lambda c: c.end).path if inside else None
    head = [c for p, c in table.calls.items() if _inside(p, "segmentation_head") and c.calls == 1
            and c.shape is not None and len(c.shape) == 4]
    named: dict[str, str] = {}
    if stages:
        d = len(stages)
        early = 1 if d < 4 else 2
        named["encoder_early"] = stages[early - 1]
        named["encoder_mid"] = stages[(early + d + 1) // 2 - 1]
        named["encoder_last"] = stages[-1]
    if head_in:
        named["decoder_last"] = head_in
    if head:
        named["seg_head"] = min(head, key=lambda c: c.start).path
    stage_aliases = {k: v for k, v in table.aliases.items()}
    table.aliases = {**named, **stage_aliases}
    table.family = "smp"
    table.default = "decoder_last" if "decoder_last" in named else ("encoder_last" if stages else "last")


def _hf(table: LayerTable, model, config) -> None:
    kind = str(config.model_type)
    mods = table.modules
    names = list(mods)
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, int):
        table.patch = (patch, patch)
    elif isinstance(patch, (list, tuple)) and len(patch) == 2:
        table.patch = (int(patch[0]), int(patch[1]))

    def children(path: str) -> list[str]:
        return _children(table, path)

    # ConvNeXt-like: a ModuleList called `stages` whose entries output (B, C, h, w).
    for path in names:
        if path.endswith("stages") and type(mods[path]).__name__ == "ModuleList":
            st = [p for p in children(path) if _called(table, p) and len(table.calls[p].shape) == 4]
            if st:
                table.family = kind
                for i, p in enumerate(st):
                    table.aliases[f"stage{i}"] = p
                table.aliases = {"last": st[-1], **table.aliases}
                table.default = "last"
                return
    # Swin-like: stages holding `blocks`, each block with a layernorm_before over (B, L, C) tokens.
    for path in names:
        kids = children(path)
        if type(mods[path]).__name__ == "ModuleList" and kids and all(f"{k}.blocks" in mods for k in kids):
            st = []
            for k in kids:
                blocks = children(f"{k}.blocks")
                norms = [f"{b}.layernorm_before" for b in blocks if _called(table, f"{b}.layernorm_before")]
                if norms:
                    st.append(norms[-1])
            if st:
                table.family = kind
                table.aliases = {"last": st[-1], **{f"stage{i}": p for i, p in enumerate(st)}}
                table.tokens = {p: "grid" for p in st}
                table.default = "last"
                return
    # ViT-like: a ModuleList of encoder layers with layernorm_before (or norm1) over CLS + patch tokens.
    if _blocks(table, ("ModuleList",)):
        table.family = kind


def _children(table: LayerTable, path: str) -> list[str]:
    prefix = path + "." if path else ""
    return [n for n in table.modules if n.startswith(prefix) and n != path and "." not in n[len(prefix):]]


def _blocks(table: LayerTable, containers: tuple[str, ...]) -> bool:
    """ViT-like: a container of encoder blocks, each with a norm (layernorm_before, norm1, ln_1) over
    (B, L, C) tokens before its attention: `last`* and `block0` .. `blockN` are those norms."""
    for path, mod in table.modules.items():
        kids = _children(table, path)
        if type(mod).__name__ not in containers or not kids:
            continue
        norms = []
        for k in kids:
            for sub in ("layernorm_before", "norm1", "ln_1"):
                if _called(table, f"{k}.{sub}") and len(table.calls[f"{k}.{sub}"].shape) == 3:
                    norms.append(f"{k}.{sub}")
                    break
        if norms and len(norms) == len(kids):
            table.aliases = {"last": norms[-1], **{f"block{i}": p for i, p in enumerate(norms)}}
            table.tokens = {p: "vit" for p in norms}
            table.default = "last"
            return True
    return False


def _tokens(table: LayerTable) -> bool:
    """A token model without a config (timm, torchvision ViTs): its blocks, and the patch size from the
    first convolution whose kernel equals its stride (the patch embedding)."""
    if not _blocks(table, ("ModuleList", "Sequential")):
        return False
    convs = sorted((c for p, c in table.calls.items() if type(table.modules[p]).__name__ == "Conv2d"),
                   key=lambda c: c.start)
    for c in convs[:1]:
        conv = table.modules[c.path]
        if tuple(conv.kernel_size) == tuple(conv.stride) and conv.stride[0] > 1:
            table.patch = (int(conv.stride[0]), int(conv.stride[1]))
    return True


def _generic(table: LayerTable) -> None:
    """`last`: the last-finishing module with a spatial (B, C, h, w) output, called once."""
    cands = _spatial(table)
    if not cands:
        cands = [c for p, c in table.calls.items() if p and c.calls == 1 and c.shape is not None
                 and len(c.shape) == 4]
    if cands:
        table.aliases = {"last": max(cands, key=lambda c: c.end).path}
        table.default = "last"


def _spatial(table: LayerTable, exclude: tuple[str, ...] = ()) -> list[_Call]:
    """Modules called once whose output is a feature map (B, C, h, w), h * w > 1: a (B, h, w, C) tensor
    (a channels-last block inside a ConvNeXt) is not one, told by its sides' strides disagreeing."""
    out = []
    for p, c in table.calls.items():
        if not p or p in exclude or c.calls != 1 or c.shape is None or len(c.shape) != 4:
            continue
        h, w = c.shape[-2:]
        if h * w > 1 and _one_stride(table.input_hw, (h, w)):
            out.append(c)
    return out


def _one_stride(input_hw: tuple[int, int], hw: tuple[int, int]) -> bool:
    """Could one stride s give both sides (each within a pixel of input / s)?"""
    lo = [n / (m + 1) for n, m in zip(input_hw, hw)]
    hi = [n / max(m - 1, 0.5) for n, m in zip(input_hw, hw)]
    return max(lo) <= min(hi)


def _stages(table: LayerTable, model) -> None:
    """Classifiers whose model lists its stages (timm's `feature_info`): `stage0` .. `stageN`."""
    info = getattr(model, "feature_info", None)
    mods = [getattr(i, "get", lambda k: None)("module") for i in info] if isinstance(info, (list, tuple)) else []
    stages = [m for m in mods if isinstance(m, str) and m in table.calls and table.calls[m] in _spatial(table)]
    if len(stages) > 1:
        table.aliases.update({f"stage{i}": m for i, m in enumerate(stages)})


def _segmenter(table: LayerTable, classes: int) -> None:
    """Segmenters: `seg_head` (the last convolution called), `decoder_last`* (the module whose output it
    reads: by identity, else the last to finish before it, not another head of `classes` channels),
    `encoder_last` (the deepest feature map: the smallest, then the most channels, then the last to
    finish; not the head or what holds it)."""
    convs = [c for c in _spatial(table) if getattr(getattr(table.modules[c.path], "weight", None), "ndim", 0) == 4]
    if not convs:
        return
    head = max(convs, key=lambda c: c.start)
    holders = tuple(p for p in table.calls if p and _inside(head.path, p)) + (head.path,)
    before = [c for c in _spatial(table, holders) if c.end < head.start]
    others = [c for c in before if c.shape[1] != classes]
    feeds = [c for c in others if c.path in head.input_from]
    decoder = min(feeds, key=lambda c: c.start) if feeds else (max(others, key=lambda c: c.end) if others else None)
    named = {}
    if before:
        deep = min(before, key=lambda c: (c.shape[-1] * c.shape[-2], -c.shape[1], -c.end))
        named["encoder_last"] = deep.path
    if decoder is not None:
        named["decoder_last"] = decoder.path
        table.default = "decoder_last"
    named["seg_head"] = head.path
    table.aliases = {**named, **table.aliases}


# -- paths ----------------------------------------------------------------------

_TOKEN = re.compile(r"""\[\s*(-?\d+|'[^']*'|"[^"]*")\s*\]|\.?([A-Za-z_0-9]+)""")


def canonical_path(modules: dict[str, Any], spec: str, valid: list[str]) -> str:
    """`encoder._blocks[-1]`, `decoder.blocks["x_0_4"]`, `model.encoder...` → `encoder._blocks.38`."""
    if spec in modules:
        return spec
    root = modules[""]
    parts: list[str] = []
    pos = 0
    text = spec.strip()
    for prefix in ("model.", "self.model.", "net.model."):
        if text.startswith(prefix) and text[len(prefix):].split(".")[0].split("[")[0] in dict(root.named_children()):
            text = text[len(prefix):]
            break
    mod = root
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _unknown(spec, valid)
        pos = m.end()
        key = m.group(1) if m.group(1) is not None else m.group(2)
        kids = list(mod.named_children())
        names = [n for n, _ in kids]
        if key.startswith(("'", '"')):
            key = key[1:-1]
        elif key.lstrip("-").isdigit() and key not in names:
            i = int(key)
            if not -len(kids) <= i < len(kids):
                raise _unknown(spec, valid)
            key = names[i]
        if key not in names:
            raise _unknown(spec, valid)
        parts.append(key)
        mod = dict(kids)[key]
    path = ".".join(parts)
    if path not in modules:
        raise _unknown(spec, valid)
    return path


def _unknown(spec: str, valid: list[str]) -> XaiUsageError:
    return XaiUsageError(f"unknown --layer {spec!r}; use one of {', '.join(valid)} or a module path such as "
                         "encoder.layer4 (xai cam --list-layers shows them)")
