"""A torchvision-style eval transform (timm's data config, torchvision's weights transforms), run
differentiably on the image's own pixels: the same design as the Hugging Face processor
(models/processor.py), for libraries whose pipeline is `resize → crop → to tensor → normalise`.

Both libraries' transforms take float tensors as well as PIL images: `geometric` is the
library's own resize and crop (timm's `Compose` up to `MaybeToTensor`; torchvision's
`ImageClassification` / `SemanticSegmentation` with its normalisation set to the identity),
called on float tensors in [0, 1]; the normalisation after the clamp is the transform's own
mean and std. A notebook feeds these transforms a PIL image: uint8, whose resize saturates
(hence the clamp) and rounds (not reproduced: its gradient is zero).
"""

from __future__ import annotations

from typing import Any, Callable

from xaicli.models.processor import PixelPipeline


class TransformPipeline(PixelPipeline):
    """`geometric` maps (N, C, H, W) floats in [0, 1] to the resized and cropped model grid."""

    def __init__(self, geometric: Callable, mean, std, mode, fields: dict[str, Any], kind: str):
        super().__init__()
        self.geometric_transform = geometric
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.mode = mode                   # torchvision InterpolationMode of its resize
        self.fields = fields               # what changes pixels, for the record's meta
        self.kind = kind                   # whose transform: "timm", "torchvision"

    def _geometric_call(self, pixels):
        return self.geometric_transform(pixels / 255.0) * 255.0

    def _finish(self, shaped):
        import torch

        mean = torch.tensor(self.mean, device=shaped.device, dtype=shaped.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=shaped.device, dtype=shaped.dtype).view(1, -1, 1, 1)
        return (shaped / 255.0 - mean) / std

    def _mode(self):
        return self.mode

    def set_normalisation(self, mean, std) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def describe(self) -> dict[str, Any]:
        return {"class": self.kind, **self.fields, "mean": list(self.mean), "std": list(self.std)}

    def resample_name(self) -> str:
        return str(getattr(self.mode, "value", self.mode))


def timm_data_config(model) -> dict[str, Any]:
    """The model's data config as timm resolves it for the model as built (`resolve_input_data_config`: its
    own input channels, so a 1-channel model built by name gets one mean and std, as timm's scripts do);
    `resolve_data_config(model=model)` in timm versions without it."""
    try:
        from timm.data.model_config import resolve_input_data_config
    except ImportError:
        from timm.data import resolve_data_config

        return resolve_data_config({}, model=model)
    return resolve_input_data_config(model)


def timm_pipeline(config: dict[str, Any]) -> TransformPipeline:
    """timm's eval transform for a data config, as `timm.data.create_transform(**config)`."""
    from timm.data import create_transform
    from timm.data.transforms import str_to_interp_mode
    from torchvision import transforms as T

    transform = create_transform(**config)
    steps = [t for t in transform.transforms if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize",
                                                                           "MaybePILToTensor")]
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k not in ("mean", "std")}
    return TransformPipeline(T.Compose(steps), config["mean"], config["std"],
                             str_to_interp_mode(config.get("interpolation", "bilinear")), fields, "timm")


def torchvision_pipeline(preset) -> TransformPipeline:
    """A torchvision weights preset (`weights.transforms()`: ImageClassification, SemanticSegmentation)."""
    import copy

    geometric = copy.copy(preset)
    channels = len(preset.mean)
    geometric.mean, geometric.std = [0.0] * channels, [1.0] * channels   # its own resize and crop, nothing else
    fields = {"class": type(preset).__name__}
    for name in ("resize_size", "crop_size", "antialias"):
        if getattr(preset, name, None) is not None:
            fields[name] = getattr(preset, name)
    fields["interpolation"] = preset.interpolation.value
    pipe = TransformPipeline(geometric, preset.mean, preset.std, preset.interpolation, fields, "torchvision")
    return pipe
