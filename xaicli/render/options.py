"""The options of `xai render`, checked once so every figure of a run is drawn alike."""

from __future__ import annotations

from dataclasses import dataclass, replace

from xaicli.errors import XaiUsageError
from xaicli.io.record import Record
from xaicli.render import content
from xaicli.render.facets import check_axes
from xaicli.render.layout import Metrics
from xaicli.render.scales import check_scale
from xaicli.render.styles import Context, check_cmap, check_style

FORMATS = ("png", "pdf", "svg")
LAYOUTS = ("panel", "grid")
VECTOR = ("pdf", "svg")


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
    scale: str = "panel"            # see scales.py; "per-map" is the old name of "panel"
    panel_size: float = 2.0         # inches per panel: pixels = dpi × inches
    rows: tuple[str, ...] = ()      # grid facets down (facets.py); empty: the defaults
    cols: tuple[str, ...] = ()      # grid facets across
    max_rows: int | None = None     # a multi-record figure's rows per file; the rest in further files
    sort: str | None = None         # a stats key ordering the records ("-key": descending) ...
    stats: str | None = None        # ... read from this `xai stats` JSON Lines file
    first: int | None = None        # only the first N records (after sorting)

    def checked(self) -> "RenderOptions":
        """Validate every option (usage errors, exit 2) and drop repeated styles."""
        if self.fmt not in FORMATS:
            raise XaiUsageError(f"--format {self.fmt!r} is not supported; valid: {', '.join(FORMATS)}")
        if self.layout not in LAYOUTS:
            raise XaiUsageError(f"--layout {self.layout!r} is not a layout; valid: {', '.join(LAYOUTS)}")
        scale = check_scale(self.scale)
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
        self._check_grid()
        return replace(self, styles=styles, scale=scale, rows=tuple(self.rows), cols=tuple(self.cols))

    def _check_grid(self) -> None:
        """--rows/--cols and the options of a multi-record figure: only where they mean something."""
        check_axes(self.rows, self.cols)
        if (self.rows or self.cols) and self.layout != "grid":
            raise XaiUsageError("--rows/--cols arrange the comparison grid; use them with --layout grid "
                                "(the default when --rows or --cols is given)")
        if self.split and self.multi_record:
            raise XaiUsageError("--split draws one figure per map, --rows/--cols record one figure of many records; "
                                "choose one")
        if self.max_rows is not None and not 1 <= self.max_rows <= 1000:
            raise XaiUsageError(f"--max-rows {self.max_rows} is out of range; use 1 to 1000 rows per figure")
        if self.max_rows is not None and "record" not in self.rows:
            raise XaiUsageError("--max-rows splits a figure of many records over files; add --rows record")
        if self.first is not None and self.first < 1:
            raise XaiUsageError(f"--first {self.first} is out of range; use 1 or more records")
        for name, value, what in (("--sort", self.sort, "orders"), ("--first", self.first, "picks")):
            if value is not None and not self.multi_record:
                raise XaiUsageError(f"{name} {what} the records of a figure of many records; add --rows record "
                                    "(or --cols record)")
        if self.sort is not None and not self.stats:
            raise XaiUsageError("--sort KEY reads KEY from a stats file; add --stats FILE.jsonl (made by xai stats)")
        if self.stats and self.sort is None:
            raise XaiUsageError("--stats FILE is read for --sort; add --sort KEY (e.g. --sort focus_ratio)")

    @property
    def multi_record(self) -> bool:
        """Records are a facet of the grid: one figure holds many records."""
        return "record" in self.rows or "record" in self.cols

    @property
    def explicit_styles(self) -> bool:
        return self.styles != ("auto",)

    def context(self, record: Record) -> Context:
        return Context(image=content.image(record), pred=content.pred_mask(record), truth=content.gt_mask(record),
                       cmap=self.cmap, signed_cmap=self.signed_cmap, alpha=self.alpha, clip=self.clip,
                       font=Metrics(self.panel_size).font,
                       interpolation="none" if self.fmt in VECTOR else "auto", crop=content.crop_box(record))
