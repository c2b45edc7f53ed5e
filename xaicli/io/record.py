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
from xaicli.io.ids import safe_id

SCHEMA = "xai.record/1"
SCHEMA_NAME = "xai.record"
SCHEMA_VERSION = 1

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
        """Store one explanation raw (never normalised) with its description."""
        if not key.startswith(MAP_PREFIXES):
            raise ValueError(f"map key must start with one of {MAP_PREFIXES}: {key}")
        self.arrays[key] = np.ascontiguousarray(values)
        self.meta.setdefault("maps", {})[key] = info

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
        if not data.startswith(NPZ_MAGIC):   # np.load would read .npy or pickle bytes as something else
            raise XaiError(f"{name}: not an .npz record (not a zip archive); pass records written by xai")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                first = min((info.header_offset for info in zf.infolist()), default=0)
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise XaiError(f"{name}: not a readable .npz record ({exc}); pass records written by xai") from None
        except ValueError as exc:
            raise XaiError(f"{name}: record holds a pickled object ({exc}); xai records never do, re-create it with xai") from None
        if "meta" not in arrays:
            raise XaiError(f"{name}: .npz has no 'meta' entry, so it is not an xai record; pass records written by xai")
        try:
            meta = json.loads(str(arrays.pop("meta")[()]))
        except (ValueError, TypeError) as exc:
            raise XaiError(f"{name}: record meta is not valid JSON ({exc}); re-create the record with xai") from None
        if first:   # a zip finds its members from the end: bytes before them are other records
            raise XaiError(f"{name}: holds {first} bytes before its last .npz (records joined with cat?); "
                           "send several records as a tar stream, or pass the .npz files as arguments")
        check_schema(meta, name)
        check_meta(meta, name)
        return cls(meta=meta, arrays=arrays)


def check_schema(meta: Any, name: str) -> None:
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if schema == SCHEMA:
        return
    if isinstance(schema, str) and schema.startswith(SCHEMA_NAME + "/"):
        raise XaiError(
            f"{name}: record schema {schema!r} is not supported (this xai reads {SCHEMA!r}); "
            "use the xai version that wrote it or upgrade xai"
        )
    raise XaiError(f"{name}: not an xai record (schema {schema!r}, expected {SCHEMA!r}); pass records written by xai")


def check_meta(meta: dict, name: str) -> None:
    """The fields commands rely on. The id becomes a file name, so it must be one that
    xai would make: no separators, no leading dot (a record could otherwise write outside -o)."""
    rid = meta.get("id")
    if not isinstance(rid, str) or safe_id(rid) != rid:
        raise XaiError(f"{name}: record id {rid!r} is not a file-name-safe id ([A-Za-z0-9._+-]); "
                       "re-create the record with xai")
    for key, kind in (("source", dict), ("maps", dict), ("history", list)):
        if key in meta and not isinstance(meta[key], kind):
            raise XaiError(f"{name}: record meta {key!r} is not a JSON {'object' if kind is dict else 'array'}; "
                           "re-create the record with xai")
    if not all(isinstance(v, dict) for v in meta.get("maps", {}).values()):
        raise XaiError(f"{name}: record meta 'maps' holds a non-object entry; re-create the record with xai")


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
