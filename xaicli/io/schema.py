"""Validate a record once, as it is read: its version, its meta against the published JSON
Schema (`record.schema.json`, by jsonschema), its arrays against the same file's table of
dtypes and shapes, and the few facts that tie arrays and meta together (sizes, counts).

Every command reads records through `Record.from_bytes`, which calls `validate`, so code
downstream can trust types and shapes. Each failure is one `XaiError` line naming the
record, the field (a JSON path in meta, or the array's key) and what was expected.
"""

from __future__ import annotations

import functools
import json
import math
import re
from importlib import resources
from typing import Any

import numpy as np

from xaicli.errors import XaiError

NAME = "xai.record"
MAJOR = 1
WRITTEN = f"{NAME}/{MAJOR}"        # what this xai writes: version 1.0
_VERSION = re.compile(r"^xai\.record/(\d+)(?:\.(\d+))?$")
FIX = "re-create the record with xai"


@functools.lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("xaicli.io").joinpath("record.schema.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _validators():
    """(meta validator, arrays validator): jsonschema is imported on the first record only."""
    from jsonschema import Draft202012Validator

    root = schema()
    arrays = {"$schema": root["$schema"], "$defs": root["$defs"], "$ref": "#/$defs/arrays"}
    return Draft202012Validator(root), Draft202012Validator(arrays)


def check_version(meta: Any, name: str) -> None:
    """Major version 1, any minor: a minor version only adds fields, which readers ignore."""
    if not isinstance(meta, dict):
        raise XaiError(f"{name}: not an xai record (meta is {_kind(meta)}, expected an object); "
                       "pass records written by xai")
    tag = meta.get("schema")
    if not (isinstance(tag, str) and tag.startswith(NAME + "/")):
        raise XaiError(f"{name}: not an xai record (meta $.schema is {_short(tag)}, expected {WRITTEN!r} or "
                       f"'{WRITTEN}.N'); pass records written by xai")
    m = _VERSION.match(tag)
    if not m or int(m[1]) != MAJOR:
        raise XaiError(f"{name}: meta $.schema: record version {_short(tag)} is not supported (this xai reads "
                       f"{WRITTEN} and its minor versions {WRITTEN}.N); use the xai version that wrote it or "
                       "upgrade xai")


def validate(meta: Any, arrays: dict[str, np.ndarray], name: str) -> None:
    """Raise one XaiError line for the first problem found; return None for a sound record."""
    from jsonschema.exceptions import best_match

    check_version(meta, name)
    meta_validator, arrays_validator = _validators()
    error = best_match(meta_validator.iter_errors(meta))
    if error is not None:
        raise XaiError(f"{name}: meta {_json_path(error.absolute_path, error)}: {_expected(error)}; {FIX}")
    found = _unsound(meta)
    if found is not None:
        raise XaiError(f"{name}: meta {_json_path(found[0])}: {found[1]}; {FIX}")
    described = {k: {"dtype": a.dtype.name, "shape": list(a.shape)} for k, a in arrays.items()}
    error = best_match(arrays_validator.iter_errors(described))
    if error is not None:
        key, *rest = [*error.absolute_path, *_missing(error)]
        what = "".join(f"[{p}]" if isinstance(p, int) else f" {p}" for p in rest)
        raise XaiError(f"{name}: array {_short(key)}{what}: {_expected(error)}; {FIX}")
    _check_together(meta, arrays, name)


def _check_together(meta: dict, arrays: dict[str, np.ndarray], name: str) -> None:
    """What JSON Schema cannot say: every map has its entry, sizes agree, counts agree."""
    def fail(what: str) -> XaiError:
        return XaiError(f"{name}: {what}; {FIX}")

    maps = meta.get("maps", {})
    for key in arrays:
        if key.startswith(("attr/", "cam/")) and key not in maps:
            raise fail(f"array {_short(key)} has no entry in meta $.maps")
    for key in maps:
        if key not in arrays:
            raise fail(f"meta $.maps[{_short(key)}] describes no array (no member {_short(key)})")

    # H,W: the image's, and the same in every array that has them
    sizes = [(key, _hw(key, a)) for key, a in arrays.items()]
    sizes = [(key, hw) for key, hw in sizes if hw is not None]
    if sizes:
        first, hw = sizes[0]
        for key, other in sizes[1:]:
            if other != hw:
                raise fail(f"array {_short(key)} is {other[0]}x{other[1]} (HxW) but {_short(first)} is "
                           f"{hw[0]}x{hw[1]}: every array of a record has the image's size")

    # K: the classes, from the prediction's first axis and the model's labels
    task = meta.get("task")
    ks = []
    for key in ("pred/logits", "pred/probs"):
        if key in arrays:
            a = arrays[key]
            want = {"classification": 1, "segmentation": 3}.get(task)
            if want is not None and a.ndim != want:
                raise fail(f"array {_short(key)} has shape {tuple(a.shape)}, expected "
                           f"{'(K,)' if want == 1 else '(K,H,W)'} for a {task} record")
            ks.append((f"array {_short(key)}", a.shape[0]))
    if "pred/mask" in arrays and task == "classification":
        raise fail("array 'pred/mask' in a classification record: masks are for segmenters")
    labels = (meta.get("model") or {}).get("labels")
    if labels is not None:
        ks.append(("meta $.model.labels", len(labels)))
    for (key, k), (other, k2) in zip(ks, ks[1:]):
        if k != k2:
            raise fail(f"{key} has {k} classes (K) but {other} has {k2}")
    classes = ks[0][1] if ks else None

    # T: one target per map on the first axis, each index a class of the model
    for key, info in maps.items():
        targets = info.get("targets")
        if targets is None:
            continue
        t = arrays[key].shape[0]
        if len(targets) != t:
            raise fail(f"meta $.maps[{_short(key)}].targets has {len(targets)} entries but the array holds {t} "
                       "maps (its first axis)")
        for i, target in enumerate(targets):
            index = target.get("index")
            if classes is not None and index is not None and index >= classes:
                raise fail(f"meta $.maps[{_short(key)}].targets[{i}].index is {index}, expected a class "
                           f"index below {classes}")


def _hw(key: str, a: np.ndarray) -> tuple[int, int] | None:
    if key == "image" or key in ("pred/mask", "gt/mask"):
        return tuple(a.shape[:2])
    if key in ("pred/logits", "pred/probs") or key.startswith("cam/"):
        return tuple(a.shape[1:3]) if a.ndim == 3 else None
    if key.startswith("attr/"):
        return tuple(a.shape[2:]) if a.ndim == 4 else None
    return None


# -- one line per error ---------------------------------------------------------------

MAX_DEPTH = 64      # xai's own meta nests 5 deep; the writers and readers of meta recurse


def _unsound(meta: Any) -> tuple[tuple, str] | None:
    """(path, what was expected) of the first NaN or infinity (Python's json reads them; JSON
    has none) or of a value nested deeper than MAX_DEPTH. A loop, not recursion."""
    stack = [((), meta)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, f"expected a finite number or null (strict JSON: xai writes null), found {_short(value)}"
        if len(path) > MAX_DEPTH:
            return path, f"expected at most {MAX_DEPTH} levels of nesting, found more"
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend(reversed([((*path, key), child) for key, child in items]))
    return None


def _json_path(path, error=None) -> str:
    """`$.maps["attr/x"].targets[0]`; for a missing field, the path of that field."""
    parts = [*path, *(_missing(error) if error is not None else [])]
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            out += f".{p}"
        else:
            out += f"[{_short(p)}]"
    return out


def _missing(error) -> list[str]:
    """[the field a `required` or `dependentRequired` error misses], else []."""
    if error.validator == "required":
        return [p for p in error.validator_value if p not in error.instance][:1]
    if error.validator == "dependentRequired":
        return [d for p, deps in error.validator_value.items() if p in error.instance
                for d in deps if d not in error.instance][:1]
    return []


def _expected(error) -> str:
    """What the schema wanted and what was found, in words."""
    kw, value, found = error.validator, error.validator_value, error.instance
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if kw == "required":
        return "missing (a required field)"
    if kw == "dependentRequired":
        having = [p for p, deps in value.items() if p in found and any(d not in found for d in deps)][:1]
        return f"missing, which {_short(having[0]) if having else 'another member'} needs"
    if kw == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"expected {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}, found {_kind(found)}"
    if kw in ("anyOf", "oneOf") and described:
        return f"expected {described}, found {_short(found)}"
    if kw == "enum":
        wanted = described or ", ".join(json.dumps(v) for v in value)
        return f"expected {'' if described else 'one of '}{wanted}, found {_short(found)}"
    if kw == "const":
        return f"expected {json.dumps(value)}, found {_short(found)}"
    if kw in ("pattern", "propertyNames"):
        return f"expected {described or 'a string matching ' + str(value)}, found {_short(found)}"
    if kw in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kw]
        return f"expected a number {sign} {value}, found {_short(found)}"
    if kw in ("minItems", "maxItems"):
        size = described or f"{'at least' if kw == 'minItems' else 'at most'} {value} items"
        return f"expected {size}, found {_short(found)}"
    return f"{error.message[:120]}"


_TYPE_WORDS = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return f"the {'string' if isinstance(value, str) else 'number'} {_short(value)}"


def _short(value: Any, limit: int = 48) -> str:
    """A value as JSON, on one line and short (names in messages may hold newlines)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        text = "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    else:
        try:
            text = json.dumps(value, ensure_ascii=True)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
