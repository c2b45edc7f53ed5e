"""What several formats share: reading configs, sidecars and weights, strict loading, hashing,
building the adapter, and choosing between a model's own preprocessing and a squash."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

from xaicli.errors import XaiError, XaiUsageError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")   # sharded save_pretrained
SIDECAR_KEYS = ("labels", "size", "mean", "std")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise XaiError(f"{path}: unreadable JSON ({exc}); re-save the model") from None


def sidecar(path: Path, channels: int, classes: int, multiple: int = 1) -> dict[str, Any]:
    """`xai.json` checked key by key: labels (one name per class), size (N or [H, W]), mean and std
    (1 or `channels` numbers; std > 0). Returns the keys present, normalised (size a (h, w) tuple,
    mean/std tuples of `channels` values)."""
    side = path / "xai.json"
    if not side.exists():
        return {}
    data = read_json(side)

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


def weights_file(path: Path) -> Path | None:
    """A folder's (unsharded) weights file, by preference."""
    return next((path / n for n in WEIGHT_FILES if (path / n).exists()), None)


def weights_sha(path: Path) -> str:
    """sha256 of the weights: the file itself, a folder's weights file, or for a sharded
    save_pretrained the index plus every shard it lists (sorted by name)."""
    from xaicli.io.images import sha256_file

    if path.is_file():
        return sha256_file(path)
    found = weights_file(path)
    if found is not None:
        return sha256_file(found)
    for name in INDEX_FILES:
        if (path / name).exists():
            return _sharded_sha(path, path / name)
    raise XaiError(f"model {path}: no weights file ({', '.join(WEIGHT_FILES + INDEX_FILES)}) in the folder; "
                   "re-save it with save_pretrained")


def _sharded_sha(folder: Path, index: Path) -> str:
    from xaicli.io.images import sha256_file

    weight_map = read_json(index).get("weight_map")
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


def adapter(module, task, labels, prep, info, model_size=None):
    import torch

    from xaicli.models.adapter import LogitsModule, ModelAdapter

    return ModelAdapter(LogitsModule(module), task, labels, prep, torch.device("cpu"), info,
                        model_size=tuple(model_size) if model_size else None)


# -- weights files ------------------------------------------------------------------

def read_state(path: Path, options):
    """A weights file's contents: a state dict (safetensors, or torch.save with weights_only), or with
    --trust-pickle a whole pickled model."""
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
        from xaicli.models.formats import accepts

        hint = (f"; for the model in that folder pass -m {path.parent}"
                if path.name == "config.json" or (path.parent / "config.json").exists() else "")
        raise XaiError(f"model {path}: not a model file ({what}); {accepts()}{hint}")
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
    import zipfile

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


def unwrap_state(state: dict) -> dict:
    import torch

    for key in STATE_DICT_KEYS:
        inner = state.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_strict(model, state: dict, path: Path, against: str,
                fix: str = "check --arch, --arch-args and --classes against the training script") -> None:
    """`model.load_state_dict(state, strict=True)`, or one line naming the missing, unexpected and
    misshapen tensors; `against` names what built the model (`--arch unet:resnet18`)."""
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
        raise XaiError(f"model {path} does not fit {against}: " + "; ".join(parts) + f"; {fix}")
    model.load_state_dict(state, strict=True)


def sized_by(build: Callable[..., Any], state: dict, key: str, probes: tuple[int, int]) -> int | None:
    """The value of constructor argument `key` (a class or channel count) that `state` was saved with:
    two empty builds (on the meta device: no memory, no init cost; on the CPU where a constructor
    needs real values) with `probes` values show which tensors that argument sizes, and along which
    dimension; the state's tensor there gives the value. None when no tensor depends on it, or the
    state lacks them."""
    import torch

    a = b = None
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                a, b = (build(**{key: v}).state_dict() for v in probes)
            break
        except Exception:
            continue
    if a is None:
        return None
    for name, t in a.items():
        other = b.get(name)
        found = state.get(name)
        if other is None or found is None or t.shape == other.shape or found.ndim != t.ndim:
            continue
        dims = [d for d in range(t.ndim) if t.shape[d] != other.shape[d]]
        if len(dims) == 1 and t.shape[dims[0]] == probes[0]:
            return int(found.shape[dims[0]])
    return None


def output_channels(model, shape: tuple[int, ...]) -> int:
    """K of the model's (B, K) or (B, K, H, W) output, from a forward on the meta device (shapes only,
    no compute) of a copy sharing nothing; a real no-grad forward where an op has no meta kernel."""
    import copy

    import torch

    from xaicli.models.adapter import LogitsModule

    try:
        with torch.device("meta"):
            ghost = copy.deepcopy(model).to("meta")
            return int(LogitsModule(ghost).eval()(torch.zeros(shape)).shape[1])
    except Exception:
        with torch.no_grad():
            return int(LogitsModule(model).eval()(torch.zeros(shape)).shape[1])


def said(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors quoting a library."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def first_conv_channels(module) -> int:
    for p in module.parameters():
        if p.ndim == 4:
            return int(p.shape[1])
    return 3


def default_labels(k: int, task: str) -> list[str]:
    if task == "segmentation" and k == 1:
        return ["foreground"]
    return [f"class_{i}" for i in range(k)]


def output_task(out, path: Path) -> str:
    """classification for (B, K) logits, segmentation for (B, K, H, W)."""
    if out.ndim == 2:
        return "classification"
    if out.ndim == 4:
        return "segmentation"
    raise XaiError(f"model {path}: output of shape {tuple(out.shape)} is neither (B,K) nor (B,K,H,W)")


# -- preprocessing -------------------------------------------------------------------

def choose_fit(options, sized, where: str, has_pipeline: bool, fix: str) -> str:
    """"processor" (the model's own pipeline: the default where it has one) or "squash" (the whole image
    resized to a fixed size: --fit squash, --size, or a size in xai.json). `sized` names what gave a
    size ("--size", the sidecar), `fix` how to give the model a pipeline."""
    if options.fit == "processor" and sized:
        raise XaiUsageError(f"{sized} squashes the whole image to a fixed size, which --fit processor does not do; "
                            "drop one of them")
    if options.fit == "processor" and not has_pipeline:
        raise XaiUsageError(f"--fit processor: model {where} has no preprocessing of its own; {fix}")
    return options.fit or ("processor" if has_pipeline and not sized else "squash")


def own_pipeline(prep, pipeline, what: str) -> None:
    """Fit "processor": `pipeline` (a PixelPipeline) makes the model input; --mean/--std or xai.json's
    replace its normalisation (`prep` holds them already)."""
    prep.pipeline = pipeline
    if prep.source in ("xai.json", "command line"):
        pipeline.set_normalisation(prep.mean, prep.std)
    prep.resize = pipeline.resample_name()
    prep.notes = [f"the model's own preprocessing: resize, centre crop and normalisation as {what} does them; "
                  "pixels outside the crop get zero attribution"]


def squash_note(what: str | None) -> list[str]:
    return ["--fit squash: the whole image resized to the model size (no centre crop), so maps cover every pixel"
            + (f"; {what} would resize and crop otherwise" if what else "")]
