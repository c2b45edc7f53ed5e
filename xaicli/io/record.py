"""The record: one image's evidence in one `.npz` (see README, "Record format").

`meta` is a 0-d string array holding JSON; every other member is a plain numeric
array. Explanations live under their own keys (`attr/...`, `cam/...`) and are
described in `meta["maps"][key]`, so one record can hold many methods.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from xaicli.errors import XaiError
from xaicli.io.schema import FIX, WRITTEN, validate

SCHEMA = WRITTEN              # what this xai writes; it reads every xai.record/1.x (io/schema.py)

# Well-known array keys.
IMAGE = "image"
PROBS = "pred/probs"          # classification (K,)
LOGITS = "pred/logits"        # classification (K,) or segmentation (K,H,W)
SEG_PROBS = "pred/probs"      # segmentation (K,H,W) at image size
MASK = "pred/mask"            # segmentation (H,W) uint8 class index (0 = background for 1 class)
GT_MASK = "gt/mask"           # optional ground truth (H,W)
NPZ_MAGIC = b"PK\x03\x04"       # a zip's first local header
MAP_PREFIXES = ("attr/", "cam/")


@dataclass
class Record:
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def new(cls, record_id: str, source: dict[str, Any] | None = None) -> "Record":
        meta = {"schema": SCHEMA, "id": record_id, "source": source or {}, "maps": {}, "history": []}
        return cls(meta=meta)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    @property
    def image(self) -> np.ndarray | None:
        return self.arrays.get(IMAGE)

    # -- explanations ---------------------------------------------------------
    def add_map(self, key: str, values: np.ndarray, info: dict[str, Any]) -> None:
        """Store one explanation raw (never normalised) with its description; the description's
        `kind` is the key's (attr/ → attribution, cam/ → cam), which readers require."""
        if not key.startswith(MAP_PREFIXES):
            raise ValueError(f"map key must start with one of {MAP_PREFIXES}: {key}")
        kind = "attribution" if key.startswith("attr/") else "cam"
        if info.get("kind", kind) != kind:
            raise ValueError(f"map {key}: kind {info['kind']!r}, expected {kind!r}")
        self.arrays[key] = np.ascontiguousarray(values)
        self.meta.setdefault("maps", {})[key] = {"kind": kind, **info}

    def map_keys(self) -> list[str]:
        return [k for k in self.arrays if k.startswith(MAP_PREFIXES)]

    def map_info(self, key: str) -> dict[str, Any]:
        return self.meta.get("maps", {}).get(key, {})

    def add_history(self, command: str, params: dict[str, Any], seconds: float, device: str | None = None) -> None:
        from xaicli import __version__

        self.meta.setdefault("history", []).append(
            {"command": command, "version": __version__, "parameters": params,
             "seconds": round(float(seconds), 4), "device": device}
        )

    def copy(self) -> "Record":
        return Record(copy.deepcopy(self.meta), dict(self.arrays))

    # -- serialisation --------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        payload = {"meta": np.array(json.dumps(_finite(self.meta), allow_nan=False, default=_json_default))}
        for key, arr in self.arrays.items():
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise ValueError(f"record {self.id}: array {key} has dtype object; records hold no pickles")
            payload[key] = arr
        np.savez(buf, **payload)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<record>") -> "Record":
        """Parse and validate (io/schema.py): every error is one line naming `name` and the field."""
        name = printable(name)
        if not data.startswith(NPZ_MAGIC):   # np.load would read .npy or pickle bytes as something else
            raise XaiError(f"{name}: not an .npz record (not a zip archive); pass records written by xai")
        arrays = _load_arrays(data, name)
        if "meta" not in arrays:
            raise XaiError(f"{name}: .npz has no 'meta' entry, so it is not an xai record; pass records written by xai")
        meta = _parse_meta(arrays.pop("meta"), name)
        validate(meta, arrays, name)
        return cls(meta=meta, arrays=arrays)


def _load_arrays(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Every member of the .npz as a native-byte-order array (torch refuses others)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            first = min((info.header_offset for info in zf.infolist()), default=0)
        arrays = {}
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key in npz.files:
                arr = npz[key]
                if not isinstance(arr, np.ndarray):     # a zip member that is no .npy
                    raise XaiError(f"{name}: member {printable(key)!r} is not a .npy array; {FIX}")
                arrays[key] = arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise XaiError(f"{name}: not a readable .npz record ({printable(str(exc))}); pass records written by xai") from None
    except (ValueError, MemoryError, OverflowError, SyntaxError) as exc:
        if "allow_pickle" in str(exc):
            raise XaiError(f"{name}: record holds a pickled object; xai records never do, {FIX}") from None
        raise XaiError(f"{name}: an array of the record is unreadable ({printable(str(exc))[:120]}); {FIX}") from None
    if first:   # a zip finds its members from the end: bytes before them are other records
        raise XaiError(f"{name}: holds {first} bytes before its last .npz (records joined with cat?); "
                       "send several records as a tar stream, or pass the .npz files as arguments")
    return arrays


def _parse_meta(arr: np.ndarray, name: str) -> Any:
    """The JSON of a 0-d string array (NaN and Infinity parse here; the validator names them)."""
    if arr.shape != () or arr.dtype.kind != "U":
        raise XaiError(f"{name}: record meta is not a 0-d string array (dtype {arr.dtype.name}, shape "
                       f"{arr.shape}); {FIX}")
    try:
        return json.loads(str(arr[()]))
    except (ValueError, RecursionError) as exc:
        raise XaiError(f"{name}: record meta is not valid JSON ({printable(str(exc))[:120]}); {FIX}") from None


def printable(text: str) -> str:
    """A name for a one-line message: control characters (a newline in a tar member's name) escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def per_target(info: dict[str, Any], name: str, t: int) -> float | None:
    """Target t's number in a map's meta: a list has one per target (null for a non-finite
    number), a single number belongs to target 0."""
    v = info.get(name)
    if isinstance(v, list):
        v = v[t] if t < len(v) else None
    elif t != 0:
        v = None
    return None if v is None else float(v)


def iter_maps(record: Record) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    for key in record.map_keys():
        yield key, record.arrays[key], record.map_info(key)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """NaN and infinities become JSON null: strict JSON that jq and other tools read."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj
