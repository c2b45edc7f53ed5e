"""From records to files: which figures a record yields, their names, and atomic saving.

File names (each part reduced to `A-Za-z0-9._+-`):

    <id>[__<method>__<layer or baseline>__<target>][__grid][__<style>+<style>...].<format>
    records__rows-<keys>__cols-<keys>[__<style>+<style>...]__<part>.<format>

The map part appears with --split, `__grid` with --layout grid, and the styles only
when --style was given (anything but the default `auto`), so runs with different
styles never overwrite each other and `--skip-existing` resumes the right files. The
second form is a figure of many records (`--rows record` or `--cols record`): its keys
are the grid's axes as arranged (`+` between keys, `none` for an axis without one), and
its parts (`--max-rows`) are numbered from 1, also when there is only one.

`figures.jsonl` in the folder gets one line per written figure (file, record id,
source path and sha256, and a fingerprint of the record's maps and history): provenance
for a reader, and what `--skip-existing` checks, so a changed source image or a record
that gained maps is drawn again. A figure of many records has `id` null and `ids` (its
records, in order); its fingerprint covers all records of all its parts, in order, so a
part is drawn again when any record of the figure changed or the records or their order
did (the colour scales span all parts).

PDF and SVG keep text as text (fonts embedded as TrueType in PDF, `<text>` in SVG) and
each image at its own pixel size: maps and images are drawn with `interpolation="none"`
and not composited, so the vector backends embed the array itself, unresampled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import matplotlib
from matplotlib.figure import Figure

from xaicli import __version__
from xaicli.errors import XaiError
from xaicli.io.atomic import append_line, atomic_open, sweep_stale_temps
from xaicli.io.ids import safe_id
from xaicli.io.outputs import IdClaims
from xaicli.io.record import Record
from xaicli.render.grid import Grid, build_grid
from xaicli.render.maps import views
from xaicli.render.options import RenderOptions
from xaicli.render.order import load_stats, order
from xaicli.render.panels import build_panel

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_STEM = 200
MANIFEST = "figures.jsonl"
# Text stays text, images stay at their own size (see the module docstring).
SAVE_RC = {"svg.fonttype": "none", "pdf.fonttype": 42, "image.composite_image": False}


@dataclass
class Job:
    """One figure to write: its file name, and how to draw it (only called when needed)."""

    name: str
    build: Callable[[], Figure]
    ids: tuple[str, ...] = ()       # a figure of many records: theirs, in order
    fingerprint: str | None = None  # ... and what they were, for --skip-existing


def jobs(record: Record, opts: RenderOptions) -> list[Job]:
    """The figures of one record: one, or one per (map, target) with --split."""
    if opts.multi_record:
        return multi_jobs([record], opts)
    vs = views(record)
    builder = build_grid if opts.layout == "grid" else build_panel
    if not opts.split or not vs:
        return [Job(figure_name(record.id, [], opts), partial(builder, record, vs, opts))]
    out, seen = [], set()
    for v in vs:
        parts = v.name_parts()
        name, n = figure_name(record.id, parts, opts), 2
        while name in seen:        # two targets with the same label: keep both, numbered on the target
            name, n = figure_name(record.id, [*parts[:-1], f"{parts[-1]}-{n}"], opts), n + 1
        seen.add(name)
        out.append(Job(name, partial(builder, record, [v], opts, vs)))
    return out


def figure_name(record_id: str, parts: list[str], opts: RenderOptions, part: int | None = None) -> str:
    pieces = [safe_id(record_id)] + [_part(p) for p in parts]
    if opts.layout == "grid" and part is None:
        pieces.append("grid")
    if opts.explicit_styles:
        pieces.append("+".join(opts.styles))
    if part is not None:
        pieces.append(str(part))
    stem = "__".join(pieces)
    if len(stem) > MAX_STEM:  # file systems cap names at 255 bytes
        stem = f"{stem[:MAX_STEM - 9]}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"
    return f"{stem}.{opts.fmt}"


def multi_jobs(records: Iterable[Record], opts: RenderOptions,
               stats: dict[tuple, list[float]] | None = None) -> list[Job]:
    """The parts of one figure of many records (`--rows record` or `--cols record`): ordered
    (input order, or `opts.sort` over `stats`, read from `opts.stats` when not given), cut
    to `opts.first` records, arranged, and split every `opts.max_rows` rows."""
    unique: dict[str, Record] = {}
    for r in records:
        unique.setdefault(r.id, r)     # the same record twice (concatenated streams): one row
    items = [(r, views(r)) for r in unique.values()]
    if not items:
        raise XaiError("no records to draw; pass records from xai attribute or xai cam")
    if opts.sort:
        items = order(items, stats if stats is not None else load_stats(opts.stats, opts.sort), opts.sort)
    items = items[:opts.first] if opts.first else items
    grid = Grid(items, opts)
    made = hashlib.sha256(json.dumps([[r.id, fingerprint(r)] for r, _ in items]).encode()).hexdigest()
    axes = "__".join(f"{name}-{'+'.join(keys) or 'none'}" for name, keys in (("rows", grid.down),
                                                                            ("cols", grid.across)))
    out = []
    for k, rows in enumerate(grid.parts):
        ids = tuple(dict.fromkeys(items[s.record][0].id for (i, _), s in sorted(grid.at.items()) if i in rows))
        out.append(Job(figure_name("records", [axes], opts, part=k + 1), partial(grid.build, k), ids, made))
    return out


def _part(text: str) -> str:
    return _UNSAFE.sub("_", str(text)).strip("._") or "_"


def save(fig: Figure, path: Path, opts: RenderOptions) -> None:
    """Write `fig` atomically: an interrupted run leaves no half-written figure under `path`."""
    try:
        with atomic_open(path) as f, matplotlib.rc_context(SAVE_RC):
            fig.savefig(f, format=opts.fmt, dpi=opts.dpi, metadata=_metadata(opts.fmt))
    except OSError as exc:
        raise XaiError(f"{path}: cannot write figure ({exc.strerror or exc}); free space or choose another -o") from None
    except ValueError as exc:
        if "too large" in str(exc):
            raise XaiError(f"{path}: figure too large at --dpi {opts.dpi:g} ({exc}); "
                           "lower --dpi or --panel-size, or use --split") from None
        raise


def _metadata(fmt: str) -> dict:
    """Name the tool, and leave out dates so reruns write identical PDF and SVG files."""
    software = f"xai {__version__} (matplotlib)"
    if fmt == "png":
        return {"Software": software}
    if fmt == "pdf":
        return {"Creator": software, "Producer": software, "CreationDate": None}
    return {"Creator": software, "Date": None}


def output_dir(path: str | os.PathLike) -> Path:
    """Create the figure folder (parents too) and check that it is writable, before any drawing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XaiError(f"{path}: exists and is not a folder; -o takes a folder for the figures")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XaiError(f"{path}: cannot create output folder ({exc.strerror}); choose a writable -o path") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise XaiError(f"{path}: output folder is not writable; choose a writable -o path")
    return path


