"""How one map is drawn: the `--style` names, what each shows, and its colour scale.

A style first *prepares* display planes from the raw map (so a figure can fit one
shared colour scale over all of them), then *draws* them. Families decide the colour
map: `signed` (diverging, centred at zero: positive evidence red, negative blue) and
`magnitude` (sequential, from zero).

| style    | shows                                                   | family    |
| -------- | ------------------------------------------------------- | --------- |
| auto     | `signed` for attributions, `heatmap` for CAMs           |           |
| heatmap  | positive part of the channel sum; a CAM as stored       | magnitude |
| abs      | abs(channel sum)                                        | magnitude |
| signed   | channel sum, sign kept                                  | signed    |
| channels | one panel per input channel, sign kept (CAMs: one)      | signed    |
| overlay  | abs(channel sum) / CAM, alpha-blended on the image      | magnitude |
| contours | the overlay plus prediction (solid) and ground-truth    | magnitude |
|          | (dashed) mask outlines                                  |           |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_rgba
from matplotlib.patches import Rectangle

from xaicli.errors import XaiUsageError
from xaicli.render.maps import MapView
from xaicli.render.normalise import clip_value, to_display

if TYPE_CHECKING:
    from xaicli.render.scales import Scaler

STYLES = ("auto", "overlay", "heatmap", "signed", "abs", "channels", "contours")
PRED_COLOUR = "#ffffff"
TRUTH_COLOUR = "#ff00ff"
PRED_FILL = "#00c8ff"
CROP_COLOUR = "#ffd400"


@dataclass
class Context:
    """What every panel of one figure shares: the record's image and masks and the options."""

    image: np.ndarray | None
    pred: np.ndarray | None
    truth: np.ndarray | None
    cmap: str = "turbo"
    signed_cmap: str = "RdBu_r"
    alpha: float = 0.5
    clip: float = 98.0
    font: float = 7.0
    interpolation: str = "auto"     # "none" for PDF/SVG: images embedded at their own size, never resampled
    crop: tuple[float, float, float, float] | None = None   # the model's input box (top, left, bottom, right)


@dataclass
class Prepared:
    view: MapView
    style: str                      # resolved (never "auto")
    family: str                     # "signed" | "magnitude"
    planes: list[np.ndarray]
    threshold: float                # this map's own cumulative-mass clip value
    labels: list[str] = field(default_factory=list)   # per-plane captions (channels)
    row: int = 0                    # where the figure puts it: --scale row/col share by these
    col: int = 0


def check_style(style: str) -> str:
    if style not in STYLES:
        raise XaiUsageError(f"--style {style!r} is not a style; valid: {', '.join(STYLES)}")
    return style


def check_cmap(name: str, option: str = "--cmap") -> str:
    if name not in colormaps:
        valid = sorted((n for n in colormaps if not n.endswith("_r")), key=str.lower)
        raise XaiUsageError(f"{option} {name!r} is not a matplotlib colour map; valid: {', '.join(valid)} "
                            "(append _r to reverse any of them)")
    return name


def resolve(style: str, view: MapView) -> str:
    if style == "auto":
        return "heatmap" if view.kind == "cam" else "signed"
    if style == "channels" and view.channels == 1:
        return "heatmap" if view.kind == "cam" else "signed"
    return style


def prepare(view: MapView, style: str, clip: float) -> Prepared:
    """Display planes of `view` in `style` (CAMs are magnitudes: negatives are clipped to 0)."""
    style = resolve(check_style(style), view)
    labels: list[str] = []
    if style == "channels":
        planes = [np.asarray(c, dtype=np.float32) for c in view.values]
        names = ["R", "G", "B"] if len(planes) == 3 else [f"channel {i}" for i in range(len(planes))]
        labels, family = names, "signed"
    elif style == "signed":
        planes, family = [view.plane()], "signed"
    elif style == "abs":
        planes, family = [to_display(view.plane(), "abs")], "magnitude"
    elif style == "heatmap":
        planes, family = [to_display(view.plane(), "positive")], "magnitude"
    else:  # overlay, contours: how much evidence, whatever its sign
        plane = view.plane()
        planes = [to_display(plane, "positive" if view.kind == "cam" else "abs")]
        family = "magnitude"
    threshold = clip_value(np.concatenate([p.ravel() for p in planes]), clip)
    return Prepared(view, style, family, planes, threshold, labels)


