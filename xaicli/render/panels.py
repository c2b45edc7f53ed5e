"""The standard panel: original | map (one column per style) | prediction | ground truth | overlay.

One row per (map, target) of the record; the original, the prediction and the ground
truth are the record's, not the map's, so they appear once, in the first row (their
columns stay, empty below, so every map sits in the same column). The header
names the record and the prediction (label and probability for a classifier, area
fraction for a segmenter); each map's title names the method, layer or baseline,
target and, for Integrated Gradients, the steps and convergence delta. Records
without an image show the maps alone (no original, no overlay); records without maps
show original | prediction | ground truth.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from xaicli.errors import XaiError
from xaicli.io.record import Record
from xaicli.render import content
from xaicli.render.cells import bars_cell, image_cell, map_cell, prediction_cell, truth_cell
from xaicli.render.layout import Cell, build
from xaicli.render.maps import MapView
from xaicli.render.options import RenderOptions
from xaicli.render.scales import Scaler
from xaicli.render.styles import prepare


def build_panel(record: Record, views: Sequence[MapView], opts: RenderOptions,
                pool: Sequence[MapView] | None = None) -> Figure:
    """The standard panel of `views`; `pool` (all of the record's maps) fixes a shared scale for --split."""
    ctx = opts.context(record)
    styles = list(opts.styles)
    with_overlay = ctx.image is not None and not {"overlay", "contours"} & set(styles)
    columns = styles + (["overlay"] if with_overlay else [])

    def prepared_for(vs: Sequence[MapView]):
        out = [[prepare(v, s, opts.clip) for s in columns] for v in vs if not v.is_1d]
        for i, row in enumerate(out):
            for j, p in enumerate(row):
                p.row, p.col = i, j
        return out

    preps = prepared_for(views)
    flat = [p for row in preps for p in row]
    pool_flat = [p for row in prepared_for(pool) for p in row] if pool and opts.scale == "shared" else flat
    scaler = Scaler(pool_flat, opts.scale, opts.clip)

    once = [image_cell(ctx), prediction_cell(record, ctx), truth_cell(ctx)]   # the record's: first row only
    original, prediction, truth = once
    rows: list[list[Cell | None]] = []
    it = iter(preps)
    for view in views:
        if view.is_1d:
            rows.append([bars_cell(view, ctx), prediction if not rows else None])
            continue
        row_preps = next(it)
        first = not rows
        cells: list[Cell | None] = [original if first else None]
        cells += [map_cell(p, scaler, ctx, show_style=len(styles) > 1) for p in row_preps[:len(styles)]]
        cells += [prediction if first else None, truth if first else None]
        if with_overlay:
            overlay = map_cell(row_preps[-1], scaler, ctx, show_style=False, role="overlay")
            overlay.title = ["overlay"]
            cells.append(overlay)
        rows.append(cells)
    if not views:
        rows.append(once)
    rows = _drop_empty_columns(rows)
    if not any(rows):
        raise XaiError(f"record {record.id}: nothing to draw (no image, maps or prediction); "
                       "pass records from xai predict, attribute or cam")
    return build(rows, panel=opts.panel_size, dpi=opts.dpi, header=content.header(record),
                 colourbars=scaler.colourbars(flat, ctx))


def _drop_empty_columns(rows: list[list[Cell | None]]) -> list[list[Cell | None]]:
    """Leave out the columns this record has nothing for (no image, no ground truth); the others
    keep their empty slots, so every map sits under the one above it."""
    width = max((len(r) for r in rows), default=0)
    keep = [j for j in range(width) if any(j < len(r) and r[j] is not None for r in rows)]
    return [[r[j] if j < len(r) else None for j in keep] for r in rows]
