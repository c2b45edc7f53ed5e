"""The figures of a report, drawn by `xai render`'s own code (`xaicli.render.jobs`).

Per record: the standard panel of all its maps (what a click on the image opens; its
`original` panel is the image thumbnail), and one figure per map × target, render's
`--split` figure (what a click on a map opens; its overlay panel, or the map panel when
the record has no image, is the map's thumbnail). Full-size figures go to `figures/`,
thumbnails of the same name to `thumbs/`: the same Figure saved at a lower dpi and
cropped to one panel, so a thumbnail is exactly what the full figure shows there.

A figure that cannot be drawn (a record with nothing to draw; the maps' shapes were
validated as the record was read) becomes a `Ref` carrying the reason, and the page shows
that reason in its cell.
`figures.jsonl` in the report folder records the fingerprint each figure was drawn from,
so `--skip-existing` draws only figures of new or changed records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from xaicli import __version__
from xaicli.errors import XaiError
from xaicli.io.atomic import append_line, atomic_open, close_cut_line, manifest_entries, sweep_stale_temps
from xaicli.io.record import Record
from xaicli.render import RenderOptions, jobs
from xaicli.report.options import ReportOptions

FIGURES, THUMBS = "figures", "thumbs"
MANIFEST = "figures.jsonl"
VERSION = 1                  # bump when thumbnails change, so --skip-existing redraws them
log = logging.getLogger("xai")


class Unwritable(XaiError):
    """A figure file that cannot be written (full disk, read-only folder) ends the run; a figure
    that cannot be drawn does not."""


@dataclass(frozen=True)
class Ref:
    """One drawn figure: its file name in figures/ (and thumbs/ when it has a thumbnail), or why not."""

    name: str | None = None
    thumb: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"e": self.error}
        return {"n": self.name, "t": self.thumb}


@dataclass
class RecordFigures:
    panel: Ref                                                      # the standard panel; thumbnail: the image
    maps: dict[tuple[str, int], Ref] = field(default_factory=dict)  # (map key, target position) → split figure


class Drawer:
    """Draws the figures of one record after another into `out/figures/` and `out/thumbs/`."""

    def __init__(self, out: Path, opts: ReportOptions, skip_existing: bool = False):
        self.out, self.opts, self.skip_existing = out, opts, skip_existing
        self.panel_opts = RenderOptions(dpi=opts.dpi).checked()
        self.split_opts = RenderOptions(dpi=opts.dpi, split=True).checked()
        for sub in (FIGURES, THUMBS):
            try:
                (out / sub).mkdir(exist_ok=True)
            except OSError as exc:
                raise XaiError(f"{out / sub}: cannot create ({exc.strerror}); choose a writable -o folder") from None
            sweep_stale_temps(out / sub)      # what a killed run left
        try:
            close_cut_line(out / MANIFEST)
        except OSError as exc:
            raise XaiError(f"{out / MANIFEST}: cannot write ({exc.strerror}); free space or choose another -o") from None
        self.done = _load_manifest(out / MANIFEST) if skip_existing else {}

    def draw(self, record: Record) -> RecordFigures:
        maps: dict[tuple[str, int], Ref] = {}
        for key in record.map_keys():
            try:
                split = jobs(_with_maps(record, [key]), self.split_opts)
            except XaiError as exc:               # render refuses the map (shape, dtype): one cell says why
                maps[(key, 0)] = self._failed(record, key, exc)
                continue
            for t, job in enumerate(split):
                maps[(key, t)] = self._draw_job(record, job, [key], ("overlay:", "map:"))
        # the panel shows the maps that could be drawn: one broken map does not take the image's thumbnail along
        broken = {key for (key, _), ref in maps.items() if ref.error is not None}
        keys = [k for k in record.map_keys() if k not in broken]
        return RecordFigures(self._panel(_with_maps(record, keys), keys), maps)

    def _panel(self, record: Record, keys: list[str]) -> Ref:
        try:
            (job,) = jobs(record, self.panel_opts)
        except XaiError as exc:
            return self._failed(record, "its panel", exc)
        return self._draw_job(record, job, keys, ("image:",))

    def _draw_job(self, record: Record, job, keys: list[str], roles: tuple[str, ...]) -> Ref:
        made = fingerprint(record, keys, self.opts)
        path = self.out / FIGURES / job.name
        if self.skip_existing and path.exists() and job.name in self.done:
            made_before, thumb = self.done[job.name]
            if made_before == made and (not thumb or (self.out / THUMBS / job.name).exists()):
                return Ref(job.name, thumb)
        try:      # a figure that cannot be drawn is a cell of the page, not the end of the run
            fig = job.build()
            _write(fig, path, self.opts.dpi)
            box = _panel_box(fig, roles)
            if box is not None:
                _write(fig, self.out / THUMBS / job.name, self.opts.thumb_dpi, box)
        except (Unwritable, MemoryError):
            raise
        except Exception as exc:
            return self._failed(record, job.name, exc)
        entry = {"file": job.name, "id": record.id, "record": made, "thumb": box is not None}
        try:
            append_line(self.out / MANIFEST, json.dumps(entry))
        except OSError as exc:
            raise XaiError(f"{self.out / MANIFEST}: cannot write ({exc.strerror}); free space or choose another -o") from None
        return Ref(job.name, box is not None)

    @staticmethod
    def _failed(record: Record, what: str, exc: Exception) -> Ref:
        """The reason, for the record's row (render's messages name the record: not twice)."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        prefix = f"record {record.id}: "
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        log.warning("record %s: cannot draw %s: %s", record.id, what, reason)
        return Ref(error=reason)


