"""From records to files: which figures a record yields, their names, and atomic saving.

File names (each part reduced to `A-Za-z0-9._+-`):

    <id>[__<method>__<layer or baseline>__<target>][__grid][__<style>+<style>...].<format>

The map part appears with --split, `__grid` with --layout grid, and the styles only
when --style was given (anything but the default `auto`), so runs with different
styles never overwrite each other and `--skip-existing` resumes the right files.

`figures.jsonl` in the folder gets one line per written figure (file, record id,
source path and sha256, and a fingerprint of the record's maps and history): provenance
for a reader, and what `--skip-existing` checks, so a changed source image or a record
that gained maps is drawn again.
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

from matplotlib.figure import Figure

from xaicli import __version__
from xaicli.errors import XaiError
from xaicli.io.atomic import append_line, atomic_open, manifest_entries, sweep_stale_temps
from xaicli.io.ids import safe_id
from xaicli.io.outputs import IdClaims, output_folder
from xaicli.io.record import Record
from xaicli.render.grid import build_grid
from xaicli.render.maps import views
from xaicli.render.options import RenderOptions
from xaicli.render.panels import build_panel

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_STEM = 200
MANIFEST = "figures.jsonl"


@dataclass
class Job:
    """One figure to write: its file name, and how to draw it (only called when needed)."""

    name: str
    build: Callable[[], Figure]


def jobs(record: Record, opts: RenderOptions) -> list[Job]:
    """The figures of one record: one, or one per (map, target) with --split."""
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


def figure_name(record_id: str, parts: list[str], opts: RenderOptions) -> str:
    pieces = [safe_id(record_id)] + [_part(p) for p in parts]
    if opts.layout == "grid":
        pieces.append("grid")
    if opts.explicit_styles:
        pieces.append("+".join(opts.styles))
    stem = "__".join(pieces)
    if len(stem) > MAX_STEM:  # file systems cap names at 255 bytes
        stem = f"{stem[:MAX_STEM - 9]}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"
    return f"{stem}.{opts.fmt}"


def _part(text: str) -> str:
    return _UNSAFE.sub("_", str(text)).strip("._") or "_"


def save(fig: Figure, path: Path, opts: RenderOptions) -> None:
    """Write `fig` atomically: an interrupted run leaves no half-written figure under `path`."""
    try:
        with atomic_open(path) as f:
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
    return output_folder(path, "-o takes a folder for the figures")


def render_records(records: Iterable[Record], out_dir: str | os.PathLike, opts: RenderOptions, *,
                   skip_existing: bool = False) -> Iterator[Path]:
    """Draw and save the figures of `records` into `out_dir`, yielding each path as it is written.

    With `skip_existing`, a figure is neither drawn nor yielded when its file exists and
    figures.jsonl says it was made from the same source (sha256; records without one:
    the file existing is enough).
    """
    opts = opts.checked()
    out = output_dir(out_dir)
    sweep_stale_temps(out)          # what a killed render left (a figure's temp file)
    done = _load_manifest(out / MANIFEST) if skip_existing else {}
    claims = IdClaims()            # figures are named by record id: another image's would replace them
    for record in records:
        claims.claim(record)
        source = record.meta.get("source") or {}
        sha = source.get("sha256")
        made = fingerprint(record)
        for job in jobs(record, opts):
            path = out / job.name
            if skip_existing and path.exists() and done.get(job.name) == made:
                continue
            save(job.build(), path, opts)
            entry = {"file": job.name, "id": record.id, "source": source.get("path"), "sha256": sha,
                     "record": made}
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
    return {e["file"]: e.get("record") for e in manifest_entries(path) if isinstance(e.get("file"), str)}
