"""The comparison grid: the panels of one record, or of many, in rows × columns as papers print them.

Rows and columns are facets (facets.py: method, layer, baseline, target, record, style),
chosen by `--rows`/`--cols` or by the defaults there; labels sit on the outer margins
only (row labels left, column labels on top), so panels carry no titles (the standard
panel keeps IG's steps and δ). The image, with the prediction (solid) and ground-truth
(dashed) outlines and the model's crop box, appears once per record: left of the
record's first row (one record, or records down), or above its first column (records
across). One colour bar per scaling group (scales.py). A figure of many records is cut
into parts of `--max-rows` rows, each its own file; scales span all parts, so part 2
reads on part 1's colour bars.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from xaicli.errors import XaiError
from xaicli.io.record import Record
from xaicli.render import content
from xaicli.render.cells import bars_cell, image_cell, legend, map_cell
from xaicli.render.facets import KEYS, Slot, arrange, constant, determined, label, ranks, value
from xaicli.render.layout import Cell, build
from xaicli.render.maps import MapView
from xaicli.render.options import RenderOptions
from xaicli.render.scales import Scaler
from xaicli.render.styles import Context, Prepared, prepare


class Grid:
    """The plan of one comparison figure: which panel goes where, in how many parts.

    Arranging is cheap (no pixels touched), so callers can name the parts and skip those
    already drawn; the maps are prepared and scaled only when a part is built.
    """

    def __init__(self, items: Sequence[tuple[Record, Sequence[MapView]]], opts: RenderOptions,
                 pool: Sequence[MapView] | None = None):
        self.opts, self.pool = opts, pool
        self.records = [r for r, _ in items]
        who = f"record {self.records[0].id}" if len(items) == 1 else "these records"
        for rec, vs in items:
            if not vs:
                raise XaiError(f"record {rec.id}: holds no maps (attr/..., cam/...), so there is nothing to compare; "
                               "run xai attribute or xai cam first, or use --layout panel")
        styles = list(opts.styles)
        self.slots = [Slot(i, _record_lines(rec), v, s) for i, (rec, vs) in enumerate(items)
                      for v in vs for s in styles if not (v.is_1d and s != styles[0])]
        self.down, self.across = arrange(self.slots, opts.rows, opts.cols, who)
        self.row_keys = self.down + determined(self.slots, self.down, self.across)
        self.col_keys = self.across + determined(self.slots, self.across, self.row_keys)
        rank = ranks(self.slots)
        self.rows = sorted({tuple(rank[k][value(s, k)] for k in self.down) for s in self.slots})
        self.cols = sorted({tuple(rank[k][value(s, k)] for k in self.across) for s in self.slots})
        row_of = {r: i for i, r in enumerate(self.rows)}
        col_of = {c: j for j, c in enumerate(self.cols)}
        self.at: dict[tuple[int, int], Slot] = {}
        for s in self.slots:
            where = (row_of[tuple(rank[k][value(s, k)] for k in self.down)],
                     col_of[tuple(rank[k][value(s, k)] for k in self.across)])
            if where in self.at:
                other = self.at[where].view.key
                raise XaiError(f"{who}: maps {other} and {s.view.key} have the same method, layer, baseline and "
                               "target, so the grid cannot tell them apart; use --layout panel or --split")
            self.at[where] = s
        n = opts.max_rows if opts.max_rows and "record" in self.down else len(self.rows)
        self.parts = [range(i, min(i + n, len(self.rows))) for i in range(0, len(self.rows), n)]
        self._scaled: tuple[dict[int, Prepared], Scaler, list[Context]] | None = None

    def _prepared(self) -> tuple[dict[int, Prepared], Scaler, list[Context]]:
        """Every 2-D panel prepared (with its row and column) and one Scaler over the whole figure."""
        if self._scaled is None:
            opts = self.opts
            preps: dict[int, Prepared] = {}
            for (i, j), s in self.at.items():
                if not s.view.is_1d:
                    p = preps[id(s)] = prepare(s.view, s.style, opts.clip)
                    p.row, p.col = i, j
            pool = [prepare(v, s, opts.clip) for v in self.pool or () if not v.is_1d for s in opts.styles] \
                if self.pool and opts.scale == "shared" else list(preps.values())
            self._scaled = preps, Scaler(pool, opts.scale, opts.clip), [opts.context(r) for r in self.records]
        return self._scaled

    def build(self, part: int = 0) -> Figure:
        preps, scaler, ctxs = self._prepared()
        rows = self.parts[part]
        down_records, across_records = "record" in self.down, "record" in self.across
        shown = sorted({s.record for (i, _), s in self.at.items() if i in rows})
        image_left = not across_records and any(ctxs[r].image is not None for r in shown)
        image_top = across_records and any(ctxs[r].image is not None for r in shown)
        image_head = ["image", *legend([ctxs[r] for r in shown], outlines=True)]

        grid: list[list[Cell | None]] = []
        row_labels: list[list[str]] = []
        if image_top:
            cells, last = [], None
            for j in range(len(self.cols)):
                r = self._any(None, j).record
                cells.append(_image(ctxs[r]) if r != last else None)
                last = r
            grid.append(cells)
            row_labels.append(image_head)
        last = None
        for i in rows:
            row: list[Cell | None] = []
            if image_left:
                r = self._any(i, None).record if down_records else 0
                row.append(_image(ctxs[r]) if r != last else None)
                last = r
            for j in range(len(self.cols)):
                s = self.at.get((i, j))
                row.append(None if s is None else self._panel(s, preps, scaler, ctxs[s.record]))
            grid.append(row)
            row_labels.append(self._labels(self._any(i, None), self.row_keys))
        col_labels = ([image_head] if image_left else []) + \
            [self._labels(self._any(None, j), self.col_keys) for j in range(len(self.cols))]
        on_part = [preps[id(s)] for (i, _), s in self.at.items() if i in rows and id(s) in preps]
        return build(grid, panel=self.opts.panel_size, dpi=self.opts.dpi, header=self._header(part),
                     colourbars=scaler.colourbars(on_part, ctxs[0]),
                     row_labels=row_labels if any(row_labels) else None,
                     col_labels=col_labels if any(col_labels) else None)

    def _any(self, i: int | None, j: int | None) -> Slot:
        """A panel of row `i` (or column `j`): all panels of a row share its labels."""
        return next(s for (a, b), s in self.at.items() if (i is None or a == i) and (j is None or b == j))

    @staticmethod
    def _labels(slot: Slot, keys: Sequence[str]) -> list[str]:
        return [line for k in keys for line in label(slot, k)]

    def _panel(self, s: Slot, preps: dict[int, Prepared], scaler: Scaler, ctx: Context) -> Cell | None:
        cell = bars_cell(s.view, ctx) if s.view.is_1d else map_cell(preps[id(s)], scaler, ctx, show_style=False)
        cell.title = ()                 # the margins say what it is
        if len(self.records) > 1:
            cell.gid += f":{self.records[s.record].id}"
        return cell

    def _header(self, part: int) -> str:
        free = [k for k in KEYS if k not in self.row_keys and k not in self.col_keys
                and (k != "style" or self.opts.explicit_styles)]
        lines = [" · ".join(constant(self.slots, free))]
        if "record" not in self.down and "record" not in self.across:
            lines.insert(0, content.header(self.records[0]))
        if len(self.parts) > 1:
            lines.append(f"part {part + 1} of {len(self.parts)}")
        return "\n".join(x for x in lines if x)


def _image(ctx: Context) -> Cell | None:
    cell = image_cell(ctx, "image", outlines=True)
    if cell is not None:
        cell.title = ()
    return cell


def _record_lines(record: Record) -> tuple[str, ...]:
    text = content.prediction_text(record)
    return (record.id, text) if text else (record.id,)


def build_grid(record: Record, views: Sequence[MapView], opts: RenderOptions,
               pool: Sequence[MapView] | None = None) -> Figure:
    """One record's grid: `views` (all its maps, or one with --split; `pool` spans --scale shared)."""
    return Grid([(record, views)], opts, pool).build(0)
