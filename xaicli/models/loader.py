"""`-m SPEC` → ModelAdapter. Local files only; code runs from a file only with --trust-pickle.

One module per format under `models/formats/` (smp, Hugging Face, timm, torchvision, MONAI,
ONNX, TorchScript, pickles), behind the registry there; this module is the public API:
`LoadOptions`, `load_model`, `load_for_record`, and what applies to every format
(command-line overrides, the normalisation check, device and eval mode).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaicli.errors import XaiError, XaiUsageError


@dataclass
class LoadOptions:
    """Everything besides the spec that decides how a model loads; kept in record meta."""

    arch: str | None = None
    classes: int | None = None
    labels: list[str] | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    fit: str | None = None               # None: the model's own ("processor" where it has one)
    trust_pickle: bool = False
    arch_args: dict[str, Any] | None = None   # --arch-args: keyword arguments of --arch's constructor
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {"arch": self.arch, "classes": self.classes, "labels": self.labels,
                "size": list(self.size) if self.size else None,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                "fit": self.fit, "arch_args": self.arch_args}

    @classmethod
    def from_meta(cls, d: dict[str, Any]) -> "LoadOptions":
        return cls(arch=d.get("arch"), classes=d.get("classes"), labels=d.get("labels"),
                   size=tuple(d["size"]) if d.get("size") else None,
                   mean=tuple(d["mean"]) if d.get("mean") else None, std=tuple(d["std"]) if d.get("std") else None,
                   fit=d.get("fit"), arch_args=d.get("arch_args") or None)


def load_model(spec: str, options: LoadOptions | None = None, device: str = "auto"):
    """Load `spec` into a ModelAdapter on `device` (eval mode, gradients off for parameters)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from xaicli.models.device import resolve_device
    from xaicli.models.formats import locate, require

    options = options or LoadOptions()
    dev = resolve_device(device)
    fmt, path = locate(spec)
    if fmt is not None:   # folders and whole-model files carry their architecture and class count
        given = [opt for opt, v in (("--arch", options.arch), ("--classes", options.classes),
                                    ("--arch-args", options.arch_args)) if v]
        if given:
            raise XaiUsageError(f"{' and '.join(given)}: for state-dict files only; model {spec} is "
                                f"{fmt.title}, which names its own; drop {' and '.join(given)}")
        require(fmt, f"model {spec}")
    elif options.arch:
        from xaicli.models.formats import arch_format

        require(arch_format(options.arch), f"--arch {options.arch}")
    # smp prints "Loading weights..." to stdout: keep stdout for records, chatter for -vv.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        adapter = fmt.load(path, options) if fmt is not None else _load_weights(path, options)
    if chatter.getvalue().strip():
        logging.getLogger("xai").debug("model loader said: %s", chatter.getvalue().strip())
    adapter.info.update({"spec": spec, "path": str(path.resolve()), "load": options.to_meta()})
    if options.fit == "processor" and adapter.preprocessing.pipeline is None:
        raise XaiUsageError(f"--fit processor: model {spec} is {fmt.title if fmt else 'a weights file'}, which has "
                            "no image processor; drop --fit (it squashes the image to --size, or to the image size "
                            "rounded as the model needs)")
    _apply_overrides(adapter, options)
    _check_normalisation(adapter, path)
    adapter.net.to(dev).eval()
    for p in adapter.net.parameters():
        p.requires_grad_(False)
    adapter.device = dev
    return adapter


