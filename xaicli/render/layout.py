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
from typing import Callable, Sequence

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


@dataclass
class ColourBar:
    mappable: ScalarMappable
    label: str


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
          colourbars: Sequence[ColourBar] = ()) -> Figure:
    """Lay out `rows` (None = empty slot), draw every cell, add the header and colour bars."""
    m = Metrics(panel)
    ncols = max((len(r) for r in rows), default=0)
    grid = [list(r) + [None] * (ncols - len(r)) for r in rows]
    units = [max((r[j].span for r in grid if r[j] is not None), default=0) for j in range(ncols)]
    used = [j for j in range(ncols) if units[j]]
    content_w = sum(units[j] for j in used) * panel + m.gap * max(0, len(used) - 1)
    titles = [[m.wrap(c.title, c.span * panel) if c is not None else [] for c in r] for r in grid]
    title_h = [max((len(t) for t in row), default=0) * m.line + (m.gap / 2 if any(row) else 0.0)
               for row in titles]
    head = m.wrap([header], content_w + len(colourbars) * m.colourbar, 1.15) if header else []
    head_h = len(head) * m.line * 1.15 + m.gap if head else 0.0
    width = 2 * m.margin + content_w + len(colourbars) * m.colourbar
    height = 2 * m.margin + head_h + sum(title_h) + len(grid) * panel + m.gap * max(0, len(grid) - 1)

    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    if head:
        fig.text(0.5, 1 - m.margin / height, "\n".join(head), ha="center", va="top",
                 fontsize=m.font * 1.15, fontweight="bold")

    def rect(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / width, y / height, w / width, h / height]

    top = height - m.margin - head_h
    for row, row_titles, th in zip(grid, titles, title_h):
        bottom = top - th - panel
        x = m.margin
        for j in used:
            cell = row[j]
            if cell is not None:
                cx = x + (units[j] - cell.span) * panel / 2
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
            x += units[j] * panel + m.gap
        top = bottom - m.gap

    if colourbars:
        high = height - m.margin - head_h - (title_h[0] if title_h else 0.0)
        low = max(m.margin + 0.1 * panel, high - 2.5 * panel)   # tall figures: bar beside the first rows
        for k, cb in enumerate(colourbars):
            x = m.margin + content_w + k * m.colourbar + 0.12 * panel
            cax = fig.add_axes(rect(x, low, 0.07 * panel, max(high - low, 0.1 * panel)))
            cax.set_gid(f"colourbar:{k}")
            bar = fig.colorbar(cb.mappable, cax=cax)
            bar.ax.tick_params(labelsize=m.font * 0.85, length=2, width=0.5)
            bar.outline.set_linewidth(0.5)
            bar.set_label(cb.label, fontsize=m.font * 0.85)
    return fig
