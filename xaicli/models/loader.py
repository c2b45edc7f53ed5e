"""`-m SPEC` → ModelAdapter. Local files only; code runs from a file only with --trust-pickle.

Spec kinds: builtin:NAME, an smp `save_pretrained` folder, a Hugging Face
image-classification folder, a state dict (+ --arch), a TorchScript file, a pickled
model (--trust-pickle). An optional `xai.json` beside a folder's config supplies
labels, size, mean and std.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.images import sha256_file
from xaicli.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")   # sharded save_pretrained
SIDECAR_KEYS = ("labels", "size", "mean", "std")
ACCEPTS = ("-m takes an smp or Hugging Face folder (the one holding config.json), a state dict "
           "(.pth/.pt/.safetensors) with --arch, a TorchScript file, or builtin:shapes-seg / builtin:shapes-cls")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {"arch": self.arch, "classes": self.classes, "labels": self.labels,
                "size": list(self.size) if self.size else None,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                "fit": self.fit}

    @classmethod
    def from_meta(cls, d: dict[str, Any]) -> "LoadOptions":
        return cls(arch=d.get("arch"), classes=d.get("classes"), labels=d.get("labels"),
                   size=tuple(d["size"]) if d.get("size") else None,
                   mean=tuple(d["mean"]) if d.get("mean") else None, std=tuple(d["std"]) if d.get("std") else None,
                   fit=d.get("fit"))


def load_model(spec: str, options: LoadOptions | None = None, device: str = "auto"):
    """Load `spec` into a ModelAdapter on `device` (eval mode, gradients off for parameters)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from xaicli.models.device import resolve_device

    options = options or LoadOptions()
    dev = resolve_device(device)
    path, fmt = _locate(spec)
    if fmt in ("smp", "hf", "torchscript"):   # these carry their architecture and class count
        given = [opt for opt, v in (("--arch", options.arch), ("--classes", options.classes)) if v]
        if given:
            raise XaiUsageError(f"{' and '.join(given)}: for state-dict files only; model {spec} is "
                                f"{_FORMAT_NAMES[fmt]}, which names its own; drop {' and '.join(given)}")
    # smp prints "Loading weights..." to stdout: keep stdout for records, chatter for -vv.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        adapter = _LOADERS[fmt](path, options)
    if chatter.getvalue().strip():
        logging.getLogger("xai").debug("model loader said: %s", chatter.getvalue().strip())
    adapter.info.update({"spec": spec, "path": str(path.resolve()), "load": options.to_meta()})
    if options.fit == "processor" and adapter.preprocessing.pipeline is None:
        raise XaiUsageError(f"--fit processor: model {spec} is {_FORMAT_NAMES.get(fmt, 'a weights file')}, which has "
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


# -- locating ------------------------------------------------------------------

def _locate(spec: str) -> tuple[Path, str]:
    if spec.startswith("builtin:"):
        from xaicli.models.builtin import builtin_path

        path = builtin_path(spec[len("builtin:"):])
        return path, _dir_format(path)
    path = Path(spec).expanduser()
    if not path.exists():
        raise XaiError(f"model {spec}: no such file or directory; pass an smp/Hugging Face folder, a weights "
                       "file, or builtin:shapes-seg / builtin:shapes-cls")
    if path.is_dir():
        return path, _dir_format(path)
    if path.suffix.lower() == ".safetensors":
        return path, "state_dict"
    if _is_torchscript(path):
        return path, "torchscript"
    return path, "torch_file"


def _dir_format(path: Path) -> str:
    cfg = path / "config.json"
    if not cfg.exists():
        raise XaiError(f"model {path}: folder has no config.json; pass a folder written by save_pretrained "
                       "(smp or transformers), or a weights file with --arch")
    config = _read_json(cfg)
    if "_model_class" in config:
        return "smp"
    if "model_type" in config or "architectures" in config:
        return "hf"
    raise XaiError(f"model {path}: config.json is neither from smp nor transformers save_pretrained")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise XaiError(f"{path}: unreadable JSON ({exc}); re-save the model") from None


def _sidecar(path: Path, channels: int, classes: int, multiple: int = 1) -> dict[str, Any]:
    """`xai.json` checked key by key: labels (one name per class), size (N or [H, W]), mean and std
    (1 or `channels` numbers; std > 0). Returns the keys present, normalised (size a (h, w) tuple,
    mean/std tuples of `channels` values)."""
    side = path / "xai.json"
    if not side.exists():
        return {}
    data = _read_json(side)

    def bad(key: str, what: str) -> XaiError:
        return XaiError(f"{side}: \"{key}\" {what}")

    if not isinstance(data, dict):
        raise XaiError(f"{side}: expected a JSON object with keys {', '.join(SIDECAR_KEYS)}")
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        raise bad(unknown[0], f"is not a key xai reads; use {', '.join(SIDECAR_KEYS)}")
    out: dict[str, Any] = {}
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise bad("labels", f"must be a list of class names, e.g. [\"a\", \"b\"], one per class ({classes})")
        if len(labels) != classes:
            raise bad("labels", f"has {len(labels)} names but the model has {classes} classes; "
                                f"give one name per class")
        out["labels"] = list(labels)
    size = data.get("size")
    if size is not None:
        hw = [size] if isinstance(size, int) else size
        if (not isinstance(hw, list) or len(hw) not in (1, 2)
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):
            raise bad("size", "must be N or [H, W], positive whole numbers of pixels, e.g. [256, 256]")
        hw = (hw[0], hw[-1])
        if multiple > 1 and any(v % multiple for v in hw):
            fix = [max(multiple, round(v / multiple) * multiple) for v in hw]
            raise bad("size", f"{list(hw)}: this model needs sides divisible by {multiple}, e.g. {fix}")
        out["size"] = hw
    for key in ("mean", "std"):
        vals = data.get(key)
        if vals is None:
            continue
        if isinstance(vals, (int, float)) and not isinstance(vals, bool):
            vals = [vals]
        if (not isinstance(vals, list) or not vals
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)):
            raise bad(key, f"must be a list of numbers, one per input channel ({channels})")
        if len(vals) not in (1, channels):
            raise bad(key, f"has {len(vals)} values for a {channels}-channel model; give 1 or {channels}")
        if not all(math.isfinite(v) for v in vals) or (key == "std" and not all(v > 0 for v in vals)):
            raise bad(key, "must hold finite numbers" + (", all > 0" if key == "std" else ""))
        out[key] = tuple(float(v) for v in vals) * (channels if len(vals) == 1 else 1)
    return out


