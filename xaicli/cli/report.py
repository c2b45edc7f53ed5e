"""`xai report`: one offline HTML page for a batch of records (no model, no torch)."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli.options import RecordInputs

HELP = """Write one self-contained HTML page for a batch: every record's figures and metrics.

Reads records (stdin, .npz files, tar streams, folders) and writes into -o DIR
(created if missing) index.html, the figures it shows (figures/, full size, drawn by
the code of xai render: the record's standard panel and one --split figure per map x
target) and their thumbnails (thumbs/); prints the page's path on stdout. Needs no
model and imports no torch.

\b
  xai report records/ -o report/
  xai stats records/ -m model/ > stats.jsonl; xai report records/ --stats stats.jsonl -o report/
  xai report records/ -o report/ --skip-existing      # cron: only new figures are drawn

The page opens from the file system (no server, nothing fetched: CSS, script and the
table are inside index.html). One row per record: its image, prediction (class and
confidence, or predicted area), one thumbnail per map (method x baseline or layer x
target) and its metrics, computed by xai stats's code; --stats adds the columns of
xai stats output (e.g. deletion_auc with -m, gt_ metrics with --mask). Click a
thumbnail for the full figure. Sort by any column, filter by text (id, class, source,
model) and by a range of any metric, choose the maps and metrics shown; the view is in
the URL, so a link shows the same view. A summary gives, per model, the provenance
(model, sha256, xai version, parameters of each step) and per map x target the mean
+- std of each metric (the numbers of xai stats --summary).

A figure that cannot be drawn becomes a cell saying why (and a warning); a record
without maps still gets its row. The page is replaced atomically, after every figure.
"""


def report(
    inputs: RecordInputs = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for the page and its figures "
                                                                          "(created if missing). Required.",
                                                  show_default=False)] = None,
    stats: Annotated[Optional[List[str]], typer.Option("--stats", help="JSON Lines written by xai stats (or its "
                                                                       "--format json): their columns join the "
                                                                       "table by record id, map and target "
                                                                       "(repeatable).", show_default=False)] = None,
    title: Annotated[str, typer.Option("--title", help="Title of the page.")] = "xai report",
    dpi: Annotated[float, typer.Option("--dpi", help="Dots per inch of the full-size figures (each panel is 2 "
                                                     "inches).")] = 100,
    thumb_size: Annotated[int, typer.Option("--thumb-size", help="Thumbnail size in pixels.")] = 96,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Draw only figures that are not in -o "
                                                                        "yet, or whose record changed (new maps, "
                                                                        "another image) or were drawn with other "
                                                                        "--dpi/--thumb-size; the page is always "
                                                                        "rewritten.")] = False,
) -> None:
    import sys

    from xaicli.cli.pipeline import progress
    from xaicli.errors import XaiUsageError
    from xaicli.io.inputs import resolve
    from xaicli.report import ReportOptions, build_report, read_stats

    opts = ReportOptions(dpi=dpi, thumb_size=thumb_size, title=title).checked()
    if not output:
        raise XaiUsageError("report writes a page and its figures into a folder: pass -o DIR (created if missing)")
    extra = read_stats(stats or [])
    records = resolve(inputs or [], images=False, records=True)
    page = build_report(progress(records, records.count, "report"), output, opts, stats=extra,
                        skip_existing=skip_existing)
    sys.stdout.write(f"{page}\n")


report.__doc__ = HELP
