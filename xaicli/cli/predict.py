"""`xai predict`: run the model; write records (default) or JSON Lines (--json)."""

from __future__ import annotations

import time

import typer
from typing_extensions import Annotated

from xaicli.cli import options as opt


def predict(
    inputs: opt.Inputs = None,
    model: opt.Model = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Write one JSON object per image (JSON Lines, strict: "
                                                         "null for NaN) instead of records, to stdout or to -o "
                                                         "FILE (written atomically).")] = False,
    threshold: opt.Threshold = 0.5,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes listed in 'top' (classifiers).")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 8,
    no_image: opt.NoImage = False,
    window: opt.Window = None,
    max_pixels: opt.MaxPixels = 100_000_000,
    skip_existing: opt.SkipExisting = False,
    skip_unreadable: opt.SkipUnreadable = False,
    shard: opt.Shard = None,
) -> None:
    """Predict classes (classifiers) or masks (segmenters) for images.

    Writes records with the image, logits, probabilities (segmenters: per pixel at
    image size) and the mask; or, with --json, one line per image with the predicted
    class, confidence, top-k and all probabilities (segmenters: area fractions).
    """
    from xaicli.cli.pipeline import ModelSession, iter_records, load_options, progress
    from xaicli.io.background import background_writes, prefetch, wanted
    from xaicli.io.images import parse_window
    from xaicli.io.inputs import resolve
    from xaicli.io.outputs import LinesSink, open_sink

    windowing = parse_window(window)
    items = resolve(inputs or [], images=True, records=True, shard=shard, output=output)
    session = ModelSession(model, load_options(arch, classes, labels, size, mean, std, trust_pickle, fit, arch_args), device)
    if as_json:
        sink = _JsonSink(LinesSink(output, keep_existing=skip_existing))
    else:
        sink = open_sink(output, command="predict")
    params = {"threshold": threshold, "top_k": top_k, "batch_size": batch_size}
    skip = sink.exists if skip_existing else None
    threads = wanted(device)     # read ahead / write behind: on accelerators only (io/background.py)
    with sink, background_writes(sink, on=threads) as out:
        batch: list = []
        records = prefetch(iter_records(items, session, max_pixels=max_pixels, skip=skip,
                                        skip_unreadable=skip_unreadable, window=windowing),
                           depth=max(2, batch_size), on=threads)
        for rec, image in progress(records, items.count, "predict"):
            batch.append((rec, image))
            if len(batch) >= batch_size:
                _flush(batch, session, out, params, threshold, top_k, not no_image)
        _flush(batch, session, out, params, threshold, top_k, not no_image)


def _flush(batch, session, sink, params, threshold, top_k, keep_image) -> None:
    from xaicli.cli.pipeline import finish
    from xaicli.models.predict import add_prediction, predict_images

    if not batch:
        return
    adapter = session.get()
    t0 = time.perf_counter()
    logits = predict_images(adapter, [img for _, img in batch])
    seconds = (time.perf_counter() - t0) / len(batch)
    for (rec, _), lg in zip(batch, logits):
        add_prediction(rec, adapter, lg, threshold, top_k)
        sink.write(finish(rec, "predict", params, seconds, adapter.device, keep_image))
    batch.clear()


class _JsonSink:
    """JSON Lines with the fields users know from notebooks; same context protocol as a Sink."""

    def __init__(self, lines):
        self.lines = lines
        self.can_skip = lines.can_skip

    def exists(self, record_id, sha256=None) -> bool:
        return self.lines.exists(record_id, sha256)

    def write(self, rec) -> None:
        self.lines.write_line(json_line(rec))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.lines.__exit__(exc_type, exc, tb)


def json_line(rec) -> dict:
    import numpy as np

    pred = rec.meta.get("prediction", {})
    src = rec.meta.get("source", {})
    line = {"id": rec.id, "image": src.get("path"), "sha256": src.get("sha256"), "task": rec.task,
            "model": rec.meta.get("model", {}).get("spec")}
    labels = rec.meta.get("model", {}).get("labels", [])
    if rec.task == "classification":
        probs = rec.arrays["pred/probs"]
        line.update({"predicted_class": pred["label"], "predicted_index": pred["index"],
                     "confidence": pred["confidence"],
                     "top3": [{"label": labels[i], "prob": float(probs[i])}       # 3 whatever --top-k keeps
                              for i in np.argsort(-probs, kind="stable")[:3]],
                     "top": pred["top"],
                     "probabilities": {lab: float(p) for lab, p in zip(labels, probs)}})
    else:
        line.update({"area_fraction": pred.get("area_fraction"), "threshold": pred.get("threshold"),
                     "mask_pixels": int((rec.arrays["pred/mask"] > 0).sum())})
    return line