def _weights_sha(path: Path) -> str:
    """sha256 of the weights: the file itself, a folder's weights file, or for a sharded
    save_pretrained the index plus every shard it lists (sorted by name)."""
    if path.is_file():
        return sha256_file(path)
    for name in WEIGHT_FILES:
        if (path / name).exists():
            return sha256_file(path / name)
    for name in INDEX_FILES:
        if (path / name).exists():
            return _sharded_sha(path, path / name)
    raise XaiError(f"model {path}: no weights file ({', '.join(WEIGHT_FILES + INDEX_FILES)}) in the folder; "
                   "re-save it with save_pretrained")


def _sharded_sha(folder: Path, index: Path) -> str:
    weight_map = _read_json(index).get("weight_map")
    shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
    if not shards or not all(isinstance(s, str) for s in shards):
        raise XaiError(f"{index}: no \"weight_map\" of tensor names to shard files; re-save with save_pretrained")
    h = hashlib.sha256()
    h.update(index.read_bytes())
    for name in shards:
        shard = folder / name
        if Path(name).name != name or not shard.is_file():
            raise XaiError(f"model {folder}: shard {name}, listed in {index.name}, is not in the folder; "
                           "copy every shard with the index")
        h.update(b"\0" + name.encode() + b"\0" + sha256_file(shard).encode())
    return h.hexdigest()


# -- loaders -------------------------------------------------------------------

