"""segmentation-models-pytorch: a `save_pretrained` folder, or a state dict with --arch ARCH:ENCODER."""

from __future__ import annotations

from pathlib import Path

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format


def load(path: Path, options):
    import segmentation_models_pytorch as smp

    from xaicli.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    config = common.read_json(path / "config.json")
    try:
        model = smp.from_pretrained(str(path))
    except Exception as exc:
        raise XaiError(f"model {path}: smp could not load it ({type(exc).__name__}: {exc})") from None
    classes = int(config.get("classes", 1))
    channels = int(config.get("in_channels", 3))
    side = common.sidecar(path, channels, classes, multiple=32)
    labels = side.get("labels") or common.default_labels(classes, "segmentation")
    prep = Preprocessing(channels=channels, multiple=32, size=side.get("size"),
                         mean=side.get("mean", IMAGENET_MEAN), std=side.get("std", IMAGENET_STD),
                         source="xai.json" if side else "imagenet-default")
    arch = f"{config['_model_class']}({config.get('encoder_name', '?')})"
    return common.adapter(model, "segmentation", labels, prep,
                          {"format": "smp", "arch": arch, "sha256": common.weights_sha(path)})


def from_state(state: dict, path: Path, options):
    from xaicli.io.images import sha256_file
    from xaicli.models.preprocess import Preprocessing

    model, arch = build(options.arch, state, options.classes, options.arch_args or {})
    common.load_strict(model, state, path, f"--arch {options.arch}")
    classes = model.segmentation_head[0].out_channels
    prep = Preprocessing(channels=common.first_conv_channels(model), multiple=32, source="imagenet-default")
    return common.adapter(model, "segmentation", common.default_labels(classes, "segmentation"), prep,
                          {"format": "state_dict", "arch": arch, "sha256": sha256_file(path)})


def build(spec: str, state: dict, classes: int | None, kwargs: dict):
    """`--arch ARCH:ENCODER` → an empty smp model to load the state dict into."""
    import segmentation_models_pytorch as smp

    from xaicli.models.formats import arch_prefixes

    arch, _, encoder = spec.partition(":")
    archs = {a.lower(): a for a in _architectures()}
    if arch.lower() not in archs:
        raise XaiUsageError(f"--arch {spec!r}: unknown architecture {arch!r}; use one of "
                            f"{', '.join(sorted(archs))}, as ARCH:ENCODER (e.g. unetplusplus:efficientnet-b5), "
                            f"or {arch_prefixes()}")
    if not encoder:
        raise XaiUsageError(f"--arch {spec!r}: name the encoder too, e.g. {arch}:efficientnet-b5")
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        raise XaiUsageError(f"--arch {spec!r}: unknown encoder {encoder!r}; see "
                            "segmentation_models_pytorch.encoders.get_encoder_names()")
    head = state.get("segmentation_head.0.weight")
    n = classes or (int(head.shape[0]) if head is not None else 1)
    try:
        model = smp.create_model(archs[arch.lower()], encoder_name=encoder, encoder_weights=None, classes=n, **kwargs)
        # Input channels from the state's tensor under the model's first conv (the stem):
        # not the dict's first 4-D tensor, which is a decoder conv in a safetensors file
        # (keys sorted) or a depthwise conv in some encoders.
        stem = next((k for k, v in model.state_dict().items() if v.ndim == 4), None)
        found = state.get(stem) if stem else None
        in_ch = int(found.shape[1]) if getattr(found, "ndim", 0) == 4 else 3
        if in_ch != 3 and "in_channels" not in kwargs:
            model = smp.create_model(archs[arch.lower()], encoder_name=encoder, encoder_weights=None,
                                     in_channels=in_ch, classes=n, **kwargs)
    except Exception as exc:
        raise XaiError(f"--arch {spec!r}: smp could not build it ({type(exc).__name__}: {exc})") from None
    return model, f"{archs[arch.lower()]}({encoder})"


def _architectures() -> list[str]:
    import segmentation_models_pytorch as smp

    mapping = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if mapping:
        return list(mapping.keys())
    return [m.__name__ for m in getattr(smp, "_MODEL_ARCHITECTURES", [])]


FORMAT = Format(
    name="smp", title="an smp folder", short="smp",
    spec="`DIR` with smp `config.json`; `FILE.pth/.pt/.safetensors` + `--arch ARCH:ENCODER`",
    what="`model.save_pretrained(DIR)` of segmentation-models-pytorch; or a state dict, e.g. `best_model.pth` of "
         "`smp.UnetPlusPlus`",
    notes="ImageNet mean/std unless `--mean/--std` (smp 0.6 keeps encoder settings on the Hub, which is never "
          "contacted); input size: `--size`, else the image size rounded to 32. State dicts: "
          "`--arch unetplusplus:efficientnet-b5`, `--classes` defaults to the head's size",
    config=lambda c: "_model_class" in c,
    arch="", arch_help="ARCH:ENCODER (smp, e.g. unetplusplus:efficientnet-b5)",
    load=load, from_state=from_state,
)
