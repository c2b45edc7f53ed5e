"""The options of `xai report`, checked once before any record is read."""

from __future__ import annotations

from dataclasses import dataclass

from xaicli.errors import XaiUsageError

PANEL_INCHES = 2.0          # render's default panel size: thumbnails are one panel of the figure


@dataclass(frozen=True)
class ReportOptions:
    dpi: float = 100.0          # full-size figures, for a screen (render's default 300 is for print)
    thumb_size: int = 96        # pixels per side of a thumbnail
    title: str = "xai report"

    def checked(self) -> "ReportOptions":
        if not 10 <= self.dpi <= 600:
            raise XaiUsageError(f"--dpi {self.dpi:g} is out of range; use 10 to 600 (100 suits a screen)")
        if not 16 <= self.thumb_size <= 512:
            raise XaiUsageError(f"--thumb-size {self.thumb_size} is out of range; use 16 to 512 pixels")
        if not self.title.strip():
            raise XaiUsageError("--title is empty; give the page a title, or leave the option out")
        return self

    @property
    def thumb_dpi(self) -> float:
        """Thumbnails are the figure saved at this dpi and cropped to one panel."""
        return self.thumb_size / PANEL_INCHES
