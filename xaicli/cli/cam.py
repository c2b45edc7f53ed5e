"""`xai cam`: the Grad-CAM family (the registered CAM methods) into records, on segmenters and classifiers."""

from __future__ import annotations

import sys
import time
from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli import options as opt
from xaicli.cli.methods import method_option, methods_help, with_method_options

Method = method_option("cam", "CAM method")

HELP = """Class activation maps (Grad-CAM and its family) for images or records.

Reads images (the prediction is made here) or records (their prediction is reused; a
record made with another model is an error) and writes records with one map per method
and layer under cam/<method>/<layer>: float32 (targets, H, W) at the image's own size,
raw (ReLU'd, resized bilinearly; not min-max scaled) where the method allows, with the
layer, module, targets and whether it is normalised in the record's meta.

Methods (--method, repeatable; `all` runs every method that fits the model), each
tested against the implementation the README names:

""" + methods_help("cam") + """

Layers: aliases found by probing the model (xai cam -m MODEL --list-layers shows them
with their modules and shapes): smp encoder_early, encoder_mid, encoder_last,
encoder_1..N, decoder_last (default), seg_head; ConvNeXt last (default), stage0..N;
ViT last (default), block0..N; Swin last (default), stage0..N; or any module path
(encoder._blocks[-1], decoder.blocks.x_0_4). Repeatable, to compare layers; names of
one module (last and stage1) are computed once and stored under each name.

\b
  xai cam -m builtin:shapes-seg scans/ --method gradcam++ --layer decoder_last > cams.tar
  xai predict -m builtin:shapes-cls imgs/ | xai cam --target all --method all | xai render -o figs/
  xai cam -m model/ --list-layers
"""


@with_method_options("cam", after="list_layers")
def cam(
    inputs: opt.Inputs = None,
    model: opt.Model = None,
    method: Method = None,
    layer: Annotated[Optional[List[str]], typer.Option(
        "--layer", "-l", help="Layer alias (see --list-layers) or module path; repeatable. Default: the "
                              "model family's (smp decoder_last, ConvNeXt/ViT/Swin last).", show_default=False)] = None,
    list_layers: Annotated[bool, typer.Option(
        "--list-layers", help="Print each layer alias, the module it resolves to and its output shape at the "
                              "model's input size (that of the first image, if given), then exit.")] = False,
    target: opt.Targets = None,
    target_mask: opt.TargetMask = None,
    class_: opt.SegClasses = None,
    threshold: opt.Threshold = 0.5,
    batch_size: opt.BatchSize = None,
    arch: opt.Arch = None,
    arch_args: opt.ArchArgs = None,
    classes: opt.Classes = None,
    labels: opt.Labels = None,
    device: opt.Device = "auto",
    size: opt.Size = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    fit: opt.Fit = None,
    trust_pickle: opt.TrustPickle = False,
    output: opt.Output = None,
    no_image: opt.NoImage = False,
    window: opt.Window = None,
    max_pixels: opt.MaxPixels = 100_000_000,
    skip_existing: opt.SkipExisting = False,
    skip_unreadable: opt.SkipUnreadable = False,
    shard: opt.Shard = None,
    **options,
) -> None:
    from xaicli.cli.methods import method_values
    from xaicli.cli.pipeline import ModelSession, finish, iter_records, load_options, progress
    from xaicli.cli.state import settings
    from xaicli.explain import registry
    from xaicli.io.images import parse_window
    from xaicli.io.inputs import resolve
    from xaicli.io.background import background_writes, prefetch, wanted
    from xaicli.io.outputs import open_sink

    registry.resolve("cam", method)       # unknown or empty names fail before anything loads
    options = method_values("cam", options)
    check_layer_names(layer)
    session = ModelSession(model, load_options(arch, classes, labels, size, mean, std, trust_pickle, fit, arch_args), device)
    if list_layers:
        _list_layers(session, inputs, max_pixels)
        return
    from xaicli.cli.targets import TargetMasks

    masks = TargetMasks(target_mask) if target_mask else None
    windowing = parse_window(window)
    items = resolve(inputs or [], images=True, records=True, shard=shard, output=output)
    sink = open_sink(output)
    skip = sink.exists if skip_existing else None
    state: dict = {}
    threads = wanted(device)     # read ahead / write behind: on accelerators only (io/background.py)
    with sink, background_writes(sink, on=threads) as out:
        records = prefetch(iter_records(items, session, max_pixels=max_pixels, skip=skip,
                                        skip_unreadable=skip_unreadable, window=windowing), on=threads)
        for rec, image in progress(records, items.count, "cam"):
            adapter = session.get()
            if not state:
                state.update(_setup(adapter, image, method, layer, options, batch_size, settings.progress))
                state["params"] = {"methods": state["methods"], "layers": state["layer_map"], "targets": target,
                                   "target_mask": target_mask, "classes": class_, **options,
                                   "batch_size": batch_size}
            t0 = time.perf_counter()
            explain_record(rec, image, adapter, state["engine"], target, masks, class_, threshold)
            out.write(finish(rec, "cam", state["params"], time.perf_counter() - t0, adapter.device, not no_image))
            adapter.release()


