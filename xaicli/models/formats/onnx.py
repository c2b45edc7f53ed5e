"""ONNX files (.onnx): converted to a torch module by onnx2torch, then explained like any whole model.
An optional extra (pip install 'xai[onnx]'); the bridge for Keras/TensorFlow models (tf2onnx).

The conversion runs once per file: the module is cached under the user cache folder
($XDG_CACHE_HOME/xai/onnx, else ~/.cache/xai/onnx; delete the folder to clear it), keyed by
the file's sha256 and the onnx2torch and torch versions, written atomically. The cache holds
pickles that xai wrote itself (an fx GraphModule cannot be saved otherwise); anything there
that does not load is converted again. The input's declared shape gives the model size
(static H, W) and layout: NCHW, NHWC (Keras; transposed here) or NHW (one channel).
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

from xaicli.errors import XaiError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format

log = logging.getLogger("xai")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xai" / "onnx"


def load(path: Path, options):
    from importlib.metadata import version

    import torch

    from xaicli.io.images import sha256_file
    from xaicli.models.formats.torchscript import wrap_module

    sha = sha256_file(path)
    cached = cache_dir() / f"{sha}-onnx2torch{version('onnx2torch')}-torch{torch.__version__}.pt"
    found = _from_cache(cached)
    if found is None:
        graph = _read(path)
        found = {"module": _convert(graph, path), "input": _input_dims(graph, path)}
        _to_cache(cached, found)
    module, dims = found["module"], found["input"]
    layout, channels, size = _layout(dims)
    if layout != "NCHW":
        module = _with_layout(module, layout)
    ad = wrap_module(module, path, "onnx", options, size=size, channels=channels)
    if size and not options.size:
        ad.preprocessing.size = size            # a graph with a fixed H, W takes only that
    _check_batches(ad, path)
    ad.info.update({"arch": f"ONNX ({layout})", "input": dims})
    return ad


def _read(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise XaiError(f"model {path}: not a readable ONNX file ({type(exc).__name__}); export it again "
                       "(torch.onnx.export, or tf2onnx for Keras)") from None


def _convert(graph, path: Path):
    from importlib.metadata import version

    import onnx2torch

    try:
        return onnx2torch.convert(graph).eval()
    except NotImplementedError as exc:
        op = re.search(r"operation_type='([^']*)'", str(exc))
        opset = re.search(r"version=(\d+)", str(exc))
        if op is None:
            raise XaiError(f"model {path}: onnx2torch cannot convert it ({exc})") from None
        nodes = [n.name for n in graph.graph.node if n.op_type == op[1]]
        where = f", node {nodes[0]!r}" + (f" and {len(nodes) - 1} more" if len(nodes) > 1 else "") if nodes else ""
        raise XaiError(f"model {path}: onnx2torch {version('onnx2torch')} cannot convert the operator {op[1]} "
                       f"(opset {opset[1] if opset else '?'}{where}); re-export the model without it, or at an "
                       "opset it converts (torch.onnx.export(..., opset_version=17), tf2onnx --opset 17)") from None
    except Exception as exc:
        raise XaiError(f"model {path}: onnx2torch could not convert it ({common.said(exc)})") from None


def _input_dims(graph, path: Path) -> list:
    """The first graph input's dims: ints where fixed, None where symbolic (a dynamic axis)."""
    inits = {i.name for i in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise XaiError(f"model {path}: the graph takes {len(inputs)} inputs; xai feeds one image tensor")
    return [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]


def _layout(dims: list) -> tuple[str, int | None, tuple[int, int] | None]:
    """(layout, channels, (H, W) if fixed) of a declared input shape."""
    if len(dims) == 3:                                   # (N, H, W): a one-channel model (a Keras Flatten first)
        h, w = dims[1], dims[2]
        return "NHW", 1, (h, w) if h and w else None
    if len(dims) == 4 and dims[1] not in (1, 3, 4) and dims[3] in (1, 3, 4):
        h, w = dims[1], dims[2]
        return "NHWC", dims[3], (h, w) if h and w else None
    if len(dims) == 4:
        h, w = dims[2], dims[3]
        return "NCHW", dims[1], (h, w) if h and w else None
    raise XaiError(f"the ONNX graph's input has shape {dims}; xai feeds images as (N, C, H, W), (N, H, W, C) "
                   "or (N, H, W)")


def _from_cache(path: Path):
    import torch

    if not path.exists():
        return None
    try:
        found = torch.load(str(path), map_location="cpu", weights_only=False)
        if isinstance(found, dict) and isinstance(found.get("module"), torch.nn.Module):
            log.info("ONNX model converted earlier, from the cache: %s", path)
            return found
    except Exception as exc:
        log.info("the cached conversion %s did not load (%s); converting again", path, type(exc).__name__)
    return None


def _to_cache(path: Path, found: dict) -> None:
    import torch

    from xaicli.io.atomic import atomic_write

    buf = io.BytesIO()
    torch.save(found, buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buf.getvalue())
        log.info("ONNX model converted and cached: %s (delete %s to clear the cache)", path, path.parent)
    except OSError as exc:
        log.warning("could not cache the converted ONNX model in %s (%s); it converts again next time",
                    path.parent, exc.strerror)


def _check_batches(ad, path: Path) -> None:
    """Explaining runs batches (IG steps, CAM targets): a graph that fixed its batch size at export cannot."""
    import torch

    size = ad.preprocessing.size or ad.model_size
    with torch.no_grad():
        try:
            ad.net(torch.zeros(2, ad.preprocessing.channels, *size))
        except Exception:
            raise XaiError(f"model {path} takes only a batch of 1 (its graph fixes the batch size); export it with "
                           "a dynamic batch axis: torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}), "
                           "or tf2onnx (keeps Keras's)") from None


def _with_layout(model, layout: str):
    """`model` behind a module that hands it the image batch (N, C, H, W) in the layout its graph declares."""
    from torch import nn

    class Layout(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x.permute(0, 2, 3, 1) if layout == "NHWC" else x[:, 0])

    return Layout()


FORMAT = Format(
    name="onnx", title="an ONNX file", accepts="an ONNX file (.onnx)",
    spec="`FILE.onnx`",
    what="`torch.onnx.export` output, or a Keras/TensorFlow model through `tf2onnx` (see below)",
    notes="converted by onnx2torch once, cached by sha256 under `~/.cache/xai/onnx` (`$XDG_CACHE_HOME`); the "
          "input size from the graph; layout NCHW, NHWC or NHW; task and class count from one probe forward. "
          "Needs `pip install 'xai[onnx]'`",
    suffixes=(".onnx",), extra="onnx", needs=("onnx2torch", "onnx"), load=load,
)
