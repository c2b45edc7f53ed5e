"""Cells shared by the standard panel and the grid: image, map, masks, prediction, bars."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Sequence

from xaicli.io.record import Record
from xaicli.render import bars, content
from xaicli.render.layout import Cell
from xaicli.render.maps import MapView
from xaicli.render.styles import (PRED_FILL, TRUTH_COLOUR, Context, Prepared, crop_box, draw, outline,
                                  show_image, show_mask)

if TYPE_CHECKING:
    from xaicli.render.scales import Scaler

CROP_NOTE = "model input: crop box (yellow dashes)"


def image_cell(ctx: Context, title: str = "original", outlines: bool = False) -> Cell | None:
    """The image; with `outlines` the predicted (solid) and true (dashed) regions on it; always the
    model's input box when its processor cropped the image."""
    if ctx.image is None:
        return None

    def paint(axes, ctx=ctx):
        show_image(axes[0], ctx.image, ctx.interpolation)
        if outlines and ctx.pred is not None:
            outline(axes[0], ctx.pred, ctx.image.shape[:2], "white", "solid")
        if outlines and ctx.truth is not None:
            outline(axes[0], ctx.truth, ctx.image.shape[:2], TRUTH_COLOUR, "dashed")
        if ctx.crop is not None:
            crop_box(axes[0], ctx.crop)

    return Cell(paint, [title, *legend([ctx], outlines)], role="image", gid="original")


def legend(contexts: Sequence[Context], outlines: bool) -> list[str]:
    """What the lines on the image(s) mean: only what some image of the figure shows."""
    marks = []
    if outlines:
        marks += [w for w, shown in (("prediction solid", any(c.pred is not None for c in contexts)),
                                     ("truth dashed", any(c.truth is not None for c in contexts))) if shown]
    lines = [", ".join(marks)] if marks else []
    if any(c.crop is not None and c.image is not None for c in contexts):
        lines.append(CROP_NOTE)
    return lines


def map_cell(p: Prepared, scaler: "Scaler", ctx: Context, show_style: bool, role: str = "map") -> Cell:
    title = p.view.title_lines()
    if show_style:
        title = [f"{title[0]} ({p.style})"] + title[1:]
    n = len(p.planes)
    return Cell(partial(draw, p=p, scaler=scaler, ctx=ctx), title, span=n, n_axes=n, role=role,
                gid=f"{p.view.key}:{p.view.target}:{p.style}", group=scaler.group(p))


def bars_cell(view: MapView, ctx: Context) -> Cell:
    def paint(axes):
        bars.attribution_bars(axes[0], view.values, view.feature_names, ctx.font)

    title = view.title_lines()
    if view.values.size > bars.MAX_FEATURES:
        title = title + [f"top {bars.MAX_FEATURES} of {view.values.size} features by |attribution|"]
    return Cell(paint, title, span=2, role="map", gid=f"{view.key}:{view.target}:bars")


def prediction_cell(record: Record, ctx: Context) -> Cell | None:
    text = content.prediction_text(record)
    top = content.top_classes(record)
    if top:
        return Cell(lambda axes: bars.probability_bars(axes[0], top, ctx.font), ["prediction", text or ""],
                    role="prediction", gid="prediction")
    if ctx.pred is None:
        return None
    return Cell(lambda axes: show_mask(axes[0], ctx.pred, ctx.image, PRED_FILL, "solid", ctx.interpolation),
                ["prediction", text or ""], role="prediction", gid="prediction")


def truth_cell(ctx: Context) -> Cell | None:
    if ctx.truth is None:
        return None
    return Cell(lambda axes: show_mask(axes[0], ctx.truth, ctx.image, TRUTH_COLOUR, "dashed", ctx.interpolation),
                ["ground truth"], role="truth", gid="truth")