def render_records(records: Iterable[Record], out_dir: str | os.PathLike, opts: RenderOptions, *,
                   skip_existing: bool = False) -> Iterator[Path]:
    """Draw and save the figures of `records` into `out_dir`, yielding each path as it is written.

    With `skip_existing`, a figure is neither drawn nor yielded when its file exists and
    figures.jsonl says it was drawn from the same record(s) (their fingerprints, which
    hold the source sha256, the maps and the history). A figure of many records reads all
    of them first, then writes its parts.
    """
    opts = opts.checked()
    stats = load_stats(opts.stats, opts.sort) if opts.sort else None    # a bad --stats fails before any output
    out = output_dir(out_dir)
    sweep_stale_temps(out)          # what a killed render left (a figure's temp file)
    done = _load_manifest(out / MANIFEST) if skip_existing else {}
    claims = IdClaims()            # figures are named by record id: another image's would replace them
    if opts.multi_record:
        kept = []
        for record in records:      # a figure of many records needs them all (order, scales)
            claims.claim(record)
            kept.append(record)
        for job in multi_jobs(kept, opts, stats):
            entry = {"file": job.name, "id": None, "ids": list(job.ids), "source": None, "sha256": None,
                     "record": job.fingerprint}
            yield from _write(job, out, opts, entry, skip_existing, done)
        return
    for record in records:
        claims.claim(record)
        source = record.meta.get("source") or {}
        entry = {"id": record.id, "source": source.get("path"), "sha256": source.get("sha256"),
                 "record": fingerprint(record)}
        for job in jobs(record, opts):
            yield from _write(job, out, opts, {"file": job.name, **entry}, skip_existing, done)


def _write(job: Job, out: Path, opts: RenderOptions, entry: dict, skip_existing: bool,
           done: dict[str, str | None]) -> Iterator[Path]:
    """Draw and save one figure, unless --skip-existing finds it drawn from the same records; log it."""
    path = out / job.name
    if skip_existing and path.exists() and done.get(job.name) == entry["record"]:
        return
    save(job.build(), path, opts)
    try:
        append_line(out / MANIFEST, json.dumps(entry))
    except OSError as exc:
        raise XaiError(f"{out / MANIFEST}: cannot write ({exc.strerror}); free space or choose another -o") from None
    yield path


def fingerprint(record: Record) -> str:
    """What a figure was drawn from: the source image and the record's maps and history, so
    a record that gained maps (`xai attribute recs/ -o recs/`) or was redone is drawn again."""
    meta = record.meta
    what = {"source": (meta.get("source") or {}).get("sha256"), "maps": meta.get("maps"),
            "history": meta.get("history")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _load_manifest(path: Path) -> dict[str, str | None]:
    """file name → fingerprint of the record its latest figure was drawn from (lines cut by a
    crash, or written before fingerprints, are ignored: their figures are drawn again)."""
    done: dict[str, str | None] = {}
    try:
        text = path.read_text()
    except OSError:
        return done
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            done[entry["file"]] = entry.get("record")
        except (ValueError, KeyError, TypeError):
            continue
    return done
