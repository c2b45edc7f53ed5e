"""The data of a report page: one row per record (prediction, figures, metrics per map), the map
and metric columns, and per model the summary and provenance of its records.

Metrics are `xai stats`'s own (`xaicli.metrics.report.map_row`), so the page shows the
numbers `xai stats` prints; rows of `--stats FILE` (made by `xai stats`, e.g. with -m for
deletion AUC or --mask for ground-truth metrics) add columns and win over computed values.
The summary is `report.summarise`, the numbers of `xai stats --summary`. Map columns are
(map key, target position): a classifier's top-1 target is another class on each record,
but the same column.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaicli import __version__
from xaicli.errors import XaiError
from xaicli.io.record import MASK, PROBS, Record
from xaicli.metrics import report
from xaicli.report.figures import RecordFigures
from xaicli.report.stats_input import StatsRows, join_key

_REGION = [m for m in report.REGION_METRICS if m != "area_fraction"]   # area: the prediction column has it
MAIN = _REGION + ["sparseness", "complexity", "relative_delta"] + [f"gt_{m}" for m in _REGION] + ["dice", "iou"]
SHOWN = ("focus_ratio", "pointing_game", "relative_delta", "gt_focus_ratio", "dice", "deletion_auc",
         "insertion_auc", "rand_flag")          # shown until the reader picks others
LABELS = {"roc_auc": "ROC-AUC", "gt_roc_auc": "gt ROC-AUC", "relative_delta": "relative δ", "delta": "δ",
          "iou": "IoU", "dice": "Dice", "topk_intersection": "top-k intersection"}
MAX_PROVENANCE = 20         # distinct parameter sets listed per command and model
log = logging.getLogger("xai")


@dataclass
class _Column:
    key: str
    t: int
    kind: str
    method: str
    where: str
    labels: dict[str, None] = field(default_factory=dict)


@dataclass
class _Row:
    page: dict[str, Any]                       # what the page gets, less the map cells
    group: tuple
    cells: dict[tuple[str, int], dict[str, Any]]
    metrics: list[dict[str, Any]]              # map_row dicts (id columns + kept numbers), for the summary
    steps: list[tuple[str, str, str]]
    preprocessing: str


class Table:
    """Collects records one by one (a record id seen again replaces its row) and gives the page data."""

    def __init__(self, extra: StatsRows | None = None):
        self.extra = extra or StatsRows()
        self.rows: dict[str, _Row] = {}
        self.columns: dict[tuple[str, int], _Column] = {}
        self.models: dict[tuple, dict[str, Any]] = {}

    def add(self, record: Record, figs: RecordFigures) -> None:
        model = record.meta.get("model") or {}           # types validated as the record was read
        group = (model.get("spec"), model.get("sha256"))
        self.models.setdefault(group, model)
        cells: dict[tuple[str, int], dict[str, Any]] = {}
        metric_rows = []
        for (key, t), ref in figs.maps.items():
            self._column(record, key, t)
            cells[(key, t)] = ref.to_json()
        gt = report.ground_truth(record, None)
        for key in record.map_keys():
            for row, problem in _metric_rows(record, key, gt):
                if problem is not None:
                    cells.setdefault((key, 0), {})["me"] = problem
                    continue
                t = row.pop("_t")
                column = self._column(record, key, t)
                if row.get("target") is not None:
                    column.labels[str(row["target"])] = None
                row.update(self.extra.take(join_key(row)))
                cell = cells.setdefault((key, t), {})
                cell["lab"] = row.get("target")
                cell["_v"] = row
                metric_rows.append(row)
        history = record.meta.get("history") or []
        steps = [(str(h.get("command")), str(h.get("version")), json.dumps(h.get("parameters"), sort_keys=True))
                 for h in history]
        page = {"id": record.id, "src": (record.meta.get("source") or {}).get("path"), **prediction(record),
                "img": figs.panel.to_json()}
        self.rows[record.id] = _Row(page, group, cells, metric_rows, steps,
                                    json.dumps(record.meta.get("preprocessing"), sort_keys=True))

    def _column(self, record: Record, key: str, t: int) -> _Column:
        if (key, t) not in self.columns:
            info = record.map_info(key)
            parts = key.split("/")
            kind = "cam" if parts[0] == "cam" else "attribution"
            method = str(info.get("method") or (parts[1] if len(parts) > 1 else key))
            if kind == "cam" or info.get("layer"):
                where = str(info.get("layer") or "/".join(parts[2:]))
            else:
                where = "baseline " + str(info.get("baseline") or "/".join(parts[2:]))
            self.columns[(key, t)] = _Column(key, t, kind, method, where)
        return self.columns[(key, t)]

    # -- the page's data ------------------------------------------------------------------

    def data(self, title: str, thumb_size: int) -> dict[str, Any]:
        if self.extra.unused:
            log.warning("--stats: %d row(s) name a record, map or target that is not in the input; left out",
                        self.extra.unused)
        present = {k for r in self.rows.values() for m in r.metrics for k, v in m.items() if _is_number(v)}
        metrics = [k for k in dict.fromkeys(MAIN + list(self.extra.columns)) if k in present]
        groups = list(dict.fromkeys(r.group for r in self.rows.values()))
        names = _group_names(groups)
        columns = list(self.columns.values())
        rows = []
        for r in self.rows.values():
            cells = []
            for c in columns:
                cell = dict(r.cells.get((c.key, c.t)) or {}) or None
                if cell is not None:
                    values = cell.pop("_v", {})
                    cell["v"] = [_short(values.get(k)) for k in metrics]
                cells.append(cell)
            rows.append({**r.page, "g": groups.index(r.group), "m": cells})
        return {
            "title": title, "xai": __version__, "thumb": thumb_size,
            "metrics": [{"key": k, "label": LABELS.get(k, k.replace("_", " ")), "shown": k in SHOWN}
                        for k in metrics],
            "maps": [{"id": f"{c.key}#{c.t}", "key": c.key, "kind": c.kind, "method": c.method, "where": c.where,
                      "target": _target_label(c), "mixed": len(c.labels) > 1} for c in columns],
            "groups": [self._group(g, names[i], metrics) for i, g in enumerate(groups)],
            "rows": rows,
        }

    def _group(self, group: tuple, name: str, metrics: list[str]) -> dict[str, Any]:
        members = [r for r in self.rows.values() if r.group == group]
        steps: Counter = Counter(s for r in members for s in dict.fromkeys(r.steps))
        by_command: dict[str, list] = {}
        for (command, version, params), n in sorted(steps.items(), key=lambda kv: -kv[1]):
            by_command.setdefault(command, []).append({"version": version, "parameters": json.loads(params),
                                                       "records": n})
        model = self.models[group]
        return {
            "name": name, "records": len(members),
            "model": {k: model.get(k) for k in ("spec", "sha256", "arch", "format", "labels") if model.get(k)},
            "versions": sorted({v for (_, v, _) in steps}),
            "steps": [{"command": c, "runs": runs[:MAX_PROVENANCE], "more": max(0, len(runs) - MAX_PROVENANCE)}
                      for c, runs in by_command.items()],
            "preprocessing": [json.loads(p) for p in dict.fromkeys(r.preprocessing for r in members)
                              if p != "null"][:MAX_PROVENANCE],
            "summary": _summary([m for r in members for m in r.metrics], metrics),
        }


def _metric_rows(record: Record, key: str, gt: np.ndarray | None):
    """(map_row with its target position under '_t', None) per target of `key`, or (None, why)."""
    try:
        found = []
        for mt in report.iter_map_targets(record, [glob.escape(key)]):
            row = report.map_row(mt, gt)
            kept = {k: v for k, v in row.items() if k in report.ID_COLUMNS or (k in MAIN and _is_number(v))}
            found.append(({**kept, "_t": mt.t}, None))
        return found
    except XaiError as exc:
        log.warning("record %s: no metrics for %s: %s", record.id, key, exc)
        return [(None, str(exc))]


def _summary(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Per map × target, mean and std of each metric: `xai stats --summary`'s mean and std rows."""
    out = []
    agg = report.summarise(rows)
    size = len(report.SUMMARY_STATS)
    for i in range(0, len(agg), size):        # one block of SUMMARY_STATS rows per map × target
        by_stat = {r["stat"]: r for r in agg[i:i + size]}
        mean, std = by_stat["mean"], by_stat["std"]
        out.append({"map": mean["map"], "target": mean.get("target"), "n": mean["n"],
                    "v": [[_short(mean.get(k)), _short(std.get(k))] for k in metrics]})
    return out