def load_for_record(meta_model: dict[str, Any], device: str = "auto", trust_pickle: bool = False,
                    fit: str | None = None):
    """Reload the model a record names (commands downstream of `predict` without -m).

    The absolute path the record stored comes first: the spec as typed (often relative) may
    name another model from another folder. The caller still checks the weights' sha256.
    `trust_pickle` is the running command's --trust-pickle (records never grant it); `fit` is how
    the records' images became the model's input (their preprocessing says).
    """
    spec = meta_model.get("spec")
    if not spec:
        raise XaiUsageError("records do not name their model; pass -m MODEL")
    where = spec
    if not spec.startswith("builtin:"):
        stored = meta_model.get("path")
        if stored and Path(stored).exists():
            where = stored
        elif not Path(spec).exists():
            raise XaiError(f"the model the records were made with ({stored or spec}) is not here; pass -m MODEL")
    options = LoadOptions.from_meta(meta_model.get("load") or {})
    options.trust_pickle = bool(trust_pickle)
    options.fit = options.fit or fit
    adapter = load_model(where, options, device)
    adapter.info["spec"] = spec
    return adapter


def _load_weights(path: Path, options: LoadOptions):
    """A weights file: a state dict, built by the format its --arch names; or, trusted, a pickled model."""
    from xaicli.models.formats import arch_format, arch_prefixes, pickled
    from xaicli.models.formats.common import read_state, unwrap_state

    state = read_state(path, options)
    if not isinstance(state, dict):
        return pickled.from_module(state, path, options)
    if not options.arch:
        raise XaiUsageError(f"model {path} is a state dict (weights only): say what to build with "
                            f"--arch ARCH:ENCODER (smp, e.g. --arch unetplusplus:efficientnet-b5) or --arch "
                            f"{arch_prefixes()}")
    return arch_format(options.arch).from_state(unwrap_state(state), path, options)


def parse_arch_args(text: str | None) -> dict[str, Any] | None:
    """--arch-args: a JSON object of keyword arguments."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise XaiUsageError(f"--arch-args: not valid JSON ({exc.msg} at character {exc.pos}); give an object, e.g. "
                            "'{\"spatial_dims\": 2, \"in_channels\": 1}'") from None
    if not isinstance(value, dict):
        raise XaiUsageError("--arch-args: give a JSON object of keyword arguments, e.g. '{\"spatial_dims\": 2}', "
                            f"not a {type(value).__name__}")
    return value


def _apply_overrides(adapter, options: LoadOptions) -> None:
    from xaicli.models.preprocess import check_norm

    prep = adapter.preprocessing
    if options.size:
        if prep.multiple > 1 and any(s % prep.multiple for s in options.size):
            raise XaiUsageError(f"--size {options.size[0]}x{options.size[1]}: this model needs sides divisible by "
                                f"{prep.multiple}; e.g. --size {max(prep.multiple, round(options.size[0] / prep.multiple) * prep.multiple)}")
        prep.size = tuple(options.size)
    for name in ("mean", "std"):
        vals = getattr(options, name)
        if vals:
            check_norm(vals, f"--{name}", positive=name == "std")
            if len(vals) == 1:
                vals = vals * prep.channels
            if len(vals) != prep.channels:
                raise XaiUsageError(f"--{name}: {len(vals)} values for a {prep.channels}-channel model")
            setattr(prep, name, tuple(vals))
            prep.source = "command line"
            if prep.pipeline is not None:
                prep.pipeline.set_normalisation(prep.mean, prep.std)
    if options.labels:
        if len(options.labels) != adapter.num_classes:
            raise XaiUsageError(f"--labels: {len(options.labels)} names for a model with {adapter.num_classes} classes")
        adapter.labels = list(options.labels)


def _check_normalisation(adapter, path: Path) -> None:
    """One mean and one std per input channel (a 1-channel model under an RGB processor's
    three means fails inside the model's forward)."""
    prep = adapter.preprocessing
    for name in ("mean", "std"):
        vals = tuple(getattr(prep, name))
        if len(vals) == 1 and prep.channels != 1:
            setattr(prep, name, vals * prep.channels)
        elif len(vals) != prep.channels:
            one = "0.5" if prep.channels == 1 else ",".join(["0.5"] * prep.channels)
            raise XaiError(f"model {path}: {prep.source} gives {len(vals)} {name} values for a {prep.channels}-channel "
                           f"model; pass --mean {one} --std {one} (one value per input channel)")