cam.__doc__ = HELP


def check_layer_names(names: Optional[List[str]]) -> None:
    """An empty --layer would resolve to the whole model (module path ''): refuse it before loading."""
    from xaicli.errors import XaiUsageError

    for name in names or []:
        if not name.strip():
            raise XaiUsageError(f"--layer {name!r} is empty; give a layer alias or module path "
                                "(xai cam -m MODEL --list-layers shows them)")


def _setup(adapter, image, method, layer, options, batch_size, show_progress):
    """Methods, layers (probed at this image's input size) and the engine, checked before any output."""
    from xaicli.cli.state import log
    from xaicli.explain import registry
    from xaicli.explain.cam import CamEngine, distinct_modules
    from xaicli.models.layers import layer_table

    hw = adapter.input_size(tuple(image.shape[:2]))
    table = layer_table(adapter, hw)
    layers = table.resolve(layer)
    modules = distinct_modules(layers)
    for first in modules:
        names = [la.name for la in layers if la.path == first.path]
        if len(names) > 1:
            log.info("--layer %s: one module (%s), computed once and stored under each name",
                     " and ".join(names), first.path)
    methods = registry.applicable("cam", registry.resolve("cam", method, adapter.task, len(modules),
                                                          all(la.tokens == "vit" for la in modules)),
                                  method, adapter, image)
    engine = CamEngine(adapter, layers, methods, batch_size=batch_size, progress=show_progress,
                       largest_bytes=table.largest_bytes, **options)
    return {"engine": engine, "methods": [m.name for m in methods], "layer_map": {la.name: la.path for la in layers}}


def explain_record(rec, image, adapter, engine, target, masks, classes, threshold) -> None:
    """Add every cam/<method>/<layer> map of `engine` to `rec`.

    A record without a prediction (an image) gets it from the CAM's own forward pass:
    the targets (top class, predicted mask) are resolved from those logits.
    """
    from xaicli.cli.targets import record_targets
    from xaicli.cli.state import log
    from xaicli.io.record import LOGITS, MASK
    from xaicli.models.predict import add_prediction

    hw = tuple(image.shape[:2])

    def resolve(logits=None):
        if logits is not None:
            lg = adapter.to_image_size(logits, hw) if adapter.task == "segmentation" else logits
            add_prediction(rec, adapter, lg[0].detach().float().cpu(), threshold)
        targets = record_targets(rec, adapter, target, masks, classes, hw)
        for t in targets:
            if t.mask is not None and not t.mask.any():
                log.warning("%s: target %s has an empty region; its maps are all zeros", rec.id, t.label)
        return targets

    predicted = LOGITS in rec.arrays and (adapter.task != "segmentation" or MASK in rec.arrays)
    t0 = time.perf_counter()
    maps = engine.explain(image, resolve() if predicted else resolve)
    seconds = round(time.perf_counter() - t0, 4)
    for m in maps:
        m.info["seconds"] = seconds
        rec.add_map(m.key, m.values, m.info)


def _list_layers(session, inputs, max_pixels) -> None:
    from xaicli.errors import XaiUsageError
    from xaicli.io.images import read_image
    from xaicli.io.inputs import ImageInput, resolve
    from xaicli.models.layers import layer_table

    image = None
    record = None
    if inputs:
        for item in resolve(inputs, images=True, records=True):
            if isinstance(item, ImageInput):
                image = read_image(item.path, max_pixels)
            else:
                record = item
                image = item.arrays.get("image")
            break
    if session.spec is None and record is None:
        raise XaiUsageError("--list-layers needs the model: pass -m MODEL (or a record that names it)")
    adapter = session.get(record, image_hw=image.shape[:2] if image is not None else None)
    if image is not None:
        hw = adapter.input_size(tuple(image.shape[:2]))
    else:
        size = adapter.preprocessing.size
        hw = tuple(size) if size else adapter.input_size((256, 256))
    table = layer_table(adapter, hw)
    rows = table.rows()
    width = max([len(r["alias"]) for r in rows] + [5]) + 1
    mwidth = max([len(r["module"]) for r in rows] + [6])
    out = sys.stdout
    out.write(f"# {table.family} model, input {hw[0]}x{hw[1]}; * marks the default layer; "
              "shape: the module's output, then the map grid for tokens\n")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        if r["cam_shape"] != r["shape"]:
            shape += " -> " + "x".join(str(s) for s in r["cam_shape"][1:])
        mark = "*" if r["default"] else " "
        out.write(f"{r['alias'] + mark:<{width}} {r['module']:<{mwidth}} {shape}\n")
    out.flush()
