"""The order of the records in a figure of many: as they came, or by a number from `xai stats`.

`--sort KEY --stats FILE.jsonl`: FILE holds the rows `xai stats` writes, one per record ×
map × target (JSON Lines, or the one array of `--format json`); summary rows (`stat`
set) are left out. A row belongs to a panel of the figure when its `id`, `map`,
`target`, `target_index` and `target_kind` are the panel's record id, map key and
target. A record's value is the mean of KEY over the rows of its panels, nulls left out
(a focus ratio without a mask); records without a value come last, in input order, and
a warning says how many. Ascending; `-KEY` descending; ties keep the input order.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.record import Record
from xaicli.render.maps import MapView

log = logging.getLogger("xai")
Item = tuple[Record, Sequence[MapView]]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def _row_key(record_id: Any, map_key: Any, target: dict[str, Any], t: Any) -> tuple:
    return (str(record_id), str(map_key), target.get("label"), target.get("index", t), target.get("kind"))


def load_stats(path: str, key: str) -> dict[tuple, list[float]]:
    """(id, map, target label, index, kind) → the values of `key` in `path` (usage errors name the fix)."""
    name = key.lstrip("-")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise XaiError(f"--stats {path}: cannot read ({exc.strerror or exc}); pass the JSON Lines of xai stats") from None
    except UnicodeDecodeError:
        raise XaiUsageError(f"--stats {path}: not text; pass the JSON Lines that xai stats writes") from None
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise XaiUsageError(f"--stats {path}: not JSON Lines ({exc}); pass what xai stats writes "
                            "(not --format csv)") from None
    rows = [r for r in rows if isinstance(r, dict) and r.get("stat") is None and "id" in r]
    if not any(name in r for r in rows):
        numeric = sorted({k for r in rows for k, v in r.items() if _number(v) is not None})
        raise XaiUsageError(f"--sort {name}: {path} has no such key; valid: {', '.join(numeric) or 'none (no rows)'}")
    out: dict[tuple, list[float]] = {}
    for r in rows:
        v = _number(r.get(name))
        if v is not None:
            target = {"label": r.get("target"), "index": r.get("target_index"), "kind": r.get("target_kind")}
            out.setdefault(_row_key(r["id"], r.get("map"), target, r.get("target_index")), []).append(v)
    return out


def value_of(record: Record, vs: Sequence[MapView], stats: dict[tuple, list[float]]) -> float | None:
    """The mean of the stats rows of the record's panels (None when none has a value)."""
    found = [x for v in vs for x in stats.get(_row_key(record.id, v.key, v.target_spec, v.target), [])]
    return sum(found) / len(found) if found else None


def order(items: Sequence[Item], stats: dict[tuple, list[float]], key: str) -> list[Item]:
    """`items` sorted by their stats value (module docstring); records without one last."""
    descending = key.startswith("-")
    valued = [(value_of(r, vs, stats), n, (r, vs)) for n, (r, vs) in enumerate(items)]
    missing = [x for x in valued if x[0] is None]
    if missing:
        log.warning("--sort %s: %d of %d records have no value in the stats file (%s); drawn last",
                    key.lstrip("-"), len(missing), len(items), ", ".join(x[2][0].id for x in missing[:5])
                    + (", ..." if len(missing) > 5 else ""))
    have = sorted((x for x in valued if x[0] is not None), key=lambda x: (-x[0] if descending else x[0], x[1]))
    return [x[2] for x in have + missing]
