"""The loop every model command shares: inputs → records → (model) → process → sink.

Inputs are checked before the model loads; the model loads once, from -m or from the
first record's meta; each image becomes a record with its source and prediction; a
record made with another model is refused; every record gets a history entry.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable, Iterator

from xaicli.cli.state import log, settings
from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.images import read_image, sha256_file
from xaicli.io.inputs import ImageInput, Inputs
from xaicli.io.record import Record


class ModelSession:
    """Loads the model on first use and checks that records belong to it."""

    def __init__(self, spec: str | None, options, device: str):
        self.spec, self.options, self.device = spec, options, device
        self.adapter = None

    def get(self, record: Record | None = None):
        if self.adapter is None:
            from xaicli.models.loader import load_for_record, load_model

            t0 = time.perf_counter()
            if self.spec:
                self.adapter = load_model(self.spec, self.options, self.device)
            elif record is not None and record.meta.get("model"):
                self._refuse_ignored_options(record)
                self.adapter = load_for_record(record.meta["model"], self.device,
                                               trust_pickle=bool(getattr(self.options, "trust_pickle", False)),
                                               fit=record_fit(record))
            else:
                raise XaiError("no model: pass -m MODEL (images carry no model, and these records name none)")
            log.info("model %s loaded on %s in %.1f s", self.adapter.info.get("spec"), self.adapter.device,
                     time.perf_counter() - t0)
        if record is not None:
            self.check(record)
        return self.adapter

    def _refuse_ignored_options(self, record: Record) -> None:
        """Load options without -m would be ignored: the records' model loads as they were made."""
        if self.options is None:
            return
        ours = self.options.to_meta()
        loaded = (record.meta.get("model") or {}).get("load") or {}
        given = [k for k in LOAD_KEYS if ours.get(k) and ours.get(k) != loaded.get(k)]
        if ours.get("fit") and ours["fit"] != record_fit(record):
            given.append("fit")
        if given:
            raise XaiUsageError(f"{' '.join('--' + k for k in given)} set how -m loads a model; without -m the "
                                f"records' model loads as they were made "
                                f"({_options({**loaded, 'fit': record_fit(record)}, given)}); "
                                "pass -m MODEL as well, or drop the option")

    def check(self, record: Record) -> None:
        theirs = (record.meta.get("model") or {}).get("sha256")
        if theirs and theirs != self.adapter.sha256:
            spec = record.meta["model"].get("spec")
            raise XaiError(f"record {record.id} was made with another model ({spec}, weights sha256 {theirs[:12]}), "
                           f"not {self.adapter.info.get('spec')}; use the same -m as the command that made it")
        fit = record_fit(record)
        if fit is not None and fit != self.adapter.preprocessing.fit:
            raise XaiError(f"record {record.id} was made with --fit {fit}, this run loads the model with --fit "
                           f"{self.adapter.preprocessing.fit}; pass --fit {fit}, or omit -m to load the model as the "
                           "records say")
        loaded = (record.meta.get("model") or {}).get("load")
        if self.spec and isinstance(loaded, dict):
            # Same weights loaded another way (--size, --mean, --labels ...) would explain another
            # function than the record's prediction, under meta that still names the record's options.
            ours = self.adapter.info.get("load") or {}
            differ = [k for k in LOAD_KEYS if (loaded.get(k) or None) != (ours.get(k) or None)]
            if differ:
                raise XaiError(f"record {record.id} was made with {_options(loaded, differ)}, this run loads "
                               f"the model with {_options(ours, differ)}; pass the same options as the command "
                               "that made it, or omit -m to load the model as the records say")


LOAD_KEYS = ("arch", "classes", "labels", "size", "mean", "std", "arch_args")


def record_fit(record: Record) -> str | None:
    """How the record's image became its model's input (None: the record does not say). Records made
    before `--fit` existed squashed the whole image."""
    pre = record.meta.get("preprocessing")
    return (pre.get("fit") or "squash") if isinstance(pre, dict) else None


def _options(load: dict, keys: list[str]) -> str:
    def value(k, v):
        if k == "arch_args":
            return "'" + json.dumps(v) + "'"
        if k == "size":
            return "x".join(str(x) for x in v)
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    return " ".join(f"--{k} {value(k, load[k])}" if load.get(k) else f"no --{k}" for k in keys)


