"""The comparison grid: all maps of a record side by side, for papers.

Columns are the record's maps (method × layer or baseline, in record order), rows
are the targets (in order of first appearance) times the styles; a map without that
target leaves its slot empty. The image (with prediction and ground-truth outlines)
heads the first row when the record has one. One colour bar per colour family.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from xaicli.errors import XaiError
from xaicli.io.record import Record
from xaicli.render import content
from xaicli.render.cells import bars_cell, image_cell, map_cell
from xaicli.render.layout import Cell, build
from xaicli.render.maps import MapView
from xaicli.render.options import RenderOptions
from xaicli.render.styles import Scaler, prepare


def build_grid(record: Record, views: Sequence[MapView], opts: RenderOptions,
               pool: Sequence[MapView] | None = None) -> Figure:
    if not views:
        raise XaiError(f"record {record.id}: holds no maps (attr/..., cam/...), so there is nothing to compare; "
                       "run xai attribute or xai cam first, or use --layout panel")
    ctx = opts.context(record)
    styles = list(opts.styles)
    keys = list(dict.fromkeys(v.key for v in views))
    targets = list(dict.fromkeys(v.target_id for v in views))
    by_slot = {(v.key, v.target_id): v for v in views}

    preps = {(v.key, v.target_id, s): prepare(v, s, opts.clip) for v in views if not v.is_1d for s in styles}
    flat = list(preps.values())
    pool_flat = [prepare(v, s, opts.clip) for v in pool if not v.is_1d for s in styles] \
        if pool and opts.scale == "shared" else flat
    scaler = Scaler(pool_flat, opts.scale, opts.clip)

    original = image_cell(ctx, "image", outlines=True)
    rows: list[list[Cell | None]] = []
    for tid in targets:
        for s in styles:
            row: list[Cell | None] = [original if not rows else None] if original is not None else []
            for key in keys:
                view = by_slot.get((key, tid))
                if view is None:
                    row.append(None)
                elif view.is_1d:
                    row.append(bars_cell(view, ctx) if s == styles[0] else None)
                else:
                    row.append(map_cell(preps[(key, tid, s)], scaler, ctx, show_style=len(styles) > 1))
            if any(c is not None for c in row):
                rows.append(row)
    return build(rows, panel=opts.panel_size, dpi=opts.dpi, header=content.header(record),
                 colourbars=scaler.colourbars(flat, ctx))