def _adapter(module, task, labels, prep, info, model_size=None):
    import torch

    from xaicli.models.adapter import LogitsModule, ModelAdapter

    return ModelAdapter(LogitsModule(module), task, labels, prep, torch.device("cpu"), info,
                        model_size=tuple(model_size) if model_size else None)


def _load_smp(path: Path, options: LoadOptions):
    import segmentation_models_pytorch as smp

    config = _read_json(path / "config.json")
    try:
        model = smp.from_pretrained(str(path))
    except Exception as exc:
        raise XaiError(f"model {path}: smp could not load it ({type(exc).__name__}: {exc})") from None
    classes = int(config.get("classes", 1))
    channels = int(config.get("in_channels", 3))
    side = _sidecar(path, channels, classes, multiple=32)
    labels = side.get("labels") or _default_labels(classes, "segmentation")
    prep = Preprocessing(channels=channels, multiple=32, size=side.get("size"),
                         mean=side.get("mean", IMAGENET_MEAN), std=side.get("std", IMAGENET_STD),
                         source="xai.json" if side else "imagenet-default")
    arch = f"{config['_model_class']}({config.get('encoder_name', '?')})"
    return _adapter(model, "segmentation", labels, prep,
                    {"format": "smp", "arch": arch, "sha256": _weights_sha(path)})


