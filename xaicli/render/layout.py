"""Fixed-size figures: rows of panels measured in inches, so pixel size = dpi × inches.

The layout is computed here rather than by tight or constrained layout: those change
the saved size or warn on small figures, and the size must be predictable (papers,
slide templates and the tests rely on it). Figures are made with
`matplotlib.figure.Figure` and an Agg canvas, never pyplot, so no window can open.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless hosts: a later pyplot import gets Agg too
    matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@dataclass
class Cell:
    """One panel: `draw` fills `n_axes` axes laid side by side over `span` panel widths."""

    draw: Callable[[list[Axes]], None]
    title: Sequence[str] = ()
    span: int = 1
    n_axes: int = 1
    role: str = "map"      # "image" | "map" | "prediction" | "truth" | "overlay" | "bars"
    gid: str = ""          # set on each axes as "<role>:<gid>", so callers can find map panels
    group: Hashable = None  # its colour scale (scales.Scaler.group): a row's or column's bar goes beside it


@dataclass
class ColourBar:
    mappable: ScalarMappable
    label: str
    place: str = "figure"  # "figure": right of the first rows; "row": right of its row; "col": under its column
    group: Hashable = None


@dataclass(frozen=True)
class Metrics:
    """Sizes in inches (fonts in points), all proportional to the panel size."""

    panel: float

    @property
    def font(self) -> float:
        return max(4.0, 3.5 * self.panel)

    @property
    def line(self) -> float:
        return self.font * 1.3 / 72.0

    @property
    def gap(self) -> float:
        return 0.08 * self.panel

    @property
    def margin(self) -> float:
        return 0.06 * self.panel

    @property
    def colourbar(self) -> float:
        return 0.5 * self.panel

    def wrap(self, lines: Sequence[str], width_in: float, scale: float = 1.0) -> list[str]:
        chars = max(6, int(width_in * 72.0 / (self.font * scale * 0.55)))
        out: list[str] = []
        for line in lines:
            out.extend(textwrap.wrap(line, chars, break_on_hyphens=False) or [""])
        return out


def build(rows: Sequence[Sequence[Cell | None]], *, panel: float, dpi: float, header: str = "",
          colourbars: Sequence[ColourBar] = (), row_labels: Sequence[Sequence[str]] | None = None,
          col_labels: Sequence[Sequence[str]] | None = None) -> Figure:
    """Lay out `rows` (None = empty slot), draw every cell, add the header and colour bars.

    `row_labels` (one list of lines per row) go in the left margin, rotated; `col_labels`
    (one per column) above the first row: a grid's only labels, so cells need no titles.
    """
    m = Metrics(panel)
    ncols = max((len(r) for r in rows), default=0)
    grid = [list(r) + [None] * (ncols - len(r)) for r in rows]
    units = [max((r[j].span for r in grid if r[j] is not None), default=0) for j in range(ncols)]
    used = [j for j in range(ncols) if units[j]]
    content_w = sum(units[j] for j in used) * panel + m.gap * max(0, len(used) - 1)
    titles = [[m.wrap(c.title, c.span * panel) if c is not None else [] for c in r] for r in grid]
    title_h = [max((len(t) for t in row), default=0) * m.line + (m.gap / 2 if any(row) else 0.0)
               for row in titles]
    rlabels = [m.wrap(lines, panel) for lines in row_labels] if row_labels else []
    given = list(col_labels or [])
    clabels = [m.wrap(given[j], units[j] * panel) if j < len(given) and units[j] else [] for j in range(ncols)]
    row_w = max((len(x) for x in rlabels), default=0) * m.line + (m.gap / 2 if any(rlabels) else 0.0)
    col_h = max((len(x) for x in clabels), default=0) * m.line + (m.gap / 2 if any(clabels) else 0.0)

    at = _anchors(grid, colourbars)
    right = max([sum(cb.place == "figure" for cb in colourbars)]
                + [sum(1 for cb in colourbars if cb.place == "row" and at.get(cb.group, (None,))[0] == i)
                   for i in range(len(grid))])
    below = max([0] + [sum(1 for cb in colourbars if cb.place == "col" and at.get(cb.group, (0, None))[1] == j)
                       for j in range(ncols)])
    bar_h = 0.07 * panel + 3.2 * m.line + m.gap          # a horizontal bar with its ticks and label
    head = m.wrap(header.split("\n"), row_w + content_w + right * m.colourbar, 1.15) if header else []
    head_h = len(head) * m.line * 1.15 + m.gap if head else 0.0
    width = 2 * m.margin + row_w + content_w + right * m.colourbar
    height = (2 * m.margin + head_h + col_h + sum(title_h) + len(grid) * panel + m.gap * max(0, len(grid) - 1)
              + below * bar_h)

    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    if head:
        fig.text(0.5, 1 - m.margin / height, "\n".join(head), ha="center", va="top",
                 fontsize=m.font * 1.15, fontweight="bold")

    def rect(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / width, y / height, w / width, h / height]

    left = m.margin + row_w
    xs, x = {}, left                      # left edge of each used column
    for j in used:
        xs[j] = x
        x += units[j] * panel + m.gap
    top = height - m.margin - head_h - col_h
    for j in used:
        if clabels[j]:
            fig.text((xs[j] + units[j] * panel / 2) / width, (top + m.gap / 4) / height, "\n".join(clabels[j]),
                     ha="center", va="bottom", fontsize=m.font, linespacing=1.1)
    bottoms = []
    for i, (row, row_titles, th) in enumerate(zip(grid, titles, title_h)):
        bottom = top - th - panel
        bottoms.append(bottom)
        if i < len(rlabels) and rlabels[i]:
            fig.text((m.margin + row_w / 2) / width, (bottom + panel / 2) / height, "\n".join(rlabels[i]),
                     ha="center", va="center", rotation=90, fontsize=m.font, linespacing=1.1)
        for j in used:
            cell = row[j]
            if cell is None:
                continue
            cx = xs[j] + (units[j] - cell.span) * panel / 2
            cw = cell.span * panel
            if row_titles[j]:
                fig.text((cx + cw / 2) / width, top / height, "\n".join(row_titles[j]),
                         ha="center", va="top", fontsize=m.font, linespacing=1.1)
            sub_gap = 0.04 * panel if cell.n_axes > 1 else 0.0
            sw = (cw - sub_gap * (cell.n_axes - 1)) / cell.n_axes
            axes = []
            for k in range(cell.n_axes):
                ax = fig.add_axes(rect(cx + k * (sw + sub_gap), bottom, sw, panel))
                ax.set_gid(f"{cell.role}:{cell.gid}")
                axes.append(ax)
            cell.draw(axes)
        top = bottom - m.gap

    high = height - m.margin - head_h - col_h - (title_h[0] if title_h else 0.0)
    low = max(m.margin + below * bar_h + 0.1 * panel, high - 2.5 * panel)   # tall figures: beside the first rows
    right_x = left + content_w + 0.12 * panel

    def box(cb: ColourBar, n: int) -> tuple[list[float], str]:
        """Where the `n`-th bar of its row, column or figure goes, and which way it runs."""
        if cb.place == "row":
            return rect(right_x + n * m.colourbar, bottoms[at[cb.group][0]] + 0.05 * panel, 0.07 * panel,
                        0.9 * panel), "vertical"
        if cb.place == "col":
            j = at[cb.group][1]
            w = units[j] * panel
            return rect(xs[j] + 0.1 * w, bottoms[-1] - n * bar_h - m.gap / 2 - 0.07 * panel, 0.8 * w,
                        0.07 * panel), "horizontal"
        return rect(right_x + n * m.colourbar, low, 0.07 * panel, max(high - low, 0.1 * panel)), "vertical"

    placed: dict[tuple, int] = {}           # bars already beside the figure / a row / under a column
    for k, cb in enumerate(colourbars):
        if cb.place != "figure" and cb.group not in at:
            continue                        # its panels are in another part of a split figure
        slot = (cb.place, at[cb.group][0 if cb.place == "row" else 1]) if cb.place != "figure" else ("figure",)
        placed[slot] = placed.get(slot, -1) + 1
        where, orientation = box(cb, placed[slot])
        cax = fig.add_axes(where)
        cax.set_gid(f"colourbar:{k}")
        bar = fig.colorbar(cb.mappable, cax=cax, orientation=orientation)
        bar.ax.tick_params(labelsize=m.font * 0.85, length=2, width=0.5)
        bar.outline.set_linewidth(0.5)
        bar.set_label(cb.label, fontsize=m.font * 0.85)
    return fig


def _anchors(grid: Sequence[Sequence[Cell | None]], colourbars: Sequence[ColourBar]) -> dict[Hashable, tuple]:
    """(row, column) of the first cell of each colour-bar group, for bars placed beside a row or column."""
    wanted = {cb.group for cb in colourbars if cb.place != "figure"}
    at: dict[Hashable, tuple] = {}
    for i, row in enumerate(grid):
        for j, cell in enumerate(row):
            if cell is not None and cell.group in wanted:
                at.setdefault(cell.group, (i, j))
    return at
