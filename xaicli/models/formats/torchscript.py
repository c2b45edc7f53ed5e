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
    `size` and `channels`: what the file declares (ONNX); else the first conv's channels, and the
    probe runs at --size, else at the first image's own size (a 28x28 classifier given 28x28
    images just works), then at 64x64. The size that worked is remembered, so an image the
    model cannot take is told the --size it can."""
    import torch

    from xaicli.io.images import sha256_file
    from xaicli.models.adapter import LogitsModule
    from xaicli.models.preprocess import Preprocessing

    if not isinstance(module, torch.nn.Module):
        raise XaiError(f"model {path}: holds a {type(module).__name__}, not a model or state dict")
    channels = channels or common.first_conv_channels(module)
    declared = options.size or size
    sizes = [declared] if declared else list(dict.fromkeys([options.extra.get("probe_size"), (64, 64)]))
    sizes = [tuple(s) for s in sizes if s]
    net = LogitsModule(module).eval()
    out = None
    with torch.no_grad():
        for size in sizes:
            try:
                out = net(torch.zeros(1, channels, *size))
                break
            except Exception as exc:
                failure = type(exc).__name__
    if out is None:
        tried = " and ".join(f"{h}x{w}" for h, w in sizes)
        raise XaiError(f"model {path}: a probe forward at {tried} failed ({failure}); "
                       "pass --size the model was trained at")
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
    spec="TorchScript file", what="`torch.jit.save` output", notes="task and class count from one probe forward at `--size`, else at the first image's own size "
          "(a 28×28 classifier takes 28×28 images as they are), then at 64×64; `--size` is asked for only "
          "when both fail",
    sniff=_is_torchscript, load=load,
)