def record_for_image(item: ImageInput, adapter, image, sha256: str):
    """A new record for an image read as displayed: source provenance, the image, model meta."""
    rec = Record.new(item.id, {"path": str(item.path), "sha256": sha256,
                               "shape": list(image.shape), "dtype": str(image.dtype)})
    rec.meta["task"] = adapter.task
    rec.meta["model"] = adapter.meta()
    rec.meta["preprocessing"] = adapter.preprocessing.to_meta(image.shape[:2])
    rec.arrays["image"] = image  # `finish` drops it again under --no-image
    return rec


def iter_records(inputs: Inputs, session: ModelSession, *, max_pixels: int | None = None,
                 skip: Callable[[str, str | None], bool] | None = None,
                 skip_unreadable: bool = False) -> Iterator[tuple[Record, Any]]:
    """(record, image array) per input; images become new records, records are copied and checked.

    `inputs` already holds only this task's shard (`resolve(..., shard=)`). `skip(id, sha256)`
    (`sink.exists` under --skip-existing) drops inputs whose output is finished, before the
    image is decoded or the model loaded; a sink that cannot tell (a stream) is a usage error.
    `skip_unreadable` (--skip-unreadable) turns an image that cannot be read into a warning,
    so one bad scan in a cron inbox does not stop the others; nothing is written for it.
    """
    owner = getattr(skip, "__self__", None)
    if skip is not None and owner is not None and not getattr(owner, "can_skip", True):
        raise XaiUsageError("--skip-existing needs -o DIR/ (one record per file, with manifest.jsonl); "
                            "a stream or tar file has nothing to skip against")
    earlier = getattr(owner, "finished_by_others", None) if skip is not None else None
    for item in inputs:
        if isinstance(item, ImageInput):
            try:                                     # reading the image only: a model error is never skipped
                sha = source_sha256(item.path)
                if skip is not None and skip(item.id, sha):
                    log.info("%s: output exists, skipped", item.id)
                    continue
                found = earlier(item.id, sha) if earlier is not None else None
                image = None if found is not None else read_image(item.path, max_pixels)
            except XaiError as exc:
                if not skip_unreadable:
                    raise
                log.warning("skipped: %s", exc)
                continue
            if found is not None:        # e.g. `cam` after `attribute` on one inbox: add, keep its maps
                log.info("%s: adds to %s", item.id, found)
                yield _with_image(Record.from_bytes(found.read_bytes(), str(found)), session)
                continue
            rec = record_for_image(item, session.get(), image, sha)
        else:
            if skip is not None and skip(item.id, (item.meta.get("source") or {}).get("sha256")):
                log.info("%s: output exists, skipped", item.id)
                continue
            rec, image = _with_image(item, session)
        yield rec, image


def _with_image(record: Record, session: ModelSession) -> tuple[Record, Any]:
    session.get(record)
    image = record.arrays.get("image")
    if image is None:
        raise XaiError(f"record {record.id} holds no image (written with --no-image); re-run from the images")
    return record, image


def source_sha256(path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise XaiError(f"{path}: cannot read ({exc.strerror}); check the path and permissions") from None


def progress(iterable: Iterable, total: int | None, desc: str):
    """tqdm on stderr, only when a person watches (stderr is a terminal, not --quiet)."""
    if not settings.progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", file=__import__("sys").stderr, leave=False)


def finish(record: Record, command: str, params: dict[str, Any], seconds: float, device, keep_image: bool = True) -> Record:
    if not keep_image:
        record.arrays.pop("image", None)
    record.add_history(command, params, seconds, str(device) if device is not None else None)
    return record


def load_options(arch=None, classes=None, labels=None, size=None, mean=None, std=None, trust_pickle=False, fit=None,
                 arch_args=None):
    """LoadOptions from the shared model options (validated here, before any loading)."""
    from xaicli.models.loader import LoadOptions, parse_arch_args
    from xaicli.models.preprocess import parse_floats, parse_size

    return LoadOptions(arch=arch, classes=classes,
                       labels=[s.strip() for s in labels.split(",")] if labels else None,
                       size=parse_size(size), mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
                       fit=parse_fit(fit), trust_pickle=trust_pickle, arch_args=parse_arch_args(arch_args))


FITS = ("processor", "squash")


def parse_fit(text: str | None) -> str | None:
    if text is None:
        return None
    key = text.strip().lower()
    if key not in FITS:
        raise XaiUsageError(f"--fit {text!r}: use processor (the model's own image processor: resize, centre "
                            "crop) or squash (the whole image resized to the model size)")
    return key
