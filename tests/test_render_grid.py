"""The comparison grid as papers print it: facets on rows and columns, labels on the margins,
many records in one figure, scales by panel, row, column or figure, and the crop box."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

import make_render_reference as ref
from conftest import make_record

SMALL = {"dpi": 30.0, "panel_size": 1.0}


def opts(**kw):
    from xaicli.render import RenderOptions

    return RenderOptions(**{**SMALL, **kw}).checked()


def figures(records, **kw):
    """Every figure of `records` (one record: `jobs`; a list: `multi_jobs`), drawn but not saved."""
    from xaicli.render import jobs, multi_jobs

    o = opts(**kw)
    js = multi_jobs(records, o) if isinstance(records, list) else jobs(records, o)
    return [(j.name, j.build()) for j in js]


def axes_of(fig, role):
    return [ax for ax in fig.axes if (ax.get_gid() or "").startswith(role + ":")]


def cells(fig, what=lambda ax: ax.get_gid()):
    """Map panels as {(row, column): what(axes)}, rows top to bottom and columns left to right."""
    maps = axes_of(fig, "map")
    ys = sorted({round(ax.get_position().y0, 6) for ax in maps}, reverse=True)
    xs = sorted({round(ax.get_position().x0, 6) for ax in maps})
    return {(ys.index(round(ax.get_position().y0, 6)), xs.index(round(ax.get_position().x0, 6))): what(ax)
            for ax in maps}


def vmax(ax):
    return ax.images[0].norm.vmax


def texts(fig):
    return [(t, " ".join(t.get_text().split())) for t in fig.texts if t.get_text().strip()]


def blob(h=16, w=16, cy=5.0, cx=5.0, s=8.0):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s).astype(np.float32)


TARGET = [{"kind": "mask", "label": "blob", "index": 0}]


def cam_info(method, layer, targets=TARGET):
    return {"kind": "cam", "method": method, "layer": layer, "targets": targets}


def ig_info(baseline="black", targets=TARGET):
    return {"kind": "attribution", "method": "integrated_gradients", "baseline": baseline, "layer": None,
            "targets": targets, "steps": 8, "delta": [0.001] * len(targets)}


# -- one record: 3 methods x 3 layers ------------------------------------------------

def test_three_methods_by_three_layers_is_a_three_by_three_grid_with_labels_on_the_margins():
    rec = ref.methods_by_layers_record()
    ((name, fig),) = figures(rec, layout="grid")
    assert name == "cams__grid.png"
    # counted before saving: 9 map panels, the image once, one colour bar (CAMs: one family)
    assert (len(axes_of(fig, "map")), len(axes_of(fig, "image")), len(axes_of(fig, "colourbar"))) == (9, 1, 1)
    grid = cells(fig)
    assert sorted(grid) == [(i, j) for i in range(3) for j in range(3)]
    for (i, j), gid in grid.items():           # rows are the methods, columns the layers, in record order
        method = ("gradcam", "gradcam++", "layercam")[i]
        layer = ("encoder_mid", "encoder_last", "decoder_last")[j]
        assert gid.startswith(f"map:cam/{method}/{layer}:")
    (image,) = axes_of(fig, "image")
    maps = axes_of(fig, "map")
    left = min(ax.get_position().x0 for ax in maps)
    top = max(ax.get_position().y1 for ax in maps)
    assert image.get_position().x1 < left and image.get_position().y1 == pytest.approx(top)   # first row, left

    # labels only on the margins: every text is left of all panels or above the first row
    assert all(ax.get_title() == "" for ax in fig.axes)
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in maps + [image]]
    left, top = min(b.x0 for b in boxes), max(b.y1 for b in boxes)
    for t, _ in texts(fig):
        tb = t.get_window_extent(renderer)
        assert tb.x1 <= left + 1 or tb.y0 >= top - 1, t.get_text()
    assert len(texts(fig)) == 1 + 3 + 3 + 1        # header, 3 row labels, 3 column labels, the image's
    labels = dict((s, t) for t, s in texts(fig))
    for method in ("gradcam", "gradcam++", "layercam"):       # row labels: left of every panel, rotated
        t = labels[method]
        assert t.get_rotation() == 90 and t.get_window_extent(renderer).x1 < image.get_window_extent(renderer).x0
    for layer in ("encoder_mid", "encoder_last", "decoder_last"):   # column labels: above the first row
        assert labels[layer].get_window_extent(renderer).y0 >= max(b.y1 for b in boxes) - 1
    assert "cams · predicted area blob" in " ".join(labels) and "target blob" in " ".join(labels)   # the header


def test_defaults_for_attributions_and_for_a_mixed_record():
    pos = blob()
    two = [{"kind": "class", "label": "cat", "index": 0}, {"kind": "class", "label": "dog", "index": 1}]
    a = np.stack([np.stack([pos] * 3), np.stack([-pos] * 3)])
    rec = make_record(task="classification", labels=("cat", "dog"), maps={
        "attr/integrated_gradients/black": (a, ig_info("black", two)),
        "attr/integrated_gradients/blur": (a * 2, ig_info("blur", two))})
    ((_, fig),) = figures(rec, layout="grid")
    grid = cells(fig)           # rows = baselines, columns = targets
    assert grid[(0, 0)].startswith("map:attr/integrated_gradients/black:0") and \
        grid[(1, 1)].startswith("map:attr/integrated_gradients/blur:1")
    rec.add_map("cam/gradcam/layer4", np.stack([pos, pos]), cam_info("gradcam", "layer4", two))
    ((_, fig),) = figures(rec, layout="grid")
    grid = cells(fig)           # both kinds: rows = targets, one column per map
    assert sorted(grid) == [(i, j) for i in range(2) for j in range(3)]
    assert [grid[(1, j)].split(":")[1] for j in range(3)] == ["attr/integrated_gradients/black",
                                                             "attr/integrated_gradients/blur", "cam/gradcam/layer4"]


def test_a_key_that_varies_but_is_on_no_axis_goes_on_one():
    # 3 CAM methods at one layer, 2 targets: the default columns (layer) do not vary, so the targets take them
    two = [{"kind": "class", "label": "cat", "index": 0}, {"kind": "class", "label": "dog", "index": 1}]
    maps = {f"cam/{m}/layer4": (np.stack([blob(), blob(cx=10)]), cam_info(m, "layer4", two))
            for m in ("gradcam", "gradcam++", "layercam")}
    rec = make_record(task="classification", labels=("cat", "dog"), maps=maps)
    ((_, fig),) = figures(rec, layout="grid")
    assert sorted(cells(fig)) == [(i, j) for i in range(3) for j in range(2)]
    ((_, fig),) = figures(rec, layout="grid", rows=("method",), cols=("layer",))   # both given: the rest down
    assert sorted(cells(fig)) == [(i, 0) for i in range(6)]
    ((_, fig),) = figures(rec, layout="grid", rows=("target",))                  # only rows: the rest across
    assert sorted(cells(fig)) == [(i, j) for i in range(2) for j in range(3)]
    ((_, fig),) = figures(rec, layout="grid", styles=("heatmap", "overlay"), rows=("style", "target"),
                          cols=("method",))
    grid = cells(fig)
    assert len(grid) == 12 and grid[(0, 0)].endswith(":heatmap") and grid[(2, 0)].endswith(":overlay")


# -- many records in one figure ------------------------------------------------------------

def test_six_records_by_two_methods_is_one_figure_of_six_by_two_and_max_rows_cuts_it():
    recs = ref.scan_records()
    ((name, fig),) = figures(recs, layout="grid", rows=("record",), cols=("method",))
    assert name == "records__rows-record__cols-method__1.png"
    assert (len(axes_of(fig, "map")), len(axes_of(fig, "image"))) == (12, 6)   # the image once per row
    grid = cells(fig)
    assert sorted(grid) == [(i, j) for i in range(6) for j in range(2)]
    assert [grid[(i, 0)].split(":")[1] for i in range(6)] == ["attr/integrated_gradients/black"] * 6
    words = [s for _, s in texts(fig)]
    assert [w for w in words if w.startswith("scan_")] == [f"scan_{k} area blob 15.1%" for k in range(6)] or \
        [w.split()[0] for w in words if w.startswith("scan_")] == [f"scan_{k}" for k in range(6)]
    # IG's baseline and Grad-CAM's layer are one value per column: named under the method
    assert "integrated_gradients baseline black" in words and "gradcam layer4" in words

    parts = figures(recs, layout="grid", rows=("record",), cols=("method",), max_rows=4)
    assert [n for n, _ in parts] == ["records__rows-record__cols-method__1.png",
                                     "records__rows-record__cols-method__2.png"]
    assert [sorted({i for i, _ in cells(f)}) for _, f in parts] == [[0, 1, 2, 3], [0, 1]]
    assert [len(axes_of(f, "map")) for _, f in parts] == [8, 4]
    assert "part 2 of 2" in " ".join(s for _, s in texts(parts[1][1]))


def test_records_across_put_the_images_in_a_row_on_top():
    recs = ref.scan_records(3)
    ((_, fig),) = figures(recs, layout="grid", cols=("record",), rows=("method",))
    images, maps = axes_of(fig, "image"), axes_of(fig, "map")
    assert (len(images), len(maps)) == (3, 6)
    assert min(ax.get_position().y0 for ax in images) > max(ax.get_position().y1 for ax in maps)


def test_scales_shared_by_row_and_by_column_span_the_parts_of_a_figure():
    recs = ref.scan_records(4)         # IG grows with k (x1 ... x4); Grad-CAM stays

    ((_, fig),) = figures(recs, layout="grid", rows=("record",), cols=("method",), scale="row")
    limits = cells(fig, vmax)
    ig_rows = [limits[(i, 0)] for i in range(4)]
    assert ig_rows == pytest.approx(sorted(ig_rows)) and ig_rows[3] == pytest.approx(4 * ig_rows[0], rel=1e-3)
    assert len({round(limits[(i, 1)], 9) for i in range(4)}) > 1   # each row its own limit, Grad-CAM's too
    labels = [ax.get_ylabel() for ax in axes_of(fig, "colourbar")]
    assert len(labels) == 8 and set(labels) == {"signed, shared per row", "magnitude, shared per row"}

    parts = figures(recs, layout="grid", rows=("record",), cols=("method",), scale="col", max_rows=2)
    ig = [v for _, f in parts for (_, j), v in cells(f, vmax).items() if j == 0]
    assert len(ig) == 4 and len(set(ig)) == 1                 # one limit for the column, in both parts
    bars = axes_of(parts[1][1], "colourbar")
    assert len(bars) == 2 and {ax.get_xlabel() for ax in bars} == {"signed, shared per column",
                                                                   "magnitude, shared per column"}

    ((_, shared),) = figures(recs, layout="grid", rows=("record",), cols=("method",), scale="shared")
    assert len({round(v, 9) for (_, j), v in cells(shared, vmax).items() if j == 0}) == 1
    assert len(axes_of(shared, "colourbar")) == 2
    ((_, panel),) = figures(recs, layout="grid", rows=("record",), cols=("method",), scale="per-map")  # old name
    assert set(cells(panel, vmax).values()) == {1.0}
    assert {ax.get_ylabel() for ax in axes_of(panel, "colourbar")} == {"signed, per panel (÷ its clip value)",
                                                                       "magnitude, per panel (÷ its clip value)"}


def test_the_same_record_twice_is_one_row():
    recs = ref.scan_records(2)
    ((_, fig),) = figures(recs + [recs[0]], layout="grid", rows=("record",), cols=("method",))
    assert len(axes_of(fig, "map")) == 4


# -- bad combinations ------------------------------------------------------------------

@pytest.mark.parametrize("kw,words", [
    ({"rows": ("method",), "cols": ("method",)}, ["--rows and --cols both name method",
                                                  "method, layer, baseline, target, record, style"]),
    ({"rows": ("methods",)}, ["--rows 'methods' is not a key", "method, layer, baseline, target, record, style"]),
    ({"cols": ("layer", "layer")}, ["--cols names layer twice"]),
])
def test_bad_axes_are_usage_errors(kw, words):
    from xaicli.errors import XaiUsageError

    with pytest.raises(XaiUsageError) as err:
        opts(layout="grid", **kw)
    for w in words:
        assert w in str(err.value)


def test_a_key_the_records_do_not_have_lists_the_valid_ones():
    from xaicli.errors import XaiUsageError

    with pytest.raises(XaiUsageError, match=r"--rows baseline: no map of record cams has a baseline .*"
                                            r"valid here: method, layer, target, record, style$"):
        figures(ref.methods_by_layers_record(), layout="grid", rows=("baseline",))


# -- the crop box of the model's input ---------------------------------------------------

def cropped(box, size=(32, 36)):
    rec = make_record("crop", size=size, maps={"cam/gradcam/layer4": (blob(*size)[None], cam_info("gradcam", "l4"))})
    rec.arrays["image"] = np.full(size + (3,), 90, np.uint8)
    rec.meta["preprocessing"] = {"crop": box}
    return rec


def crop_rectangles(fig):
    from matplotlib.patches import Rectangle

    (image,) = axes_of(fig, "image")
    return [p for p in image.patches if isinstance(p, Rectangle) and not p.get_fill()]


@pytest.mark.parametrize("layout", ["panel", "grid"])
def test_the_models_crop_box_is_outlined_on_the_image(layout, tmp_path):
    ((_, fig),) = figures(cropped([4.0, 6.0, 28.0, 30.0]), layout=layout)
    (box,) = crop_rectangles(fig)
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (5.5, 3.5, 24.0, 24.0)
    offset, dashes = box.get_linestyle()
    assert dashes and box.get_linewidth() < 1.5                   # a thin dashed line ...
    assert to_hex(box.get_edgecolor()) not in ("#ffffff", "#ff00ff")   # ... unlike the mask outlines
    (image,) = axes_of(fig, "image")
    assert image.get_xlim() == (-0.5, 35.5) and image.get_ylim() == (31.5, -0.5)   # the whole image still shown
    assert "model input: crop box" in " ".join(s for _, s in texts(fig))
    for box in ([0, 0, 32, 36], None, [0, 0, 32], "centre"):     # the whole image, no crop, malformed: nothing
        ((_, fig),) = figures(cropped(box), layout=layout)
        assert crop_rectangles(fig) == [] and "crop box" not in " ".join(s for _, s in texts(fig))
