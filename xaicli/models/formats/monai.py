"""MONAI networks: a state dict with --arch monai:NAME and --arch-args (the constructor's keyword
arguments as JSON), in 2-D. MONAI is an optional extra (pip install 'xai[monai]').

The arguments are checked against the constructor's signature (and, where it passes **kwargs
on, its base classes'), so a typo is one line naming the key and the valid ones; `spatial_dims`
defaults to 2, and `in_channels` / `out_channels` (or --classes) to the state dict's. MONAI
pipelines scale intensities to [0, 1] (ScaleIntensity) without mean/std, so that is the default
here (--mean/--std for others); the input is the image's own size rounded to the multiple the
network needs, found by shape-only forwards on the meta device.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format

MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


def from_state(state: dict, path: Path, options):
    from xaicli.models.formats.torchscript import wrap_module

    cls = _network(options.arch)
    kwargs = _arguments(cls, options)

    def build(**more):
        return cls(**{**kwargs, **more})

    params = _parameters(cls)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs
               and n not in ("in_channels", "out_channels")]
    if missing:
        raise XaiUsageError(f"--arch {options.arch}: --arch-args lacks {', '.join(missing)}, which {cls.__name__} "
                            f"needs, e.g. --arch-args '{_example(cls)}'")
    counts = [k for k in ("in_channels", "out_channels") if k in params]
    stand_in = {k: kwargs.get(k, 2) for k in counts}      # a required count the probes do not vary
    for key, probes in (("in_channels", (3, 1)), ("out_channels", (3, 5))):
        if key in params and key not in kwargs:
            found = common.sized_by(lambda **kw: build(**{**stand_in, **kw}), state, key, probes)
            if found is None:
                raise XaiUsageError(f"--arch {options.arch}: give \"{key}\" in --arch-args (the state dict does "
                                    "not show it)")
            kwargs[key] = found
    try:
        model = build()
    except Exception as exc:
        raise XaiUsageError(f"--arch {options.arch}: MONAI could not build {cls.__name__} with --arch-args {kwargs} "
                            f"({common.said(exc)})") from None
    common.load_strict(model, state, path, f"--arch {options.arch}")
    channels = int(kwargs.get("in_channels") or common.first_conv_channels(model))
    multiple = _multiple(model, channels)
    ad = wrap_module(model, path, "monai", options, channels=channels)   # task and class count: a probe forward
    prep = ad.preprocessing
    prep.mean, prep.std = (0.0,) * prep.channels, (1.0,) * prep.channels
    prep.multiple, prep.source = multiple, "monai-default"
    prep.notes = ["MONAI: intensities scaled to [0, 1] (as ScaleIntensity), no mean/std unless --mean/--std; "
                  f"the image's own size rounded to a multiple of {multiple}, as the network needs"]
    ad.info.update({"arch": cls.__name__, "arch_args": kwargs})
    return ad


def _network(arch: str):
    import torch
    from monai.networks import nets

    name = arch.partition(":")[2].strip()
    found = {n.lower(): getattr(nets, n) for n in dir(nets)
             if isinstance(getattr(nets, n), type) and issubclass(getattr(nets, n), torch.nn.Module)}
    if name.lower() not in found:
        import difflib

        close = difflib.get_close_matches(name.lower(), list(found), n=4, cutoff=0.5)
        raise XaiUsageError(f"--arch {arch!r}: monai.networks.nets has no network {name!r}"
                            + (f"; did you mean {', '.join(found[c].__name__ for c in close)}?" if close else "")
                            + " (e.g. monai:UNet, monai:DenseNet121, monai:SwinUNETR)")
    return found[name.lower()]


def _parameters(cls) -> dict[str, inspect.Parameter]:
    """The keyword arguments the constructor takes: its own, and its bases' where it passes **kwargs on."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__)
        own = {n: p for n, p in sig.parameters.items() if n != "self"}
        for n, p in own.items():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(n, p)
        if not any(p.kind == p.VAR_KEYWORD for p in own.values()):
            break
    return params


def _arguments(cls, options) -> dict:
    kwargs = dict(options.arch_args or {})
    params = _parameters(cls)
    for key in kwargs:
        if key not in params:
            import difflib

            close = difflib.get_close_matches(key, list(params), n=1)
            raise XaiUsageError(f"--arch-args: {cls.__name__} takes no argument {key!r}"
                                + (f" (did you mean {close[0]!r}?)" if close else "")
                                + f"; it takes {', '.join(params)}")
    if "spatial_dims" in params:
        if kwargs.setdefault("spatial_dims", 2) != 2:
            raise XaiUsageError(f"--arch-args: \"spatial_dims\": {kwargs['spatial_dims']}; xai explains 2-D images, "
                                "so give 2 (or leave it out)")
    if options.classes and "out_channels" in params:
        kwargs.setdefault("out_channels", options.classes)
    return kwargs


def _example(cls) -> str:
    examples = {"UNet": '{"in_channels": 1, "out_channels": 2, "channels": [16, 32, 64], "strides": [2, 2]}'}
    return examples.get(cls.__name__, '{"in_channels": 1, "out_channels": 2}')


def _multiple(model, channels: int) -> int:
    """The smallest side multiple the network takes: a forward at an odd multiple of each candidate, on
    a meta-device copy (shapes only) where that works, else on the model itself; a segmenter must also
    give its logits at the input's size."""
    import copy

    import torch

    failed: list[BaseException] = []

    def runs(net, side: int, device) -> bool:
        try:
            with torch.no_grad():
                out = net(torch.zeros(1, channels, side, side, device=device))
        except Exception as exc:
            failed.append(exc)
            return False
        out = out[0] if isinstance(out, (tuple, list)) else out
        return getattr(out, "ndim", 0) == 2 or tuple(out.shape[-2:]) == (side, side)

    net, device = copy.deepcopy(model).to("meta").eval(), "meta"
    if not runs(net, 2 * MULTIPLES[-1], device):          # an op without a meta kernel: real forwards
        net, device = model.eval(), "cpu"
    for m in MULTIPLES:
        if runs(net, m * max(1, -(-48 // m) | 1), device):   # an odd multiple of m, at least 48
            return m
    raise XaiError(f"the MONAI network failed a probe forward at every side multiple up to {MULTIPLES[-1]} "
                   f"({common.said(failed[-1]) if failed else 'no forward ran'}); check --arch-args (e.g. \"strides\") and MONAI's "
                   "optional packages (pip install 'xai[monai]')")


FORMAT = Format(
    name="monai", title="a MONAI network",
    spec="`FILE` + `--arch monai:NAME --arch-args JSON`",
    what="a state dict of a `monai.networks.nets` network in 2-D (`UNet`, `DenseNet121`, `SwinUNETR`, ...)",
    notes="`--arch-args '{\"channels\": [16, 32, 64], \"strides\": [2, 2]}'`: the constructor's keyword "
          "arguments, checked against its signature; `spatial_dims` 2, `in_channels`/`out_channels` from the state "
          "dict; intensities in [0, 1] (no mean/std) unless `--mean/--std`; image size rounded to what the network "
          "needs. Needs `pip install 'xai[monai]'`",
    arch="monai", arch_help="monai:NAME with --arch-args (e.g. monai:UNet)",
    extra="monai", needs=("monai",), from_state=from_state,
)
