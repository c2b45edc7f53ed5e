"""`xai render`: publication figures from records, on any CPU host (no model, no torch)."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli.options import RecordInputs, SkipExisting

STYLES = ("auto", "overlay", "heatmap", "signed", "abs", "channels", "contours")
FORMATS = ("png", "pdf", "svg")

HELP = """Draw figures of the maps in records: one per record, or one per map with --split.

Reads records (stdin, .npz files, tar streams, folders), writes figures into -o DIR
(created if missing) and prints each written path on stdout, one per line, for the
next tool in the pipe. Needs no model and imports no torch; never opens a window.

\b
  xai attribute -m builtin:shapes-seg scans/ | xai render -o figs/
  xai render records.tar -o figs/ --layout grid --style signed --format pdf
  xai render records/ -o figs/ --split --style overlay --style contours

Layouts. panel (default), the standard panel: original | map | prediction |
ground truth (if the record has one) | overlay, one row per map x target (all the
record's maps, each row complete on its own), headed by the predicted label and
probability (classifier) or area fraction (segmenter); map titles give method, layer
or baseline, target and, for Integrated Gradients, steps and delta. grid, the
comparison grid: columns are the maps (methods x layers/baselines), rows the targets
(x styles), the image first; one colour bar per colour family.

Styles (repeatable; each is a map column of the panel, a row of the grid):

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

\b
File names (parts reduced to A-Za-z0-9._+-):
  <id>[__<method>__<layer or baseline>__<target>][__grid][__<style>+...].<format>
the map part with --split, __grid with --layout grid, the styles only when --style is
given. Figures have a fixed size: each panel is --panel-size inches square (plus
titles), so a PNG is dpi x inches pixels. Written atomically; figures.jsonl in the
folder records which record and source (sha256) made each, for --skip-existing.
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
    layout: Annotated[str, typer.Option("--layout", help="panel (the standard panel) or grid (all maps side by "
                                                         "side).", autocompletion=lambda: ["panel", "grid"])] = "panel",
    split: Annotated[bool, typer.Option("--split", help="One figure per map x target instead of one per "
                                                        "record.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="png, pdf or svg.",
                                     autocompletion=lambda: list(FORMATS))] = "png",
    dpi: Annotated[float, typer.Option("--dpi", help="Dots per inch: PNG pixels = dpi x figure inches; for PDF "
                                                     "and SVG the resolution of the embedded images.")] = 300,
    alpha: Annotated[float, typer.Option("--alpha", help="Opacity of the map over the image (overlay, "
                                                         "contours), 0 to 1.")] = 0.5,
    clip: Annotated[float, typer.Option("--clip", help="Clip colours at the value where the sorted |values| "
                                                       "reach this percent of their total (Captum's rule); "
                                                       "100 = no clipping.")] = 98.0,
    cmap: Annotated[str, typer.Option("--cmap", help="Colour map for magnitudes (heatmap, abs, overlay, "
                                                     "CAMs), any matplotlib name, e.g. turbo, jet, viridis.")] = "turbo",
    signed_cmap: Annotated[str, typer.Option("--signed-cmap", help="Diverging colour map for signed maps, "
                                                                   "centred at zero.")] = "RdBu_r",
    scale: Annotated[str, typer.Option("--scale", help="per-map: each map to its own clip value; shared: one "
                                                       "scale for all maps of a record (compare like with like, "
                                                       "e.g. targets of one method).",
                                       autocompletion=lambda: ["per-map", "shared"])] = "per-map",
    panel_size: Annotated[float, typer.Option("--panel-size", help="Size of one panel in inches.")] = 2.0,
    skip_existing: SkipExisting = False,
) -> None:
    import sys

    from xaicli.cli.state import settings
    from xaicli.errors import XaiUsageError
    from xaicli.io.inputs import resolve
    from xaicli.render import RenderOptions, render_records

    opts = RenderOptions(styles=tuple(style or ("auto",)), layout=layout, split=split, fmt=fmt.lower(), dpi=dpi,
                         alpha=alpha, clip=clip, cmap=cmap, signed_cmap=signed_cmap, scale=scale,
                         panel_size=panel_size).checked()
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
