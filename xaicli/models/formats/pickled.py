"""A whole model pickled with `torch.save(model)`: loads only with --trust-pickle (unpickling runs code)."""

from __future__ import annotations

from pathlib import Path

from xaicli.models.formats.base import Format


def from_module(module, path: Path, options):
    from xaicli.models.formats.torchscript import wrap_module

    return wrap_module(module, path, "pickle", options)


FORMAT = Format(
    name="pickle", title="a pickled model", spec="pickled model", what="`torch.save(model)`",
    notes="only with `--trust-pickle`: loading a pickle runs code from the file",
)