def _with_maps(record: Record, keys: list[str]) -> Record:
    """The record with only these maps (one: render's --split figures of it are that map's, target
    by target)."""
    all_maps = set(record.map_keys())
    meta = dict(record.meta)
    meta["maps"] = {k: v for k, v in (record.meta.get("maps") or {}).items() if k in keys}
    return Record(meta, {k: v for k, v in record.arrays.items() if k in keys or k not in all_maps})


def _panel_box(fig: Figure, roles: tuple[str, ...]) -> Bbox | None:
    """The first panel of the first role found (render tags each axes '<role>:<what>'), in inches.
    Rows of the standard panel repeat the image: the first row's is the thumbnail."""
    width, height = fig.get_size_inches()
    for role in roles:
        for ax in fig.axes:
            if (ax.get_gid() or "").startswith(role):
                box = ax.get_position()
                return Bbox.from_extents(box.x0 * width, box.y0 * height, box.x1 * width, box.y1 * height)
    return None


def _write(fig: Figure, path: Path, dpi: float, box: Bbox | None = None) -> None:
    """Save atomically as PNG (cropped to `box`, in inches); a file that cannot be written ends the run."""
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches=box, metadata={"Software": f"xai {__version__}"})
    except OSError as exc:
        raise Unwritable(f"{path}: cannot write ({exc.strerror or exc}); free space or choose another -o") from None


def fingerprint(record: Record, keys: list[str], opts: ReportOptions) -> str:
    """What a figure was drawn from: the source image, the maps it shows, the record's history and
    the drawing options, so a record that gained maps or a rerun at another --dpi draws again."""
    meta = record.meta
    what = {"source": (meta.get("source") or {}).get("sha256"), "maps": {k: record.map_info(k) for k in keys},
            "history": meta.get("history"), "dpi": opts.dpi, "thumb": opts.thumb_size, "v": VERSION}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _load_manifest(path: Path) -> dict[str, tuple[str, bool]]:
    """file name → (fingerprint, has a thumbnail) of its latest drawing."""
    return {e["file"]: (e.get("record"), bool(e.get("thumb"))) for e in manifest_entries(path)
            if isinstance(e.get("file"), str)}
