"""One flat row per record × map × target, aggregate rows, and JSON Lines / CSV output.

The rows are plain dicts with a fixed key order (COLUMNS, then any extra keys such as
per-layer randomisation columns in first-seen order), so JSON Lines, CSV and JSON
carry the same keys and the same numbers: CSV is written with the csv module from the
very dicts that JSON Lines dumps, floats in their shortest round-trip form.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from xaicli.errors import XaiError
from xaicli.io.record import GT_MASK, MASK, Record, per_target
from xaicli.metrics import axiomatic, focus, localisation, statistics

ID_COLUMNS = ["id", "source", "task", "map", "kind", "method", "layer", "baseline",
              "target", "target_index", "target_kind"]
STAT_COLUMNS = ["nonfinite", "mean", "std", "min", "max", "mean_abs", "sum", "pos_mass", "neg_mass",
                "sum_r", "sum_g", "sum_b", "mean_r", "mean_g", "mean_b", "sparseness", "complexity",
                "delta", "relative_delta", "completeness"]
REGION_METRICS = ["area_fraction", "focus_ratio", "focus_fraction", "pointing_game", "mass_accuracy",
                  "rank_accuracy", "topk_intersection", "roc_auc"]
GT_COLUMNS = [f"gt_{c}" for c in REGION_METRICS] + ["dice", "iou"]
FAITH_COLUMNS = ["deletion_auc", "insertion_auc"]
RAND_COLUMNS = ["rand_spearman_top", "rand_spearman_all", "rand_flag"]
COLUMNS = ID_COLUMNS + STAT_COLUMNS + REGION_METRICS + GT_COLUMNS
SUMMARY_STATS = ("mean", "std", "median", "min", "max")


@dataclass
class MapTarget:
    """One target of one map: what every metric (and the model-based evaluations) needs."""

    record: Record
    key: str
    info: dict[str, Any]
    t: int
    target: dict[str, Any]
    values: np.ndarray              # raw: (C,H,W) for attributions, (H,W) for CAMs
    smap: np.ndarray                # (H,W): channels summed, float64
    pred_mask: np.ndarray | None    # predicted region of this target (segmenters), bool (H,W)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.smap)))


def iter_map_targets(record: Record, patterns: list[str] | None = None) -> Iterator[MapTarget]:
    """Every (map, target) of the record, in record order; maps filtered by glob patterns.

    Shapes are the validated ones (io/schema.py): attributions (T,C,H,W) or tabular (T,F),
    CAMs (T,H,W); a (T,F) map has no pixels, so it gets no region."""
    keys = [k for k in record.map_keys() if not patterns or any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    if not record.map_keys():
        raise XaiError(f"record {record.id} holds no maps; add them with 'xai attribute' or 'xai cam' first")
    for key in keys:
        info = record.map_info(key)
        targets = info.get("targets") or []
        for t, values in enumerate(record.arrays[key]):
            target = targets[t] if targets else {}
            smap = statistics.spatial(values)
            region = predicted_region(record, target, t) if smap.ndim == 2 else None
            yield MapTarget(record, key, info, t, target, values, smap, region)


def predicted_region(record: Record, target: dict[str, Any], t: int) -> np.ndarray | None:
    """The segmenter's predicted mask for this target: 1 class → pred/mask ≠ 0; K classes → pred/mask == index."""
    if record.task != "segmentation" or MASK not in record.arrays:
        return None
    mask = record.arrays[MASK]
    index = target.get("index", t)
    labels = (record.meta.get("model") or {}).get("labels") or []
    logits = record.arrays.get("pred/logits")
    k = logits.shape[0] if logits is not None else len(labels)
    return mask != 0 if k <= 1 else mask == index


def ground_truth(record: Record, given: np.ndarray | None) -> np.ndarray | None:
    """The region to compare with: the `--mask` given for this record, else the record's gt/mask."""
    if given is not None:
        return np.asarray(given) != 0
    if GT_MASK in record.arrays:
        return np.asarray(record.arrays[GT_MASK]) != 0
    return None


def _region_metrics(mt: MapTarget, region: np.ndarray | None, top_k: float, prefix: str = "") -> dict[str, Any]:
    if region is None or mt.smap.ndim != 2:
        return {prefix + c: None for c in REGION_METRICS}
    if region.shape != mt.smap.shape:
        raise XaiError(f"record {mt.record.id}: mask is {region.shape[1]}x{region.shape[0]} but map {mt.key} is "
                       f"{mt.smap.shape[1]}x{mt.smap.shape[0]}; give a mask of the image's size")
    ok = mt.finite
    s = mt.smap
    return {
        prefix + "area_fraction": focus.area_fraction(region),
        prefix + "focus_ratio": focus.focus_ratio(s, region) if ok else None,
        prefix + "focus_fraction": focus.focus_fraction(s, region) if ok else None,
        prefix + "pointing_game": localisation.pointing_game(s, region),
        prefix + "mass_accuracy": localisation.mass_accuracy(s, region),
        prefix + "rank_accuracy": localisation.rank_accuracy(s, region),
        prefix + "topk_intersection": localisation.topk_intersection(s, region, top_k),
        prefix + "roc_auc": localisation.roc_auc(s, region),
    }


