"""`xai render`: publication figures from records, on any CPU host (no model, no torch)."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli.options import RecordInputs, SkipExisting

# Retyped (not imported) so --help and completion stay free of matplotlib; a test checks them
# against xaicli.render.
STYLES = ("auto", "overlay", "heatmap", "signed", "abs", "channels", "contours")
FORMATS = ("png", "pdf", "svg")
LAYOUTS = ("panel", "grid")
SCALES = ("panel", "shared", "row", "col")
KEYS = ("method", "layer", "baseline", "target", "record", "style")

HELP = """Draw figures of the maps in records: one per record, or one per map with --split.

Reads records (stdin, .npz files, tar streams, folders), writes figures into -o DIR
(created if missing) and prints each written path on stdout, one per line, for the
next tool in the pipe. Needs no model and imports no torch; never opens a window.

\b
  xai attribute -m builtin:shapes-seg scans/ | xai render -o figs/
  xai render records.tar -o figs/ --layout grid --style signed --format pdf
  xai render records/ -o figs/ --split --style overlay --style contours
  xai render records/ -o figs/ --rows record --cols method --max-rows 6
  xai render recs/ -o figs/ --rows record --stats stats.jsonl --sort focus_ratio --first 6

Layouts. panel (default), the standard panel: original | map | prediction |
ground truth (if the record has one) | overlay, one row per map x target (all the
record's maps), the original, prediction and ground truth once, in the first row;
headed by the predicted label and probability (classifier) or area fraction
(segmenter); map titles give method, layer or baseline, target and, for Integrated
Gradients, steps and delta. grid, the comparison grid: rows and columns are keys
(--rows, --cols: method, layer, baseline, target, record, style); labels on the
margins only; the image (prediction solid, ground truth dashed) once per record.
Defaults: rows method, cols layer (CAMs); rows baseline, cols target (attributions);
rows target, cols one per map (both). A key that varies but is on no axis goes on one
(to the columns while they are empty, else to the rows); one that is a single value per
row or column is named in that label. --rows record (or --cols record) puts many
records in one figure, in input order or by --sort KEY (-KEY: descending) over the
rows of an xai stats file (--stats; a record's value is the mean over its panels);
--first N keeps N records; --max-rows N cuts the figure into numbered parts.
A record whose model saw a centre crop of the image (meta preprocessing.crop) has that
box dashed on the image.

Styles (repeatable; each is a map column of the panel, and the key style of the grid):

\b
  auto      signed for attributions, heatmap for CAMs (default)
  heatmap   positive part of the channel sum, or the CAM (--cmap, from 0)
  abs       |sum over channels| (--cmap, from 0)
  signed    sum over channels, diverging and centred at zero: red for, blue against
  channels  one panel per input channel, signed
  overlay   |sum| or the CAM alpha-blended on the image (--alpha)
  contours  the overlay with prediction (solid) and ground-truth (dashed) outlines

An attribution (T,C,H,W) is summed over channels; a CAM (T,H,W) is a non-negative
magnitude; a 1-D attribution (tabular) is a sorted bar chart with the feature names
from meta. Colours are clipped for display only, by Captum's cumulative-mass rule
(--clip). Records without an image show the maps alone; records without maps show
original | prediction | ground truth (the grid needs maps).

Scales (--scale): panel, each panel to its own clip value (per-map is its old name);
shared, one clip value per colour family for the figure; row, per row; col, per
column. One colour bar per group, its label naming the scale.

\b
File names (parts reduced to A-Za-z0-9._+-):
  <id>[__<method>__<layer or baseline>__<target>][__grid][__<style>+...].<format>
  records__rows-<keys>__cols-<keys>[__<style>+...]__<part>.<format>
the map part with --split, __grid with --layout grid, the styles only when --style is
given; the second form for many records in one figure, parts numbered from 1. Figures
have a fixed size: each panel is --panel-size inches square (plus titles), so a PNG is
dpi x inches pixels; PDF and SVG keep text as text and maps at their own pixel size.
Written atomically; figures.jsonl in the folder records which records (fingerprints)
made each, for --skip-existing: a figure of many records is redrawn when any of its
records, or their order, changed.
"""


def render(
    inputs: RecordInputs = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for the figures (created if "
                                                                          "missing). Required.",
                                                  show_default=False)] = None,
    style: Annotated[Optional[List[str]], typer.Option("--style", "-s", help="How maps are drawn (repeatable): "
                                                                             + ", ".join(STYLES) + ".",
                                                       autocompletion=lambda: list(STYLES),
                                                       show_default=False)] = None,
    layout: Annotated[Optional[str], typer.Option("--layout", help="panel (the standard panel; default) or grid "
                                                                   "(the comparison grid; default with --rows or "
                                                                   "--cols).", autocompletion=lambda: list(LAYOUTS),
                                                  show_default=False)] = None,
    rows: Annotated[Optional[List[str]], typer.Option("--rows", help="Grid keys down (repeatable): "
                                                                     + ", ".join(KEYS) + ".",
                                                      autocompletion=lambda: list(KEYS), show_default=False)] = None,
    cols: Annotated[Optional[List[str]], typer.Option("--cols", help="Grid keys across (repeatable): "
                                                                     + ", ".join(KEYS) + ".",
                                                      autocompletion=lambda: list(KEYS), show_default=False)] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", help="With --rows record: rows per figure; "
                                                                       "the rest in further numbered figures.",
                                                    show_default=False)] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", help="Order the records of a figure by this --stats key "
                                                               "(-KEY: descending), e.g. focus_ratio.",
                                                show_default=False)] = None,
    stats: Annotated[Optional[str], typer.Option("--stats", help="JSON Lines from xai stats, for --sort.",
                                                 show_default=False)] = None,
    first: Annotated[Optional[int], typer.Option("--first", help="Only the first N records (after --sort) in a "
                                                                 "figure of many.", show_default=False)] = None,
    split: Annotated[bool, typer.Option("--split", help="One figure per map x target instead of one per "
                                                        "record.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="png, pdf or svg.",
                                     autocompletion=lambda: list(FORMATS))] = "png",
    dpi: Annotated[float, typer.Option("--dpi", help="Dots per inch: PNG pixels = dpi x figure inches (PDF and "
                                                     "SVG embed each map at its own pixel size).")] = 300,
    alpha: Annotated[float, typer.Option("--alpha", help="Opacity of the map over the image (overlay, "
                                                         "contours), 0 to 1.")] = 0.5,
    clip: Annotated[float, typer.Option("--clip", help="Clip colours at the value where the sorted |values| "
                                                       "reach this percent of their total (Captum's rule); "
                                                       "100 = no clipping.")] = 98.0,
    cmap: Annotated[str, typer.Option("--cmap", help="Colour map for magnitudes (heatmap, abs, overlay, "
                                                     "CAMs), any matplotlib name, e.g. turbo, jet, viridis.")] = "turbo",
    signed_cmap: Annotated[str, typer.Option("--signed-cmap", help="Diverging colour map for signed maps, "
                                                                   "centred at zero.")] = "RdBu_r",
    scale: Annotated[str, typer.Option("--scale", help="panel: each panel to its own clip value (old name "
                                                       "per-map); shared: one scale for the figure (compare like "
                                                       "with like, e.g. targets of one method); row or col: one "
                                                       "per row or column.",
                                       autocompletion=lambda: list(SCALES))] = "panel",
    panel_size: Annotated[float, typer.Option("--panel-size", help="Size of one panel in inches.")] = 2.0,
    skip_existing: SkipExisting = False,
) -> None:
    import sys

    from xaicli.cli.state import settings
    from xaicli.errors import XaiUsageError
    from xaicli.io.inputs import resolve
    from xaicli.render import RenderOptions, render_records

    layout = layout or ("grid" if rows or cols else "panel")
    opts = RenderOptions(styles=tuple(style or ("auto",)), layout=layout, split=split, fmt=fmt.lower(), dpi=dpi,
                         alpha=alpha, clip=clip, cmap=cmap, signed_cmap=signed_cmap, scale=scale,
                         panel_size=panel_size, rows=tuple(rows or ()), cols=tuple(cols or ()), max_rows=max_rows,
                         sort=sort, stats=stats, first=first).checked()
    if not output:
        raise XaiUsageError("render writes figures into a folder: pass -o DIR (created if missing)")
    records = resolve(inputs or [], images=False, records=True)
    items = records
    if settings.progress:
        from tqdm import tqdm

        items = tqdm(records, total=records.count, unit="record", file=sys.stderr, leave=False)
    for path in render_records(items, output, opts, skip_existing=skip_existing):
        sys.stdout.write(f"{path}\n")
        sys.stdout.flush()


render.__doc__ = HELP
