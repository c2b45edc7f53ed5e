"""Model formats, one module each, behind one small registry.

A format module declares a `FORMAT` (formats/base.py): its name, how it recognises a spec
(a folder whose config.json has a given shape, a file suffix or content, or `--arch
PREFIX:NAME` for a state dict), the optional extra it needs, and the functions that build a
ModelAdapter. `locate` finds the format of `-m SPEC`; a weights file (a state dict, or a
trusted pickle) goes to the format its `--arch` prefix names. -m's and --arch's help, the
one-line "-m takes ..." error and the README's model table are generated from here.

Importing this package imports no torch: the declarations are read by `xai --help`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import hf, monai, onnx, pickled, smp, timm, torchscript, torchvision
from xaicli.models.formats.base import Format

# Folder formats are tried in this order on a folder's config.json (timm's before transformers').
FORMATS: tuple[Format, ...] = (smp.FORMAT, timm.FORMAT, hf.FORMAT, torchvision.FORMAT, monai.FORMAT, onnx.FORMAT,
                               torchscript.FORMAT, pickled.FORMAT)


def locate(spec: str) -> tuple[Format | None, Path]:
    """The format of `-m SPEC` and its path; format None: a weights file (a state dict for --arch, or a pickle)."""
    if spec.startswith("builtin:"):
        from xaicli.models.builtin import builtin_path

        path = builtin_path(spec[len("builtin:"):])
        return folder_format(path), path
    path = Path(spec).expanduser()
    if not path.exists():
        raise XaiError(f"model {spec}: no such file or directory; pass an {_folders()} folder, a weights "
                       "file, or builtin:shapes-seg / builtin:shapes-cls")
    if path.is_dir():
        return folder_format(path), path
    for f in FORMATS:
        if path.suffix.lower() in f.suffixes:
            return f, path
    if path.suffix.lower() != ".safetensors":
        for f in FORMATS:
            if f.sniff is not None and f.sniff(path):
                return f, path
    return None, path


def folder_format(path: Path) -> Format:
    from xaicli.models.formats.common import read_json

    cfg = path / "config.json"
    if not cfg.exists():
        raise XaiError(f"model {path}: folder has no config.json; pass a folder written by save_pretrained "
                       f"({_folders('or')}), or a weights file with --arch")
    config = read_json(cfg)
    for f in FORMATS:
        if f.config is not None and isinstance(config, dict) and f.config(config):
            return f
    raise XaiError(f"model {path}: config.json is from none of {_folders('or')} (their save_pretrained / "
                   "save_for_hf); re-save the model with one of them, or pass a weights file with --arch")


def arch_format(arch: str) -> Format:
    """The format that builds `--arch PREFIX:NAME` (no known prefix: smp's ARCH:ENCODER)."""
    prefix = arch.partition(":")[0].strip().lower()
    for f in FORMATS:
        if f.arch and f.arch == prefix:
            return f
    return next(f for f in FORMATS if f.arch == "")


def require(fmt: Format, what: str) -> None:
    """The optional packages `fmt` needs are importable, else one usage line naming the extra."""
    for module in fmt.needs:
        try:
            importlib.import_module(module)
        except ImportError:
            raise XaiUsageError(f"{what} needs the optional package {module} ({fmt.name} support): "
                                f"pip install 'xai[{fmt.extra}]'") from None


# -- generated text ------------------------------------------------------------------

def _folders(last: str = "or") -> str:
    names = [f.short for f in FORMATS if f.config is not None]
    return ", ".join(names[:-1]) + f" {last} " + names[-1] if len(names) > 1 else names[0]


def _with_extra(text: str, f: Format) -> str:
    """`text (...)` with the pip command of `f`'s extra inside its closing parenthesis."""
    if not f.extra:
        return text
    install = f"pip install 'xai[{f.extra}]'"
    return text[:-1] + f"; {install})" if text.endswith(")") else f"{text} ({install})"


def accepts() -> str:
    """The one-line list of what -m takes, for errors."""
    from xaicli.models.builtin import NAMES

    parts = [f"an {_folders()} folder (the one holding config.json)",
             "a state dict (.pth/.pt/.safetensors) with --arch", *[f.accepts for f in FORMATS if f.accepts]]
    return "-m takes " + ", ".join(parts) + ", or " + " / ".join(f"builtin:{n}" for n in NAMES)


def model_help() -> str:
    from xaicli.models.builtin import NAMES

    parts = [f"an {_folders()} directory", "a state dict (.pth/.pt/.safetensors, with --arch)",
             *[_with_extra(f.accepts, f) for f in FORMATS if f.accepts]]
    return ("Model: " + ", ".join(parts) + ", or builtin:NAME (" + ", ".join(f"builtin:{n}" for n in NAMES)
            + "). Records from an earlier command supply it when omitted.")


def arch_help() -> str:
    archs = [_with_extra(f.arch_help, f) for f in FORMATS if f.arch_help]
    return "Architecture for a state-dict file: " + ", ".join(archs) + "."


def arch_prefixes() -> str:
    """`timm:NAME, torchvision:NAME or monai:NAME`, for messages."""
    names = [f"{f.arch}:NAME" for f in FORMATS if f.arch]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
