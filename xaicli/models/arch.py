"""`--arch ARCH:ENCODER` → an empty smp model to load a state dict into."""

from __future__ import annotations

from xaicli.errors import XaiError, XaiUsageError


def build_smp(spec: str, state: dict, classes: int | None):
    import segmentation_models_pytorch as smp

    arch, _, encoder = spec.partition(":")
    archs = {a.lower(): a for a in _architectures()}
    if arch.lower() not in archs:
        raise XaiUsageError(f"--arch {spec!r}: unknown architecture {arch!r}; use one of "
                            f"{', '.join(sorted(archs))}, as ARCH:ENCODER (e.g. unetplusplus:efficientnet-b5)")
    if not encoder:
        raise XaiUsageError(f"--arch {spec!r}: name the encoder too, e.g. {arch}:efficientnet-b5")
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        raise XaiUsageError(f"--arch {spec!r}: unknown encoder {encoder!r}; see "
                            "segmentation_models_pytorch.encoders.get_encoder_names()")
    head = state.get("segmentation_head.0.weight")
    n = classes or (int(head.shape[0]) if head is not None else 1)
    try:
        model = smp.create_model(archs[arch.lower()], encoder_name=encoder, encoder_weights=None, classes=n)
        # Input channels from the state's tensor under the model's first conv (the stem):
        # not the dict's first 4-D tensor, which is a decoder conv in a safetensors file
        # (keys sorted) or a depthwise conv in some encoders.
        stem = next((k for k, v in model.state_dict().items() if v.ndim == 4), None)
        found = state.get(stem) if stem else None
        in_ch = int(found.shape[1]) if getattr(found, "ndim", 0) == 4 else 3
        if in_ch != 3:
            model = smp.create_model(archs[arch.lower()], encoder_name=encoder, encoder_weights=None,
                                     in_channels=in_ch, classes=n)
    except Exception as exc:
        raise XaiError(f"--arch {spec!r}: smp could not build it ({type(exc).__name__}: {exc})") from None
    return model, f"{archs[arch.lower()]}({encoder})"


def _architectures() -> list[str]:
    import segmentation_models_pytorch as smp

    mapping = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if mapping:
        return list(mapping.keys())
    return [m.__name__ for m in getattr(smp, "_MODEL_ARCHITECTURES", [])]