def _load_hf(path: Path, options: LoadOptions):
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        model, loading = transformers.AutoModelForImageClassification.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True)
    except Exception as exc:
        raise XaiError(f"model {path}: transformers could not load it as an image classifier "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    _refuse_new_weights(path, loading)
    cfg = model.config
    id2label = {int(k): v for k, v in (cfg.id2label or {}).items()}
    labels = [str(id2label.get(i, f"class_{i}")) for i in range(cfg.num_labels)]
    channels = int(getattr(cfg, "num_channels", 3))
    side = _sidecar(path, channels, cfg.num_labels)
    model_size = (cfg.image_size, cfg.image_size) if isinstance(getattr(cfg, "image_size", None), int) else None
    prep = _hf_preprocessing(path, options, side, channels, model_size)
    arch = (cfg.architectures or [type(model).__name__])[0]
    return _adapter(model, "classification", side.get("labels") or labels, prep,
                    {"format": "hf", "arch": arch, "sha256": _weights_sha(path)}, model_size=model_size or prep.size)


def _hf_preprocessing(path: Path, options: LoadOptions, side: dict[str, Any], channels: int,
                      model_size: tuple[int, int] | None) -> Preprocessing:
    """The processor's own pipeline (fit "processor", the default where preprocessor_config.json exists), or the
    whole image squashed to a fixed size (--fit squash, or a size from --size / xai.json)."""
    from xaicli.models.processor import ProcessorPipeline, load_processor

    proc_path = path / "preprocessor_config.json"
    sized = options.size or side.get("size")
    if options.fit == "processor" and sized:
        given = "--size" if options.size else f"\"size\" in {path / 'xai.json'}"
        raise XaiUsageError(f"{given} squashes the whole image to a fixed size, which --fit processor does not do; "
                            "drop one of them")
    if options.fit == "processor" and not proc_path.exists():
        raise XaiUsageError(f"--fit processor: model {path} has no preprocessor_config.json; save the processor "
                            "with processor.save_pretrained(DIR), or use --fit squash with --size")
    fit = options.fit or ("processor" if proc_path.exists() and not sized else "squash")
    proc = load_processor(path)
    if proc is not None:
        norm = bool(getattr(proc, "do_normalize", True))
        factor = _rescale(proc)
        p_mean = tuple(m / factor for m in getattr(proc, "image_mean", None) or IMAGENET_MEAN) if norm \
            else (0.0,) * channels
        p_std = tuple(s / factor for s in getattr(proc, "image_std", None) or IMAGENET_STD) if norm \
            else (1.0 / factor,) * channels
        source = "preprocessor_config.json"
    else:
        p_mean, p_std, source = IMAGENET_MEAN, IMAGENET_STD, "imagenet-default"
    if "mean" in side or "std" in side:
        source = "xai.json"
    prep = Preprocessing(channels=channels, mean=tuple(side.get("mean", p_mean)), std=tuple(side.get("std", p_std)),
                         source=source, fit=fit)
    if fit == "processor":
        prep.pipeline = ProcessorPipeline(proc, _rescale(proc))
        if "mean" in side or "std" in side:
            prep.pipeline.set_normalisation(prep.mean, prep.std)
        prep.resize = prep.pipeline.resample_name()
        prep.notes = ["the model's own image processor: resize, centre crop and normalisation as "
                      f"{type(proc).__name__} does them; pixels outside the crop get zero attribution"]
        return prep
    prep.size = tuple(sized) if sized else (_processor_output_size(proc) or model_size)
    if prep.size is None:
        raise XaiUsageError(f"model {path}: no input size in its processor or config; pass --size HxW")
    prep.notes = ["--fit squash: the whole image resized to the model size (no centre crop), so maps cover "
                  "every pixel" + (f"; the model's {type(proc).__name__} would resize and crop otherwise"
                                   if proc is not None else "")]
    return prep


def _rescale(proc) -> float:
    """What the processor multiplies a [0, 1] pixel by before normalising: 255 x rescale_factor (1 for 1/255)."""
    if not getattr(proc, "do_rescale", True):
        return 255.0
    return float(getattr(proc, "rescale_factor", None) or 1 / 255) * 255.0


def _processor_output_size(proc) -> tuple[int, int] | None:
    """The input size a processor hands the model: its crop, else its fixed or shortest-edge size."""
    if proc is None:
        return None
    crop = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = getattr(proc, "size", None)
    for s in (crop, size):
        h, w = getattr(s, "height", None), getattr(s, "width", None)
        if h and w:
            return int(h), int(w)
    edge = getattr(size, "shortest_edge", None)
    return (int(edge), int(edge)) if edge else None


def _refuse_new_weights(path: Path, loading: Any) -> None:
    """transformers fills weights the folder lacks (a backbone saved without its classifier) with
    random values, and only warns (silenced here): results would change every run."""
    if not isinstance(loading, dict):
        return
    missing = sorted(loading.get("missing_keys") or ())
    mismatched = sorted(str(k[0]) if isinstance(k, (tuple, list)) else str(k)
                        for k in (loading.get("mismatched_keys") or ()))
    for keys, what in ((missing, "lacks"), (mismatched, "has config.json disagreeing with the shapes of")):
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            raise XaiError(f"model {path} {what} {len(keys)} weight(s) ({shown}), which transformers would "
                           "initialise at random; save the fine-tuned classifier itself with "
                           "model.save_pretrained(DIR)")


def _load_state_dict_file(path: Path, options: LoadOptions):
    state = _read_state(path, options)
    if not isinstance(state, dict):
        return _wrap_module(state, path, "pickle", options)
    if not options.arch:
        raise XaiUsageError(f"model {path} is a state dict (weights only): say what to build with "
                            "--arch ARCH:ENCODER, e.g. --arch unetplusplus:efficientnet-b5")
    from xaicli.models.arch import build_smp

    state = _unwrap_state(state)
    model, arch = build_smp(options.arch, state, options.classes)
    _load_strict(model, state, path, options.arch)
    classes = model.segmentation_head[0].out_channels
    prep = Preprocessing(channels=_first_conv_channels(model), multiple=32, source="imagenet-default")
    return _adapter(model, "segmentation", _default_labels(classes, "segmentation"), prep,
                    {"format": "state_dict", "arch": arch, "sha256": sha256_file(path)})


def _read_state(path: Path, options: LoadOptions):
    import pickle

    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise XaiError(f"model {path}: not a readable safetensors file ({exc})") from None
    what = _not_torch(path)
    if what:
        hint = (f"; for the model in that folder pass -m {path.parent}"
                if path.name == "config.json" or (path.parent / "config.json").exists() else "")
        raise XaiError(f"model {path}: not a model file ({what}); {ACCEPTS}{hint}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not options.trust_pickle:
            raise XaiUsageError(
                f"model {path} holds pickled Python objects, and loading it would run code from the file; "
                "pass --trust-pickle only if you trust it, or save model.state_dict() instead") from None
    except Exception as exc:
        raise XaiError(f"model {path}: not a PyTorch weights file ({type(exc).__name__}); "
                       "pass a .pth/.pt/.safetensors state dict, a TorchScript file or a model folder") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise XaiError(f"model {path}: the pickle did not load ({type(exc).__name__}: {exc})") from None


def _not_torch(path: Path) -> str | None:
    """What the file is, when it is neither a torch.save zip nor a pickle; None when it may be one."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise XaiError(f"model {path}: cannot read it ({exc.strerror}); check the path and permissions") from None
    if zipfile.is_zipfile(path) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return None   # torch.save's zip, or a pickle (protocol 2+: legacy torch.save, pickle.dump)
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8") or head[:4] in (b"II*\0", b"MM\0*"):
        return "an image"
    if head.lstrip()[:1] in (b"{", b"["):
        return "JSON text"
    return "not a PyTorch or safetensors file" if head else "an empty file"


def _unwrap_state(state: dict) -> dict:
    import torch

    for key in STATE_DICT_KEYS:
        inner = state.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_strict(model, state: dict, path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise XaiError(f"model {path} does not fit --arch {arch}: " + "; ".join(parts)
                       + "; check --arch and --classes against the training script")
    model.load_state_dict(state, strict=True)


def _load_torchscript(path: Path, options: LoadOptions):
    import torch

    try:
        with warnings.catch_warnings():   # torch's own deprecation notice for jit.load: nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise XaiError(f"model {path}: not a loadable TorchScript file ({type(exc).__name__})") from None
    return _wrap_module(module, path, "torchscript", options)


def _load_torch_file(path: Path, options: LoadOptions):
    return _load_state_dict_file(path, options)


def _wrap_module(module, path: Path, fmt: str, options: LoadOptions):
    """A whole model (TorchScript or pickle): infer task and class count with one probe forward."""
    import torch

    from xaicli.models.adapter import LogitsModule

    if not isinstance(module, torch.nn.Module):
        raise XaiError(f"model {path}: holds a {type(module).__name__}, not a model or state dict")
    channels = _first_conv_channels(module)
    size = options.size or (64, 64)
    net = LogitsModule(module).eval()
    with torch.no_grad():
        try:
            out = net(torch.zeros(1, channels, *size))
        except Exception as exc:
            raise XaiError(f"model {path}: a probe forward at {size[0]}x{size[1]} failed ({type(exc).__name__}); "
                           "pass --size the model was trained at") from None
    if out.ndim == 2:
        task = "classification"
    elif out.ndim == 4:
        task = "segmentation"
    else:
        raise XaiError(f"model {path}: output of shape {tuple(out.shape)} is neither (B,K) nor (B,K,H,W)")
    prep = Preprocessing(channels=channels, size=options.size, multiple=1 if task == "classification" else 32,
                         source="imagenet-default")
    if channels != 3:
        prep.mean, prep.std = (0.5,) * channels, (0.5,) * channels
    return _adapter(module, task, _default_labels(out.shape[1], task), prep,
                    {"format": fmt, "arch": type(module).__name__, "sha256": sha256_file(path)}, model_size=size)


def _first_conv_channels(module) -> int:
    for p in module.parameters():
        if p.ndim == 4:
            return int(p.shape[1])
    return 3


def _default_labels(k: int, task: str) -> list[str]:
    if task == "segmentation" and k == 1:
        return ["foreground"]
    return [f"class_{i}" for i in range(k)]


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


_FORMAT_NAMES = {"smp": "an smp folder", "hf": "a Hugging Face folder", "torchscript": "TorchScript",
                 "state_dict": "a state dict", "torch_file": "a weights file"}
_LOADERS = {"smp": _load_smp, "hf": _load_hf, "state_dict": _load_state_dict_file,
            "torch_file": _load_torch_file, "torchscript": _load_torchscript}