def prediction(record: Record) -> dict[str, Any]:
    """cls: the predicted class (classifier) or the classes of the predicted region (segmenter);
    p: the confidence, or the predicted area as a fraction of the image; pk: which of the two."""
    pred = record.meta.get("prediction") or {}          # types validated as the record was read
    probs = record.arrays.get(PROBS)
    classifier = record.task == "classification" or (record.task is None and probs is not None and probs.ndim == 1)
    if classifier:
        label, conf = pred.get("label"), pred.get("confidence")
        if (label is None or conf is None) and probs is not None and probs.ndim == 1 and probs.size:
            i = int(np.argmax(probs))
            labels = (record.meta.get("model") or {}).get("labels") or []
            label, conf = (labels[i] if i < len(labels) else str(i)), float(probs[i])
        return {"cls": None if label is None else str(label), "p": _short(conf), "pk": "confidence"}
    fractions = {k: float(v) for k, v in (pred.get("area_fraction") or {}).items() if v is not None}
    if MASK in record.arrays:
        area = float(np.mean(np.asarray(record.arrays[MASK]) != 0))
    elif len(fractions) == 1:
        area = next(iter(fractions.values()))
    else:                                 # several classes: class 0 is the background (README, targets)
        area = sum(list(fractions.values())[1:]) if fractions else None
    names = [k for i, (k, v) in enumerate(fractions.items()) if v > 0 and (i > 0 or len(fractions) == 1)]
    return {"cls": ", ".join(names) or None, "p": _short(area), "pk": "area"}


def _group_names(groups: list[tuple]) -> list[str]:
    """A model's spec names its group; a spec shared by different weights gets the weights' sha256 too."""
    specs = Counter(spec for spec, _ in groups)
    names = []
    for spec, sha in groups:
        name = str(spec) if spec else "unknown model"
        if specs[spec] > 1:
            name += f" (weights {str(sha)[:12]})" if sha else " (no weights hash)"
        names.append(name)
    return names


def _target_label(c: _Column) -> str:
    return next(iter(c.labels)) if len(c.labels) == 1 else f"target {c.t + 1}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _short(v: Any) -> float | int | None:
    """Six significant digits: what a page shows and sorts by, at a third of the JSON's size."""
    if not _is_number(v):
        return None
    return v if isinstance(v, int) else float(f"{float(v):.6g}")
