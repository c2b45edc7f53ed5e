"""torchvision: a state dict of a `torchvision.models` classifier or segmenter, with --arch torchvision:NAME.

Built with `weights=None` (and `weights_backbone=None`: nothing is downloaded); preprocessed
by the weights' own transforms (`get_model_weights(NAME).DEFAULT.transforms()`: its resize,
centre crop, interpolation, mean and std; the preset is built from the enum's meta, no file
is fetched), run differentiably (models/transforms.py). Segmenters return a dict: its "out".
"""

from __future__ import annotations

from pathlib import Path

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format


def from_state(state: dict, path: Path, options):
    from torchvision import models

    from xaicli.io.images import sha256_file

    name = options.arch.partition(":")[2].strip()
    task = _task(name, options.arch)
    kwargs = dict(options.arch_args or {})
    notes = []
    if task == "segmentation":
        kwargs.setdefault("weights_backbone", None)
        aux = [k for k in state if k.startswith("aux_classifier.")]
        if aux and not kwargs.get("aux_loss"):
            # the auxiliary head only feeds a training loss; without it the forward is the same "out", cheaper
            state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
            notes.append(f"{len(aux)} aux_classifier tensors dropped: the auxiliary head feeds only a training loss")
    builder = models.get_model_builder(name)

    def build(**more):
        return builder(weights=None, **{**kwargs, **more})

    classes = options.classes or kwargs.get("num_classes") or common.sized_by(build, state, "num_classes", (3, 5))
    try:
        model = build(**({"num_classes": classes} if classes else {}))
    except Exception as exc:
        raise XaiUsageError(f"--arch {options.arch!r}: torchvision could not build it with --arch-args {kwargs} "
                            f"({common.said(exc)})") from None
    common.load_strict(model, state, path, f"--arch {options.arch}")
    return _adapter(model, name, task, path, options, sha256_file(path), notes)


def _task(name: str, arch: str) -> str:
    from torchvision import models

    if name in models.list_models(module=models.segmentation):
        return "segmentation"
    if name in models.list_models(module=models):
        return "classification"
    everything = models.list_models()
    if name in everything:
        raise XaiUsageError(f"--arch {arch!r}: {name} is not an image classifier or segmenter (detection, video "
                            "or optical flow), which xai does not explain")
    import difflib

    close = difflib.get_close_matches(name.lower(), everything, n=4, cutoff=0.6)
    raise XaiUsageError(f"--arch {arch!r}: torchvision has no model {name!r}"
                        + (f"; did you mean {', '.join(close)}?" if close else "")
                        + " (torchvision.models.list_models() lists them)")


def _adapter(model, name: str, task: str, path: Path, options, sha: str, notes: list[str]):
    from torchvision import models

    from xaicli.models.preprocess import Preprocessing
    from xaicli.models.transforms import torchvision_pipeline

    try:
        weights = models.get_model_weights(name).DEFAULT
        preset = weights.transforms()              # the preset object only: nothing is downloaded
    except Exception as exc:
        raise XaiError(f"--arch torchvision:{name}: torchvision defines no weights transforms for it "
                       f"({type(exc).__name__}); pass --size, --mean and --std") from None
    pipe = torchvision_pipeline(preset)
    fit = common.choose_fit(options, "--size" if options.size else None, str(path), True, "")
    prep = Preprocessing(channels=3, mean=pipe.mean, std=pipe.std, source=f"torchvision {weights} transforms",
                         fit=fit)
    crop = getattr(preset, "crop_size", None) or getattr(preset, "resize_size", None) or [224]
    model_size = (int(crop[0]), int(crop[-1]))
    if fit == "processor":
        common.own_pipeline(prep, pipe, f"{weights}.transforms()")
    else:
        prep.size = tuple(options.size) if options.size else model_size
        prep.notes = common.squash_note(f"{weights}.transforms()")
    prep.notes += notes
    classes = common.output_channels(model, (1, 3, *model_size))
    return common.adapter(model, task, common.default_labels(classes, task), prep,
                          {"format": "torchvision", "arch": name, "sha256": sha}, model_size=model_size)


FORMAT = Format(
    name="torchvision", title="a torchvision model",
    spec="`FILE` + `--arch torchvision:NAME`",
    what="a state dict of a `torchvision.models` classifier (`resnet50`, `efficientnet_b0`, ...) or segmenter "
         "(`deeplabv3_resnet50`, `fcn_resnet50`, `lraspp_mobilenet_v3_large`)",
    notes="built with `weights=None`; the weights' own transforms (`get_model_weights(NAME).DEFAULT.transforms()`: "
          "resize, centre crop, interpolation, mean/std; nothing downloaded), run differentiably; `--size` "
          "squashes instead, `--mean/--std` replace; segmenters' output dict gives `out`, `aux_classifier` "
          "weights are dropped",
    arch="torchvision", arch_help="torchvision:NAME (e.g. torchvision:resnet50)",
    from_state=from_state,
)
