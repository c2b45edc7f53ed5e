"""The grid's facets: what tells two panels of a comparison figure apart, and which axis shows each.

A panel of the grid is one (record, map, target, style). Its facets:

| key      | value                                 | label on the margin     |
| -------- | ------------------------------------- | ----------------------- |
| method   | the map's method                      | `gradcam++`             |
| layer    | a CAM's (or layer attribution's) layer | `layer4`                |
| baseline | an attribution's baseline             | `baseline black`        |
| target   | the target (label and index)          | `target cat`            |
| record   | the record (multi-record figures)     | id and prediction       |
| style    | the --style                           | `overlay`               |

`--rows` and `--cols` each name one or more keys; their combinations that occur, in
order of first appearance (records in input or --sort order), are the grid's rows and
columns. Defaults, when neither is given: rows = method, cols = layer for CAMs; rows =
baseline, cols = target for attributions; rows = target, cols = method + layer +
baseline (one column per map) when a figure holds both. A default key that does not
vary is dropped. A key off the axes that would put two panels in one cell is added (in
the order record, method, layer, baseline, target, style): to the columns while they
are empty (defaults), to the other axis when only one was given, else to the rows. A
key off the axes that is one value per row (or column), such as IG's baseline in the
column `integrated_gradients` or the target of each scan, is named in that row's (or
column's) label; one value in the whole figure, in the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from xaicli.errors import XaiUsageError
from xaicli.render.maps import MapView

KEYS = ("method", "layer", "baseline", "target", "record", "style")
DEFAULTS = {"cam": (("method",), ("layer",)),
            "attribution": (("baseline",), ("target",)),
            "mixed": (("target",), ("method", "layer", "baseline"))}
ORDER = ("record", "method", "layer", "baseline", "target", "style")     # of the keys added by the rules


@dataclass(frozen=True)
class Slot:
    """One panel of a grid: the `style` drawing of `view`, a map of the figure's `record`-th record."""

    record: int
    record_lines: tuple[str, ...]     # the record's label: id, and the prediction in words
    view: MapView
    style: str


def value(slot: Slot, key: str) -> Hashable:
    v = slot.view
    return {"method": v.method, "layer": v.layer, "baseline": v.baseline, "target": v.target_id,
            "record": slot.record, "style": slot.style}[key]


def label(slot: Slot, key: str) -> list[str]:
    """The margin label of `slot`'s value of `key` (nothing for a map without that key)."""
    v = slot.view
    if key == "record":
        return list(slot.record_lines)
    if key == "baseline":
        return [f"baseline {v.baseline}"] if v.baseline is not None else []
    if key == "target":
        return [f"target {v.target_label}"]
    text = {"method": v.method, "layer": v.layer, "style": slot.style}[key]
    return [text] if text is not None else []


def check_axes(rows: Sequence[str], cols: Sequence[str]) -> None:
    """Before any record is read: every key known, and on one axis once."""
    for option, keys in (("--rows", rows), ("--cols", cols)):
        for k in keys:
            if k not in KEYS:
                raise XaiUsageError(f"{option} {k!r} is not a key; valid: {', '.join(KEYS)}")
    for k in KEYS:
        if k in rows and k in cols:
            raise XaiUsageError(f"--rows and --cols both name {k}; a key goes on one axis only; "
                                f"valid: {', '.join(KEYS)}")
        for option, keys in (("--rows", rows), ("--cols", cols)):
            if list(keys).count(k) > 1:
                raise XaiUsageError(f"{option} names {k} twice; name each key once; valid: {', '.join(KEYS)}")


def arrange(slots: Sequence[Slot], rows: Sequence[str], cols: Sequence[str], who: str) -> tuple[tuple, tuple]:
    """The keys down and across for these panels (module docstring); `who` names the records in errors."""
    have = [k for k in KEYS if any(value(s, k) is not None for s in slots)]
    for option, keys in (("--rows", rows), ("--cols", cols)):
        for k in keys:
            if k not in have:
                raise XaiUsageError(f"{option} {k}: no map of {who} has a {k} (CAMs have layers, attributions "
                                    f"baselines); valid here: {', '.join(have)}")
    varies = {k: len({value(s, k) for s in slots}) > 1 for k in KEYS}
    down, across = list(rows), list(cols)
    if not down and not across:
        kinds = {s.view.kind for s in slots}
        d0, a0 = DEFAULTS[kinds.pop() if len(kinds) == 1 else "mixed"]
        down, across = [k for k in d0 if varies[k]], [k for k in a0 if varies[k]]
    for k in ORDER:                 # a key that would put two panels in one cell goes on an axis
        if k not in down and k not in across and _splits(slots, down + across, k):
            to_cols = (not cols and bool(rows)) or (not rows and not cols and not across)
            (across if to_cols else down).append(k)
    for k in ORDER:                 # one that no row or column label could name goes down too
        if k not in down and k not in across and varies[k] and _splits(slots, down, k) \
                and _splits(slots, across, k):
            down.append(k)
    return tuple(down), tuple(across)


def determined(slots: Sequence[Slot], axis: Sequence[str], others: Sequence[str]) -> tuple[str, ...]:
    """Keys off the axes that vary but take one value in every row (or column) of `axis`: its labels
    name them too (IG's baseline under the method `integrated_gradients`, the target of each scan)."""
    return tuple(k for k in ORDER if k not in axis and k not in others
                 and len({value(s, k) for s in slots}) > 1 and not _splits(slots, axis, k))


def _splits(slots: Sequence[Slot], keys: Sequence[str], key: str) -> bool:
    """Whether panels that agree on `keys` differ in `key`."""
    seen: dict[tuple, Hashable] = {}
    for s in slots:
        at = tuple(value(s, k) for k in keys)
        if seen.setdefault(at, value(s, key)) != value(s, key):
            return True
    return False


def ranks(slots: Sequence[Slot]) -> dict[str, dict[Hashable, int]]:
    """Each key's values in order of first appearance (slots come records → maps → styles)."""
    out: dict[str, dict[Hashable, int]] = {k: {} for k in KEYS}
    for s in slots:
        for k in KEYS:
            out[k].setdefault(value(s, k), len(out[k]))
    return out


def constant(slots: Sequence[Slot], keys: Sequence[str]) -> list[str]:
    """Labels of the `keys` that have one value in every panel (the figure's header names them)."""
    out = []
    for k in keys:
        if k != "record" and len({value(s, k) for s in slots}) == 1:
            out += label(slots[0], k)
    return out
