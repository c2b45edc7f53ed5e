"""The options of `xai render`, checked once so every figure of a run is drawn alike."""

from __future__ import annotations

from dataclasses import dataclass, replace

from xaicli.errors import XaiUsageError
from xaicli.io.record import Record
from xaicli.render import content
from xaicli.render.layout import Metrics
from xaicli.render.styles import SCALES, Context, check_cmap, check_style

FORMATS = ("png", "pdf", "svg")
LAYOUTS = ("panel", "grid")


@dataclass(frozen=True)
class RenderOptions:
    styles: tuple[str, ...] = ("auto",)
    layout: str = "panel"           # "panel": the standard panel; "grid": the comparison grid
    split: bool = False             # one figure per (map, target) instead of one per record
    fmt: str = "png"
    dpi: float = 300.0
    alpha: float = 0.5
    clip: float = 98.0
    cmap: str = "turbo"
    signed_cmap: str = "RdBu_r"
    scale: str = "per-map"
    panel_size: float = 2.0         # inches per panel: pixels = dpi × inches

    def checked(self) -> "RenderOptions":
        """Validate every option (usage errors, exit 2) and drop repeated styles."""
        if self.fmt not in FORMATS:
            raise XaiUsageError(f"--format {self.fmt!r} is not supported; valid: {', '.join(FORMATS)}")
        if self.layout not in LAYOUTS:
            raise XaiUsageError(f"--layout {self.layout!r} is not a layout; valid: {', '.join(LAYOUTS)}")
        if self.scale not in SCALES:
            raise XaiUsageError(f"--scale {self.scale!r} is not a scale; valid: {', '.join(SCALES)}")
        styles = tuple(dict.fromkeys(check_style(s) for s in (self.styles or ("auto",))))
        check_cmap(self.cmap, "--cmap")
        check_cmap(self.signed_cmap, "--signed-cmap")
        if not 10 <= self.dpi <= 2400:
            raise XaiUsageError(f"--dpi {self.dpi:g} is out of range; use 10 to 2400 (300 for print)")
        if not 0.0 <= self.alpha <= 1.0:
            raise XaiUsageError(f"--alpha {self.alpha:g} is out of range; use 0 (image only) to 1 (map only)")
        if not 0.0 < self.clip <= 100.0:
            raise XaiUsageError(f"--clip {self.clip:g} is out of range; use a percentage in (0, 100], 100 = no clipping")
        if not 0.5 <= self.panel_size <= 20.0:
            raise XaiUsageError(f"--panel-size {self.panel_size:g} is out of range; use 0.5 to 20 inches")
        return replace(self, styles=styles)

    @property
    def explicit_styles(self) -> bool:
        return self.styles != ("auto",)

    def context(self, record: Record) -> Context:
        return Context(image=content.image(record), pred=content.pred_mask(record), truth=content.gt_mask(record),
                       cmap=self.cmap, signed_cmap=self.signed_cmap, alpha=self.alpha, clip=self.clip,
                       font=Metrics(self.panel_size).font)
