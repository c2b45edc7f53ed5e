"""`--stats FILE`: rows written by `xai stats` (JSON Lines, or its --format json array), joined
to the report's map columns by record id, map and target."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from xaicli.errors import XaiError
from xaicli.metrics.report import ID_COLUMNS

JoinKey = tuple  # (id, map, target, target_index, target_kind)
NOT_METRICS = set(ID_COLUMNS) | {"stat", "n"}


def join_key(row: dict[str, Any]) -> JoinKey:
    return tuple(row.get(k) for k in ("id", "map", "target", "target_index", "target_kind"))


class StatsRows:
    """The per-record rows of one or more `xai stats` outputs, by join key; summary rows are left
    out (the report computes its own summary from all the numbers it shows)."""

    def __init__(self) -> None:
        self.rows: dict[JoinKey, dict[str, float]] = {}
        self.columns: dict[str, None] = {}        # numeric keys in first-seen order
        self.used: set[JoinKey] = set()

    def read(self, path: str | Path) -> "StatsRows":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise XaiError(f"--stats {path}: cannot read ({why}); pass a file written by xai stats") from None
        for where, row in _rows(text, path):
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("map"), str):
                raise XaiError(f"--stats {where}: not a row of xai stats (an object with 'id' and 'map'); "
                               "pass the JSON Lines that xai stats writes")
            if row.get("stat") is not None:
                continue
            numbers = {k: float(v) for k, v in row.items() if k not in NOT_METRICS and _number(v)}
            self.columns.update(dict.fromkeys(numbers))
            self.rows.setdefault(join_key(row), {}).update(numbers)
        return self

    def take(self, key: JoinKey) -> dict[str, float]:
        found = self.rows.get(key)
        if found is None:
            return {}
        self.used.add(key)
        return found

    @property
    def unused(self) -> int:
        return len(self.rows) - len(self.used)


def _rows(text: str, path: Path):
    stripped = text.lstrip()
    if stripped.startswith("["):               # xai stats --format json
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise XaiError(f"--stats {path}: not valid JSON ({exc}); pass a file written by xai stats") from None
        for i, row in enumerate(doc):
            yield f"{path}: item {i + 1}", row
        return
    if stripped and not stripped.startswith("{"):
        raise XaiError(f"--stats {path}: not JSON Lines (CSV?); pass the JSON Lines of xai stats "
                       "(its default format, or --format json)")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except ValueError as exc:
            raise XaiError(f"--stats {path}:{n}: not valid JSON ({exc}); pass a file written by xai stats") from None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
