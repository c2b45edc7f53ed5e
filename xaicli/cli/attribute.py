"""`xai attribute`: Integrated Gradients and the other registered attribution methods into records."""

from __future__ import annotations

import time

from xaicli.cli import options as opt
from xaicli.cli.methods import method_option, methods_help, with_method_options

Method = method_option("attribution", "Attribution method", " One record gets every map.")

HELP = """Integrated Gradients and other attribution maps for images or records.

Reads images (the prediction is made here) or records (e.g. from xai predict, whose
prediction is reused; a record made with another model is an error), and writes
records with one map per method and baseline under attr/<method>/<baseline>:
float32 (targets, channels, H, W) at the image's own size, raw values.

IG is taken with respect to the image's pixels scaled to [0, 1], with resizing and
normalisation inside the model function, so maps need no resizing and the
completeness check (sum of the map = S(x) - S(x')) holds for the image as shown.
Each target's convergence delta is stored. By default the steps double per target
(16, 32, ...) until |delta| <= 1% of |S(x) - S(x')| (--tolerance 0.01) or --max-steps;
--steps N alone fixes the count instead. All targets, baselines and methods share
batched forward/backward passes.

Methods (--method):

""" + methods_help("attribution") + """

\b
  xai attribute -m builtin:shapes-cls imgs/ --target top3 > attr.tar
  xai predict -m builtin:shapes-seg scans/ | xai attribute --baseline black --baseline blur
  xai attribute -m model/ scan.png --tolerance 0.001 --target-mask gt.png -o out/
  xai attribute -m model/ scans/ --steps 64 -o out/      # fixed steps, no adaptation
"""


@with_method_options("attribution")
def attribute(
    inputs: opt.Inputs = None,
    model: opt.Model = None,
    method: Method = None,
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
    from xaicli.explain import registry
    from xaicli.explain.attribution import settle
    from xaicli.explain.baselines import parse_baselines
    from xaicli.io.images import parse_window
    from xaicli.io.inputs import resolve
    from xaicli.io.background import background_writes, prefetch, wanted
    from xaicli.io.outputs import open_sink

    methods = registry.resolve("attribution", method)
    options = settle(method_values("attribution", options))
    baselines = parse_baselines(options["baseline"] or ["black"])
    from xaicli.cli.targets import TargetMasks

    masks = TargetMasks(target_mask) if target_mask else None
    windowing = parse_window(window)
    items = resolve(inputs or [], images=True, records=True, shard=shard, output=output)
    session = ModelSession(model, load_options(arch, classes, labels, size, mean, std, trust_pickle, fit, arch_args), device)
    sink = open_sink(output)
    params = {"methods": [m.key for m in methods], "baselines": [b.name for b in baselines],
              **{k: v for k, v in options.items() if k != "baseline"}, "targets": target,
              "target_mask": target_mask, "classes": class_, "batch_size": batch_size}
    settings = dict(methods=methods, baselines=baselines, options=options, target=target, masks=masks,
                    classes=class_, threshold=threshold, cache={})
    skip = sink.exists if skip_existing else None
    planner = None
    from xaicli.models.device import reproducible

    threads = wanted(device)     # read ahead / write behind: on accelerators only (io/background.py)
    with reproducible(device, bool(batch_size)), sink, background_writes(sink, on=threads) as out:
        records = prefetch(iter_records(items, session, max_pixels=max_pixels, skip=skip,
                                        skip_unreadable=skip_unreadable, window=windowing), on=threads)
        for rec, image in progress(records, items.count, "attribute"):
            adapter = session.get()
            if planner is None:
                from xaicli.explain.chunking import BatchPlanner

                planner = BatchPlanner(adapter.device, batch_size)
                settings["methods"] = registry.applicable("attribution", methods, method, adapter, image)
                params["methods"] = [m.key for m in settings["methods"]]
            t0 = time.perf_counter()
            explain_record(rec, image, adapter, planner, **settings)
            out.write(finish(rec, "attribute", params, time.perf_counter() - t0, adapter.device, not no_image))
            adapter.release()


attribute.__doc__ = HELP


def explain_record(rec, image, adapter, planner, *, methods, baselines, options, target, masks, classes,
                   threshold, cache: dict | None = None) -> None:
    """Add one map per (method, baseline) to `rec`, all computed in one batched engine call."""
    from xaicli.cli.state import log
    from xaicli.cli.targets import record_targets
    from xaicli.explain.attribute import explain
    from xaicli.io.record import LOGITS, MASK
    from xaicli.models.predict import add_prediction, predict_images

    if LOGITS not in rec.arrays or (adapter.task == "segmentation" and MASK not in rec.arrays):
        add_prediction(rec, adapter, predict_images(adapter, [image])[0], threshold)
    targets = record_targets(rec, adapter, target, masks, classes, tuple(image.shape[:2]))
    for t in targets:
        if t.mask is not None and not t.mask.any():
            log.warning("%s: target %s has an empty region; its map is all zeros", rec.id, t.label)
    for m in explain(adapter, image, targets, methods, baselines, options, key=rec.id, planner=planner,
                     cache=cache):
        rec.add_map(m.key, m.values, m.info)
