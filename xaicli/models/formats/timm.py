"""timm: an export folder (`timm.models.save_for_hf` / `push_to_hub`: config.json with `architecture`
and `pretrained_cfg`, weights in model.safetensors), or a state dict with --arch timm:NAME.

Built offline (`pretrained=False`, then the weights, strictly); preprocessed by timm's own eval
transform for the model's data config (`create_transform(**resolve_data_config(model=m))`),
run differentiably (models/transforms.py).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format


def load(path: Path, options):
    import timm

    name = common.read_json(path / "config.json").get("architecture")
    weights = common.weights_file(path)
    if weights is None:
        raise XaiError(f"model {path}: no weights file ({', '.join(common.WEIGHT_FILES)}) in the timm folder; "
                       "re-save it with timm.models.save_for_hf(model, DIR, safe_serialization=True)")
    with _quiet():
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=False)
        except Exception as exc:
            raise XaiError(f"model {path}: timm {timm.__version__} could not build {name!r} from its config.json "
                           f"({common.said(exc)}); upgrade timm, or re-save the folder with "
                           "timm.models.save_for_hf") from None
    state = common.unwrap_state(common.read_state(weights, options))
    common.load_strict(model, state, path, f"its config.json ({name})",
                       "re-save the folder with timm.models.save_for_hf(model, DIR)")
    return _adapter(model, path, options, name, common.weights_sha(path), folder=True)


def from_state(state: dict, path: Path, options):
    import timm

    from xaicli.io.images import sha256_file

    name = options.arch.partition(":")[2].strip()
    if not name or not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name.lower(), timm.list_models(), n=4, cutoff=0.6)
        raise XaiUsageError(f"--arch {options.arch!r}: timm has no architecture {name!r}"
                            + (f"; did you mean {', '.join(close)}?" if close else "")
                            + " (timm.list_models() lists them)")
    kwargs = dict(options.arch_args or {})

    def build(**more):
        return timm.create_model(name, pretrained=False, **{**kwargs, **more})

    sizes = {"num_classes": options.classes or kwargs.get("num_classes")
             or common.sized_by(build, state, "num_classes", (3, 5)),
             "in_chans": kwargs.get("in_chans") or common.sized_by(build, state, "in_chans", (3, 1))}
    with _quiet():
        try:
            model = build(**{k: v for k, v in sizes.items() if v})
        except Exception as exc:
            raise XaiUsageError(f"--arch {options.arch!r}: timm could not build it with --arch-args "
                                f"{kwargs} ({common.said(exc)})") from None
    common.load_strict(model, state, path, f"--arch {options.arch}")
    return _adapter(model, path, options, name, sha256_file(path), folder=False)


def _adapter(model, path: Path, options, name: str, sha: str, folder: bool):
    from xaicli.models.preprocess import Preprocessing
    from xaicli.models.transforms import timm_data_config, timm_pipeline

    classes = int(getattr(model, "num_classes", 0) or 0)
    if classes < 1:
        raise XaiError(f"model {path}: {name} has no classifier (num_classes 0, a feature extractor); "
                       "xai explains classifiers: save it with its head")
    channels = common.first_conv_channels(model)
    side = common.sidecar(path, channels, classes) if folder else {}
    with _quiet():
        config = timm_data_config(model)
    # crop_mode "border" pads with the mean colour (PIL fill values, which tensors do not take): squash instead
    own = config.get("crop_mode") != "border"
    sized = options.size or side.get("size")
    given = ("--size" if options.size else f"\"size\" in {path / 'xai.json'}") if sized else None
    fit = common.choose_fit(options, given, str(path), own, "timm's crop_mode 'border' pads with the mean "
                            "colour, which xai does not reproduce; use --fit squash")
    prep = Preprocessing(channels=channels, mean=tuple(side.get("mean", config["mean"])),
                         std=tuple(side.get("std", config["std"])),
                         source="xai.json" if ("mean" in side or "std" in side) else "timm data config", fit=fit)
    model_size = tuple(config["input_size"][-2:])
    if fit == "processor":
        common.own_pipeline(prep, timm_pipeline(config), "timm's eval transform")
    else:
        prep.size = tuple(sized) if sized else model_size
        prep.notes = common.squash_note("timm's eval transform (crop_mode " + str(config.get("crop_mode")) + ")")
    labels = side.get("labels") or _labels(model.pretrained_cfg.get("label_names"), classes)
    return common.adapter(model, "classification", labels, prep,
                          {"format": "timm", "arch": name, "sha256": sha}, model_size=model_size)


def _labels(names, classes: int) -> list[str]:
    """timm's `label_names`: a list, or a dict from class index to name (gaps allowed)."""
    if isinstance(names, dict):
        names = [names.get(i, names.get(str(i))) for i in range(classes)]
    if isinstance(names, (list, tuple)) and len(names) == classes and all(names):
        return [str(n) for n in names]
    return common.default_labels(classes, "classification")


@contextlib.contextmanager
def _quiet():
    """timm logs notes on building and configuring (e.g. "Pretrained mean does not match 1 channels") to the
    root logger's last-resort handler, i.e. stderr: not for the user, whose stderr is xai's."""
    logger = logging.getLogger("timm")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


FORMAT = Format(
    name="timm", title="a timm folder", short="timm",
    spec="`DIR` with timm `config.json`; `FILE` + `--arch timm:NAME`",
    what="`timm.models.save_for_hf(model, DIR)` / `push_to_hub` export (`architecture`, `pretrained_cfg`, "
         "`model.safetensors`); or a state dict of `timm.create_model(NAME, ...)`",
    notes="built offline (`pretrained=False`) + the weights; timm's own eval transform from the data config "
          "(input size, `crop_pct`, `crop_mode`, interpolation, mean/std), run differentiably; `--fit squash` or "
          "`--size` squashes instead. `--classes` and input channels default to the state dict's",
    config=lambda c: "architecture" in c and "pretrained_cfg" in c,
    arch="timm", arch_help="timm:NAME (e.g. timm:convnext_tiny)",
    load=load, from_state=from_state,
)