def draw(axes: list[Axes], p: Prepared, scaler: "Scaler", ctx: Context) -> None:
    lo, hi, div = scaler.limits(p)
    cmap = colormaps[ctx.signed_cmap if p.family == "signed" else ctx.cmap]
    norm = Normalize(lo, hi)
    blend = p.style in ("overlay", "contours") and ctx.image is not None
    for ax, plane, label in zip(axes, p.planes, p.labels or [""] * len(p.planes)):
        data = np.clip(plane / div, lo, hi)
        if blend:
            show_image(ax, ctx.image, ctx.interpolation)
            ax.imshow(data, cmap=cmap, norm=norm, alpha=ctx.alpha, extent=extent(ctx.image.shape[:2]),
                      interpolation=ctx.interpolation)
        else:
            ax.imshow(data, cmap=cmap, norm=norm, interpolation=ctx.interpolation)
        if p.style == "contours":
            base = ctx.image.shape[:2] if blend else plane.shape
            if ctx.pred is not None:
                outline(ax, ctx.pred, base, PRED_COLOUR, "solid")
            if ctx.truth is not None:
                outline(ax, ctx.truth, base, TRUTH_COLOUR, "dashed")
        if label:
            ax.text(0.03, 0.97, label, transform=ax.transAxes, ha="left", va="top", fontsize=ctx.font * 0.8,
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
        ax.set_axis_off()


# -- images and masks ------------------------------------------------------------

def extent(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent of an HxW image, so layers of other sizes stretch onto it."""
    h, w = shape
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def show_image(ax: Axes, image: np.ndarray, interpolation: str = "auto") -> None:
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation=interpolation)
    else:
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation=interpolation)
    ax.set_axis_off()


def crop_box(ax: Axes, box: tuple[float, float, float, float]) -> None:
    """Outline the model's input box: pixel edges (top, left, bottom, right) on the image's pixel centres."""
    top, left, bottom, right = box
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                           edgecolor=CROP_COLOUR, linewidth=0.8, linestyle=(0, (3, 2))))
    ax.set_xlim(xlim)               # the image's extent, whatever the box
    ax.set_ylim(ylim)


def outline(ax: Axes, mask: np.ndarray, base: tuple[int, int], colour: str, linestyle: str) -> None:
    """Outline the non-zero region(s) of `mask`, scaled onto a base of shape `base`."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or min(mask.shape) < 2:
        return
    h, w = mask.shape
    bh, bw = base
    x = (np.arange(w) + 0.5) * bw / w - 0.5
    y = (np.arange(h) + 0.5) * bh / h - 0.5
    classes = [c for c in np.unique(mask) if c != 0]
    for c in classes:
        inside = (mask == c).astype(np.float32)
        if inside.min() == inside.max():
            continue
        ax.contour(x, y, inside, levels=[0.5], colors=[colour], linewidths=0.8, linestyles=linestyle)
    ax.set_xlim(-0.5, bw - 0.5)
    ax.set_ylim(bh - 0.5, -0.5)


def show_mask(ax: Axes, mask: np.ndarray, image: np.ndarray | None, colour: str, linestyle: str,
              interpolation: str = "auto") -> None:
    """A mask filled over the image (or over black when the record has no image), outlined."""
    mask = np.asarray(mask)
    base = image.shape[:2] if image is not None else mask.shape
    if image is not None:
        show_image(ax, image, interpolation)
    else:
        ax.imshow(np.zeros(mask.shape), cmap="gray", vmin=0.0, vmax=1.0, interpolation=interpolation)
    classes = [int(c) for c in np.unique(mask) if c != 0]
    rgba = np.zeros(mask.shape + (4,), np.float32)
    palette = colormaps["tab10"]
    for i, c in enumerate(classes):
        rgba[mask == c] = to_rgba(colour if len(classes) == 1 else palette(c % 10), 0.45)
    ax.imshow(rgba, extent=extent(base), interpolation=interpolation)
    outline(ax, mask, base, "white" if linestyle == "solid" else colour, linestyle)
    ax.set_axis_off()
