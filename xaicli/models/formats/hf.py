"""Hugging Face transformers: an image-classification `save_pretrained` folder, with its image processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xaicli.errors import XaiError, XaiUsageError
from xaicli.models.formats import common
from xaicli.models.formats.base import Format


def load(path: Path, options):
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        model, loading = transformers.AutoModelForImageClassification.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True)
    except Exception as exc:
        raise XaiError(f"model {path}: transformers could not load it as an image classifier "
                       f"({common.said(exc)})") from None
    _refuse_new_weights(path, loading)
    cfg = model.config
    id2label = {int(k): v for k, v in (cfg.id2label or {}).items()}
    labels = [str(id2label.get(i, f"class_{i}")) for i in range(cfg.num_labels)]
    channels = int(getattr(cfg, "num_channels", 3))
    side = common.sidecar(path, channels, cfg.num_labels)
    model_size = (cfg.image_size, cfg.image_size) if isinstance(getattr(cfg, "image_size", None), int) else None
    prep = _preprocessing(path, options, side, channels, model_size)
    arch = (cfg.architectures or [type(model).__name__])[0]
    return common.adapter(model, "classification", side.get("labels") or labels, prep,
                          {"format": "hf", "arch": arch, "sha256": common.weights_sha(path)},
                          model_size=model_size or prep.size)


def _preprocessing(path: Path, options, side: dict[str, Any], channels: int, model_size: tuple[int, int] | None):
    """The processor's own pipeline (fit "processor", the default where preprocessor_config.json exists), or the
    whole image squashed to a fixed size (--fit squash, or a size from --size / xai.json)."""
    from xaicli.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
    from xaicli.models.processor import ProcessorPipeline, load_processor

    proc_path = path / "preprocessor_config.json"
    sized = options.size or side.get("size")
    given = ("--size" if options.size else f"\"size\" in {path / 'xai.json'}") if sized else None
    fit = common.choose_fit(options, given, str(path), proc_path.exists(),
                            "it has no preprocessor_config.json: save the processor with "
                            "processor.save_pretrained(DIR), or use --fit squash with --size")
    proc = load_processor(path)
    if proc is not None:
        norm = bool(getattr(proc, "do_normalize", True))
        factor = _rescale(proc)
        p_mean = tuple(m / factor for m in getattr(proc, "image_mean", None) or IMAGENET_MEAN) if norm \
            else (0.0,) * channels
        p_std = tuple(s / factor for s in getattr(proc, "image_std", None) or IMAGENET_STD) if norm \
            else (1.0 / factor,) * channels
        source = "preprocessor_config.json"
    else:
        p_mean, p_std, source = IMAGENET_MEAN, IMAGENET_STD, "imagenet-default"
    if "mean" in side or "std" in side:
        source = "xai.json"
    prep = Preprocessing(channels=channels, mean=tuple(side.get("mean", p_mean)), std=tuple(side.get("std", p_std)),
                         source=source, fit=fit)
    if fit == "processor":
        common.own_pipeline(prep, ProcessorPipeline(proc, _rescale(proc)), type(proc).__name__)
        return prep
    prep.size = tuple(sized) if sized else (_processor_output_size(proc) or model_size)
    if prep.size is None:
        raise XaiUsageError(f"model {path}: no input size in its processor or config; pass --size HxW")
    prep.notes = common.squash_note(f"the model's {type(proc).__name__}" if proc is not None else None)
    return prep


def _rescale(proc) -> float:
    """What the processor multiplies a [0, 1] pixel by before normalising: 255 x rescale_factor (1 for 1/255)."""
    if not getattr(proc, "do_rescale", True):
        return 255.0
    return float(getattr(proc, "rescale_factor", None) or 1 / 255) * 255.0


def _processor_output_size(proc) -> tuple[int, int] | None:
    """The input size a processor hands the model: its crop, else its fixed or shortest-edge size."""
    if proc is None:
        return None
    crop = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = getattr(proc, "size", None)
    for s in (crop, size):
        h, w = getattr(s, "height", None), getattr(s, "width", None)
        if h and w:
            return int(h), int(w)
    edge = getattr(size, "shortest_edge", None)
    return (int(edge), int(edge)) if edge else None


def _refuse_new_weights(path: Path, loading: Any) -> None:
    """transformers fills weights the folder lacks (a backbone saved without its classifier) with
    random values, and only warns (silenced here): results would change every run."""
    if not isinstance(loading, dict):
        return
    missing = sorted(loading.get("missing_keys") or ())
    mismatched = sorted(str(k[0]) if isinstance(k, (tuple, list)) else str(k)
                        for k in (loading.get("mismatched_keys") or ()))
    for keys, what in ((missing, "lacks"), (mismatched, "has config.json disagreeing with the shapes of")):
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            raise XaiError(f"model {path} {what} {len(keys)} weight(s) ({shown}), which transformers would "
                           "initialise at random; save the fine-tuned classifier itself with "
                           "model.save_pretrained(DIR)")


FORMAT = Format(
    name="hf", title="a Hugging Face folder", short="Hugging Face",
    spec="`DIR` with transformers `config.json`",
    what="an image classifier + `preprocessor_config.json`",
    notes="the model's own image processor, run differentiably (see "
          "[Preprocessing](#preprocessing-the-models-own)); `--fit squash` or `--size` resizes the whole image to "
          "the model size instead",
    config=lambda c: "model_type" in c or "architectures" in c,
    load=load,
)
