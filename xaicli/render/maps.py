"""The maps of a record, one view per (map, target), with the words that describe them.

Shapes follow the README's record format:

- `attr/<method>/<baseline>`: (T,C,H,W) → each target's view is (C,H,W); (T,H,W) is
  taken as already reduced over channels; (T,F) is a tabular attribution (1-D views).
- `cam/<method>/<layer>`: (T,H,W) → (H,W) non-negative magnitudes; (H,W) is one target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaicli.errors import XaiError
from xaicli.io.record import Record
from xaicli.render.normalise import channel_sum


@dataclass(frozen=True)
class MapView:
    key: str                      # the record member, e.g. "cam/gradcam++/layer4"
    kind: str                     # "attribution" | "cam"
    method: str
    where: str                    # layer (CAMs, layer attributions) or baseline (attributions)
    target: int                   # position on the map's T axis
    target_label: str
    target_id: tuple              # identity of the target across maps (grid rows)
    values: np.ndarray            # (C,H,W), (H,W) or (F,)
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    feature_names: tuple[str, ...] | None = None
    layer: str | None = None      # the grid's facets: a CAM's layer, an attribution's baseline
    baseline: str | None = None
    target_spec: dict[str, Any] = field(default_factory=dict, compare=False)   # as stored in meta

    @property
    def is_1d(self) -> bool:
        return self.values.ndim == 1

    @property
    def channels(self) -> int:
        return self.values.shape[0] if self.values.ndim == 3 else 1

    def plane(self) -> np.ndarray:
        """The 2-D map: attributions summed over channels (sign kept), CAMs as stored."""
        return channel_sum(self.values)

    def title_lines(self) -> list[str]:
        """Method and layer/baseline, target, and for IG the steps and convergence delta."""
        head = self.method
        if self.kind == "cam" or self.info.get("layer"):
            head += f" · {self.where}" if self.where else ""
        elif self.where:
            head += f" · baseline {self.where}"
        lines = [head, f"target {self.target_label}"]
        extra = []
        if self.info.get("steps") is not None:
            extra.append(f"steps {self.info['steps']}")
        delta = _at(self.info.get("delta"), self.target)
        if delta is not None:
            rel = _at(self.info.get("relative_delta"), self.target)    # a segmenter's δ of -20 says little alone
            extra.append(f"δ {delta:.2g}" + (f" ({rel * 100:.2g}% of ΔF)" if rel is not None else ""))
        if extra:
            lines.append(", ".join(extra))
        return lines

    def name_parts(self) -> list[str]:
        """File-name parts for --split: method, layer or baseline, target."""
        return [self.method, self.where or "map", self.target_label]


def views(record: Record) -> list[MapView]:
    """Every (map, target) of the record in storage order."""
    out: list[MapView] = []
    for key in record.map_keys():
        out.extend(_views_of(record, key))
    return out


def _views_of(record: Record, key: str) -> list[MapView]:
    arr = np.asarray(record.arrays[key])
    info = record.map_info(key)
    parts = key.split("/")
    kind = "cam" if parts[0] == "cam" else "attribution"
    method = str(info.get("method") or (parts[1] if len(parts) > 1 else kind))
    if kind == "cam" or info.get("layer"):
        where = info.get("layer") or (parts[2] if len(parts) > 2 else "")
        layer, baseline = where or None, (info.get("baseline") if kind != "cam" else None)
    else:
        where = info.get("baseline") or (parts[2] if len(parts) > 2 else "")
        layer, baseline = None, where or None
    if not np.issubdtype(arr.dtype, np.number):
        raise XaiError(f"record {record.id}: map {key} has dtype {arr.dtype}; maps are float arrays")
    if kind == "attribution" and arr.ndim in (2, 3, 4):
        per_target = list(arr)                      # (C,H,W), (H,W) or (F,)
    elif kind == "attribution" and arr.ndim == 1:
        per_target = [arr]
    elif kind == "cam" and arr.ndim == 3:
        per_target = list(arr)
    elif kind == "cam" and arr.ndim == 2:
        per_target = [arr]
    else:
        expected = "(T,C,H,W) or (T,F)" if kind == "attribution" else "(T,H,W)"
        raise XaiError(f"record {record.id}: map {key} has shape {tuple(arr.shape)}, expected {expected} "
                       "(see README, Record format); re-create it with xai")
    targets = info.get("targets") or []
    features = _feature_names(record, info)
    out, seen = [], set()
    for t, values in enumerate(per_target):
        spec = targets[t] if t < len(targets) and isinstance(targets[t], dict) else {}
        label = spec.get("label")
        index = spec.get("index")
        name = str(label) if label is not None else (str(index) if index is not None else f"t{t}")
        tid = (str(label) if label is not None else None, index) if (label is not None or index is not None) \
            else ("#", t)
        if tid in seen:             # two targets alike in label and index: still two grid slots
            tid = (*tid, t)
        seen.add(tid)
        out.append(MapView(key, kind, method, str(where), t, name, tid,
                           np.asarray(values, dtype=np.float32), info, features,
                           None if layer is None else str(layer), None if baseline is None else str(baseline), spec))
    return out


def _feature_names(record: Record, info: dict[str, Any]) -> tuple[str, ...] | None:
    model = record.meta.get("model") or {}
    for source in (info, model, record.meta):
        names = source.get("feature_names") or source.get("features")
        if isinstance(names, list) and names:
            return tuple(str(n) for n in names)
    return None


def _at(values: Any, i: int) -> float | None:
    """values[i] as a finite float, or None (delta lists hold nulls for non-finite numbers)."""
    if isinstance(values, (int, float)):
        return float(values) if i == 0 else None
    if isinstance(values, list) and i < len(values) and isinstance(values[i], (int, float)):
        v = float(values[i])
        return v if np.isfinite(v) else None
    return None
