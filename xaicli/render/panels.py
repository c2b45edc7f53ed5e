"""The standard panel: original | map (one column per style) | prediction | ground truth | overlay.

One row per (map, target) of the record, every row complete on its own (the image,
prediction and ground truth repeat), so a row can be cropped for a slide. The header
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
from xaicli.render.styles import Scaler, prepare


def build_panel(record: Record, views: Sequence[MapView], opts: RenderOptions,
                pool: Sequence[MapView] | None = None) -> Figure:
    """The standard panel of `views`; `pool` (all of the record's maps) fixes a shared scale for --split."""
    ctx = opts.context(record)
    styles = list(opts.styles)
    with_overlay = ctx.image is not None and not {"overlay", "contours"} & set(styles)
    columns = styles + (["overlay"] if with_overlay else [])

    def prepared_for(vs: Sequence[MapView]):
        return [[prepare(v, s, opts.clip) for s in columns] for v in vs if not v.is_1d]

    preps = prepared_for(views)
    flat = [p for row in preps for p in row]
    pool_flat = [p for row in prepared_for(pool) for p in row] if pool and opts.scale == "shared" else flat
    scaler = Scaler(pool_flat, opts.scale, opts.clip)

    original, prediction, truth = image_cell(ctx), prediction_cell(record, ctx), truth_cell(ctx)
    rows: list[list[Cell | None]] = []
    it = iter(preps)
    for view in views:
        if view.is_1d:
            rows.append([bars_cell(view, ctx), prediction])
            continue
        row_preps = next(it)
        cells: list[Cell | None] = [original]
        cells += [map_cell(p, scaler, ctx, show_style=len(styles) > 1) for p in row_preps[:len(styles)]]
        cells += [prediction, truth]
        if with_overlay:
            overlay = map_cell(row_preps[-1], scaler, ctx, show_style=False, role="overlay")
            overlay.title = ["overlay"]
            cells.append(overlay)
        rows.append(cells)
    if not views:
        rows.append([original, prediction, truth])
    rows = [[c for c in row if c is not None] for row in rows]   # same per-record pattern: columns stay aligned
    if not any(rows):
        raise XaiError(f"record {record.id}: nothing to draw (no image, maps or prediction); "
                       "pass records from xai predict, attribute or cam")
    return build(rows, panel=opts.panel_size, dpi=opts.dpi, header=content.header(record),
                 colourbars=scaler.colourbars(flat, ctx))
