"""Colour scales: which panels share one colour limit (`--scale`), and their colour bars.

Every panel's display values are clipped at a cumulative-mass clip value (normalise.py);
`--scale` says over which panels that value is taken, within one colour family:

| scale   | one clip value for                          | colour bars              |
| ------- | ------------------------------------------- | ------------------------ |
| panel   | each panel (shown ÷ its own value, 0..1)    | one per family           |
| shared  | all panels of the figure                    | one per family           |
| row     | the panels of each row                      | one per family, each row |
| col     | the panels of each column                   | one per family, under it |

`per-map` is the old name of `panel` and still accepted. Panels know their row and
column (`Prepared.row`, `.col`) from the figure that places them, so a figure split
over several files (`--max-rows`) keeps one scale per row or column across its parts.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from xaicli.errors import XaiUsageError
from xaicli.render.layout import ColourBar
from xaicli.render.normalise import clip_value, safe_scale
from xaicli.render.styles import Context, Prepared

SCALES = ("panel", "shared", "row", "col")
ALIASES = {"per-map": "panel"}
_HOW = {"panel": "per panel (÷ its clip value)", "shared": "shared scale", "row": "shared per row",
        "col": "shared per column"}
_PLACE = {"panel": "figure", "shared": "figure", "row": "row", "col": "col"}


def check_scale(mode: str) -> str:
    """The scale's canonical name (old names mapped), or a usage error listing the valid ones."""
    mode = ALIASES.get(mode, mode)
    if mode not in SCALES:
        old = ", ".join(f"{a} = {b}" for a, b in ALIASES.items())
        raise XaiUsageError(f"--scale {mode!r} is not a scale; valid: {', '.join(SCALES)} ({old})")
    return mode


class Scaler:
    """Colour limits of every panel in one figure (or the figures one was split into)."""

    def __init__(self, prepared: Sequence[Prepared], mode: str, clip: float):
        self.mode = check_scale(mode)
        self.limit: dict[Hashable, float] = {}
        if self.mode != "panel":
            pools: dict[Hashable, list[np.ndarray]] = {}
            for p in prepared:
                pools.setdefault(self.group(p), []).extend(q.ravel() for q in p.planes)
            self.limit = {g: safe_scale(clip_value(np.concatenate(v), clip)) for g, v in pools.items()}

    def group(self, p: Prepared) -> Hashable:
        """The panels that share `p`'s colour limit (and colour bar)."""
        where = {"row": p.row, "col": p.col}.get(self.mode)
        return (self.mode, where, p.family)

    def limits(self, p: Prepared) -> tuple[float, float, float]:
        """(low, high, divisor): display = clip(plane / divisor, low, high)."""
        signed = p.family == "signed"
        if self.mode == "panel":
            return (-1.0 if signed else 0.0), 1.0, safe_scale(p.threshold)
        t = self.limit.get(self.group(p)) or safe_scale(p.threshold)
        return (-t if signed else 0.0), t, 1.0

    def colourbars(self, prepared: Sequence[Prepared], ctx: Context) -> list[ColourBar]:
        """One colour bar per group in use: signed first, then by row or column."""
        first: dict[Hashable, Prepared] = {}
        for p in prepared:
            first.setdefault(self.group(p), p)
        order = sorted(first, key=lambda g: (g[1] or 0, g[2] != "signed"))
        out = []
        for g in order:
            p = first[g]
            lo, hi, _ = self.limits(p)
            cmap = ctx.signed_cmap if p.family == "signed" else ctx.cmap
            out.append(ColourBar(ScalarMappable(Normalize(lo, hi), colormaps[cmap]),
                                 f"{p.family}, {_HOW[self.mode]}", place=_PLACE[self.mode], group=g))
        return out