def map_row(mt: MapTarget, gt: np.ndarray | None = None, top_k: float = 0.05) -> dict[str, Any]:
    """All model-free metrics of one map target as one flat dict in COLUMNS order."""
    rec, info = mt.record, mt.info
    parts = mt.key.split("/")
    kind = info["kind"]
    row: dict[str, Any] = {
        "id": rec.id,
        "source": (rec.meta.get("source") or {}).get("path"),
        "task": rec.task,
        "map": mt.key,
        "kind": kind,
        "method": info.get("method") or (parts[1] if len(parts) > 1 else None),
        "layer": info.get("layer") if "layer" in info else (parts[2] if parts[0] == "cam" and len(parts) > 2 else None),
        "baseline": info.get("baseline") if "baseline" in info else (parts[2] if parts[0] == "attr" and len(parts) > 2 else None),
        "target": mt.target.get("label"),
        "target_index": mt.target.get("index", mt.t),
        "target_kind": mt.target.get("kind"),
    }
    row.update(statistics.value_statistics(mt.values))
    row["sparseness"] = statistics.gini(mt.smap) if mt.finite else None
    row["complexity"] = statistics.entropy(mt.smap) if mt.finite else None
    row["delta"] = per_target(info, "delta", mt.t)
    row["relative_delta"] = per_target(info, "relative_delta", mt.t)
    row["completeness"] = axiomatic.completeness(mt.values, info, mt.t)
    row.update(_region_metrics(mt, mt.pred_mask, top_k))
    row.update(_region_metrics(mt, gt, top_k, prefix="gt_"))
    both = mt.pred_mask is not None and gt is not None
    row["dice"] = focus.dice(mt.pred_mask, gt) if both else None
    row["iou"] = focus.iou(mt.pred_mask, gt) if both else None
    return row


# -- aggregation ---------------------------------------------------------------

def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std (n−1, as pandas), median, min, max of every numeric metric per (map, target),
    a target being its label, index and kind (a predicted mask and all pixels share label and index).

    Nulls are left out of each metric's aggregate; an aggregate with no values is null,
    std with fewer than two is null. `n` counts the rows of the group.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("map"), r.get("target"), r.get("target_index"), r.get("target_kind")), []).append(r)
    out = []
    for members in groups.values():
        for stat in SUMMARY_STATS:
            row: dict[str, Any] = {}
            cols = columns_of(members)
            for c in cols + [c for c in ("stat", "n") if c not in cols]:
                if c == "stat":
                    row[c] = stat
                elif c == "n":
                    row[c] = len(members)
                elif c in ID_COLUMNS:
                    vals = {m.get(c) for m in members}
                    row[c] = vals.pop() if len(vals) == 1 and c not in ("id", "source") else None
                else:
                    vals = np.array([m[c] for m in members if isinstance(m.get(c), (int, float))
                                     and not isinstance(m.get(c), bool)], dtype=np.float64)
                    row[c] = _aggregate(stat, vals)
            out.append(row)
    return out


def _aggregate(stat: str, v: np.ndarray) -> float | None:
    if v.size == 0 or (stat == "std" and v.size < 2):
        return None
    f = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max,
         "std": lambda x: np.std(x, ddof=1)}[stat]
    return float(f(v))


# -- output ----------------------------------------------------------------------

def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The union of keys in first-seen order (COLUMNS first), for the CSV header."""
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def strict(v: Any) -> Any:
    """JSON-safe scalar: NaN/inf → None, numpy scalars → Python."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def json_line(row: dict[str, Any]) -> str:
    return json.dumps({k: strict(v) for k, v in row.items()}, allow_nan=False)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = columns_of(rows)
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if strict(v) is None else strict(v)) for k, v in r.items()})
    return buf.getvalue()


def json_document(rows: list[dict[str, Any]]) -> str:
    return json.dumps([{k: strict(v) for k, v in r.items()} for r in rows], allow_nan=False, indent=1) + "\n"


# -- the paper-style table ---------------------------------------------------------------

def markdown_table(rows: list[dict[str, Any]], keys: list[str], direction) -> str:
    """One row per map (method × baseline or layer), one column per metric key that has a
    number: mean ± std (n−1) over every record and target of the map, the better direction
    (`direction(key)`: ↑, ↓ or "") in the header. Ready to paste under an evaluation section."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["map"], []).append(r)
    cols = [k for k in keys if any(_number(r.get(k)) for r in rows)]
    head = ["method", "map", "n"] + [f"{k} {direction(k)}".rstrip() for k in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 3 + [" ---: "] * len(cols)) + "|"]
    for key, members in groups.items():
        cells = [str(members[0].get("method") or "-"), f"`{key}`", str(len(members))]
        for k in cols:
            v = np.array([m[k] for m in members if _number(m.get(k))], dtype=np.float64)
            if v.size == 0:
                cells.append("–")
            elif v.size == 1:
                cells.append(f"{v[0]:.3g}")
            else:
                cells.append(f"{v.mean():.3g} ± {v.std(ddof=1):.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
