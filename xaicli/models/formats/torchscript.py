"""TorchScript files (`torch.jit.save`), and `wrap_module`: any whole model (TorchScript, a trusted
pickle, a converted ONNX graph) whose task and class count one probe forward tells."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from xaicli.errors import XaiError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format


def load(path: Path, options):
    import torch

    try:
        with warnings.catch_warnings():   # torch's own deprecation notice for jit.load: nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise XaiError(f"model {path}: not a loadable TorchScript file ({type(exc).__name__})") from None
    return wrap_module(module, path, "torchscript", options)


def wrap_module(module, path: Path, fmt: str, options, size: tuple[int, int] | None = None,
                channels: int | None = None):
    """A whole model (TorchScript or pickle): infer task and class count with one probe forward.
    `size` and `channels`: what the file declares (ONNX); else --size or 64x64, and the first conv's."""
    import torch

    from xaicli.io.images import sha256_file
    from xaicli.models.adapter import LogitsModule
    from xaicli.models.preprocess import Preprocessing

    if not isinstance(module, torch.nn.Module):
        raise XaiError(f"model {path}: holds a {type(module).__name__}, not a model or state dict")
    channels = channels or common.first_conv_channels(module)
    size = options.size or size or (64, 64)
    net = LogitsModule(module).eval()
    with torch.no_grad():
        try:
            out = net(torch.zeros(1, channels, *size))
        except Exception as exc:
            raise XaiError(f"model {path}: a probe forward at {size[0]}x{size[1]} failed ({type(exc).__name__}); "
                           "pass --size the model was trained at") from None
    task = common.output_task(out, path)
    prep = Preprocessing(channels=channels, size=options.size, multiple=1 if task == "classification" else 32,
                         source="imagenet-default")
    if channels != 3:
        prep.mean, prep.std = (0.5,) * channels, (0.5,) * channels
    return common.adapter(module, task, common.default_labels(out.shape[1], task), prep,
                          {"format": fmt, "arch": type(module).__name__, "sha256": sha256_file(path)},
                          model_size=size)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


FORMAT = Format(
    name="torchscript", title="TorchScript", accepts="a TorchScript file",
    spec="TorchScript file", what="`torch.jit.save` output", notes="task and class count from one probe forward",
    sniff=_is_torchscript, load=load,
)
