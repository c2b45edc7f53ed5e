"""`xai report` as a library: one offline HTML page for a batch of records (no model, no torch).

    from xaicli.report import ReportOptions, build_report
    page = build_report(records, "report/", ReportOptions(title="nightly"), stats=["stats.jsonl"])

`figures` draws each record's figures through `xai render`'s code, `table` gathers the
rows, metrics (`xai stats`'s), summary and provenance, `page` writes `index.html`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from xaicli.io.outputs import IdClaims, output_folder
from xaicli.io.record import Record
from xaicli.report.figures import Drawer
from xaicli.report.options import ReportOptions
from xaicli.report.page import PAGE, write_page
from xaicli.report.stats_input import StatsRows
from xaicli.report.table import Table

__all__ = ["PAGE", "ReportOptions", "build_report", "read_stats"]


def read_stats(paths: Sequence[str | os.PathLike]) -> StatsRows:
    rows = StatsRows()
    for path in paths:
        rows.read(path)
    return rows


def build_report(records: Iterable[Record], out_dir: str | os.PathLike, opts: ReportOptions | None = None, *,
                 stats: StatsRows | Sequence[str | os.PathLike] = (), skip_existing: bool = False) -> Path:
    """Draw the figures of `records` into `out_dir` and write `out_dir/index.html`; return its path.

    The page is written last, in one rename: a run that fails leaves the previous page (or none)."""
    opts = (opts or ReportOptions()).checked()
    extra = stats if isinstance(stats, StatsRows) else read_stats(stats)
    out = output_folder(out_dir, "-o takes a folder for the report")
    drawer = Drawer(out, opts, skip_existing)
    table = Table(extra)
    claims = IdClaims()            # one row and one set of figures per id: another image's would replace them
    for record in records:
        claims.claim(record)
        table.add(record, drawer.draw(record))
    return write_page(table.data(opts.title, opts.thumb_size), out)
