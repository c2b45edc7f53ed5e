"""xai render as a library: normalisation, styles, layouts, sizes, and the stored reference figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_record

DPI = 30.0
SMALL = {"dpi": DPI, "panel_size": 1.0}


def opts(**kw):
    from xaicli.render import RenderOptions

    return RenderOptions(**{**SMALL, **kw}).checked()


def build(record, **kw):
    """Every figure of `record` as (name, Figure), drawn but not saved."""
    from xaicli.render import jobs

    return [(j.name, j.build()) for j in jobs(record, opts(**kw))]


def roles(fig) -> list[str]:
    return [ax.get_gid().split(":")[0] for ax in fig.axes if ax.get_gid()]


def map_axes(fig):
    return [ax for ax in fig.axes if (ax.get_gid() or "").startswith("map:")]


def targets(*labels):
    return [{"kind": "class", "label": lab, "index": i} for i, lab in enumerate(labels)]


def ig_info(labels=("blob",), **extra):
    return {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
            "targets": targets(*labels), "steps": 32, "delta": [0.0012] * len(labels), **extra}


def cam_info(method="gradcam", layer="layer4", labels=("blob",)):
    return {"kind": "cam", "method": method, "layer": layer, "targets": targets(*labels)}


def blobs(h=16, w=16):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    pos = np.exp(-((yy - h / 4) ** 2 + (xx - w / 4) ** 2) / (h / 2))
    neg = np.exp(-((yy - 3 * h / 4) ** 2 + (xx - 3 * w / 4) ** 2) / (h / 2))
    return pos, neg


def save_png(fig, path: Path, o) -> np.ndarray:
    """Save with the library (atomic write) and read the pixels back as float RGB in [0, 1]."""
    import matplotlib.image

    from xaicli.render import save

    save(fig, path, o)
    return matplotlib.image.imread(path)[..., :3]


def crop(pixels: np.ndarray, fig, ax) -> np.ndarray:
    """The pixels of one axes (inner part, frame excluded); valid after the figure was saved."""
    bb = ax.get_window_extent()
    h = pixels.shape[0]
    return pixels[int(h - bb.y1) + 2: int(h - bb.y0) - 2, int(bb.x0) + 2: int(bb.x1) - 2]


def reds(px):
    return (px[..., 0] > 0.6) & (px[..., 0] - px[..., 2] > 0.3)


def blues(px):
    return (px[..., 2] > 0.6) & (px[..., 2] - px[..., 0] > 0.3)


# -- normalisation ------------------------------------------------------------

def test_clip_value_follows_the_cumulative_mass_rule():
    from xaicli.render.normalise import clip_value

    # sorted |v| = 1,1,1,1,96: cumulative 1,2,3,4,100
    v = np.array([1.0, -96.0, 1.0, -1.0, 1.0])
    assert clip_value(v, 98) == 96.0          # 98 % of 100 is first reached by the last value
    assert clip_value(v, 4) == 1.0            # 4 % is reached at the fourth value
    assert clip_value(v, 100) == 96.0
    ones = np.ones(1024)
    ones[0] = 10.0                            # one outlier among many small values is clipped
    assert clip_value(ones, 98) == 1.0
    assert clip_value(np.zeros(5), 98) == 0.0
    assert clip_value(np.array([np.nan, 2.0, np.inf]), 100) == 2.0


def test_clip_value_matches_captum():
    """Captum's own threshold function is the oracle for the rule (same |values|, same percentile)."""
    viz = pytest.importorskip("captum.attr._utils.visualization")
    from xaicli.render.normalise import clip_value

    rng = np.random.default_rng(3)
    for shape, p in [((7, 9), 98), ((32, 32), 90), ((3, 5, 5), 99.5), ((100,), 50)]:
        v = rng.standard_cauchy(shape)
        assert clip_value(v, p) == pytest.approx(float(viz._cumulative_sum_threshold(np.abs(v), p)))


def test_attribution_is_summed_over_channels_with_sign():
    from xaicli.render.maps import views

    a = np.zeros((1, 3, 4, 4), np.float32)
    a[0, 0, 0, 0], a[0, 1, 0, 0], a[0, 2, 0, 0] = 1.0, 2.0, -4.0
    rec = make_record(size=(4, 4), maps={"attr/integrated_gradients/black": (a, ig_info())})
    (view,) = views(rec)
    assert view.plane()[0, 0] == pytest.approx(-1.0)


# -- the signed style ---------------------------------------------------------

@pytest.mark.parametrize("both_signs", [True, False])
def test_signed_style_shows_red_for_positive_and_blue_for_negative(tmp_path, both_signs):
    pos, neg = blobs(24, 24)
    plane = pos - neg if both_signs else pos + 0.2 * neg
    attr = np.repeat(plane[None, None] / 3, 3, axis=1).astype(np.float32)
    rec = make_record(size=(24, 24), image=False, maps={"attr/integrated_gradients/black": (attr, ig_info())})
    o = opts(layout="grid", styles=("signed",), dpi=60)
    (_, fig), = build(rec, layout="grid", styles=("signed",), dpi=60)
    pixels = save_png(fig, tmp_path / "f.png", o)
    (ax,) = map_axes(fig)
    px = crop(pixels, fig, ax)
    assert reds(px).sum() > 20
    if both_signs:
        assert blues(px).sum() > 20
    else:
        assert blues(px).sum() == 0


def test_signed_cam_is_red_only(tmp_path):
    pos, neg = blobs()
    rec = make_record(image=False, maps={"cam/gradcam/layer4": ((pos + neg)[None], cam_info())})
    (_, fig), = build(rec, layout="grid", styles=("signed",), dpi=60)
    px = crop(save_png(fig, tmp_path / "f.png", opts(dpi=60)), fig, map_axes(fig)[0])
    assert reds(px).sum() > 10 and blues(px).sum() == 0


def test_overlay_blends_the_map_on_the_image_and_contours_outline_the_masks():
    pos, _ = blobs()
    gt = np.zeros((16, 16), np.uint8)
    gt[1:6, 1:6] = 1
    rec = make_record(maps={"cam/gradcam/layer4": (pos[None], cam_info())})
    rec.arrays["gt/mask"] = gt
    (_, fig), = build(rec, layout="grid", styles=("overlay", "contours"), alpha=0.3)
    overlay, contours = map_axes(fig)
    for ax in (overlay, contours):
        assert len(ax.images) == 2 and ax.images[1].get_alpha() == 0.3     # image, then the map
    assert len(overlay.collections) == 0
    styles = {tuple(np.ravel(c.get_linestyle()[0][1] or ())) != () for c in contours.collections}
    assert len(contours.collections) == 2 and styles == {False, True}      # prediction solid, truth dashed


# -- layouts ------------------------------------------------------------------

def three_methods_two_targets(**kw):
    pos, neg = blobs()
    two = ("cat", "dog")
    attr = np.stack([np.stack([pos - neg] * 3), np.stack([neg - pos] * 3)]).astype(np.float32)
    cams = np.stack([pos, neg]).astype(np.float32)
    return make_record(task="classification", labels=("cat", "dog"), maps={
        "attr/integrated_gradients/black": (attr, ig_info(two)),
        "cam/gradcam/layer4": (cams, cam_info("gradcam", "layer4", two)),
        "cam/gradcam++/layer4": (cams ** 2, cam_info("gradcam++", "layer4", two)),
    }, **kw)


def test_grid_of_three_methods_by_two_targets_has_six_map_panels():
    (name, fig), = build(three_methods_two_targets(), layout="grid")
    assert name == "r1__grid.png"
    maps = map_axes(fig)
    assert len(maps) == 6
    slots = {tuple(ax.get_gid().split(":")[1:3]) for ax in maps}
    assert slots == {(k, t) for k in ("attr/integrated_gradients/black", "cam/gradcam/layer4",
                                      "cam/gradcam++/layer4") for t in ("0", "1")}
    assert roles(fig).count("image") == 1                  # the image heads the first row only
    assert roles(fig).count("colourbar") == 2              # signed (IG) and magnitude (CAMs)


def test_grid_rows_multiply_by_styles():
    (name, fig), = build(three_methods_two_targets(), layout="grid", styles=("signed", "abs"))
    assert name == "r1__grid__signed+abs.png"
    assert len(map_axes(fig)) == 12


def test_standard_panel_has_one_row_per_map_and_target_and_the_record_once():
    (name, fig), = build(three_methods_two_targets())
    assert name == "r1.png"
    r = roles(fig)
    # 6 rows of map | overlay; the original and the prediction (top classes) once, in the first row
    assert (r.count("image"), r.count("map"), r.count("prediction"), r.count("overlay"), r.count("truth")) \
        == (1, 6, 1, 6, 0)
    top = max(ax.get_position().y0 for ax in map_axes(fig))
    for role in ("image", "prediction"):
        (ax,) = [a for a in fig.axes if (a.get_gid() or "").startswith(role + ":")]
        assert ax.get_position().y0 >= top - 1e-9       # in the first row (bars sit inset in it)
    assert len({round(ax.get_position().x0, 6) for ax in map_axes(fig)}) == 1   # one column of maps


def test_panel_of_a_segmenter_with_ground_truth():
    pos, _ = blobs()
    gt = np.zeros((16, 16), np.uint8)
    gt[2:9, 2:9] = 1
    rec = make_record(maps={"cam/gradcam/layer4": (pos[None], cam_info())})
    rec.arrays["gt/mask"] = gt
    (_, fig), = build(rec)
    assert roles(fig)[:5] == ["image", "map", "prediction", "truth", "overlay"]


def test_channels_style_gives_one_panel_per_input_channel():
    pos, neg = blobs()
    attr = np.stack([pos, -neg, pos - neg])[None].astype(np.float32)
    rec = make_record(maps={"attr/integrated_gradients/black": (attr, ig_info()),
                            "cam/gradcam/layer4": (pos[None], cam_info())})
    (_, fig), = build(rec, layout="grid", styles=("channels",))
    gids = [ax.get_gid() for ax in map_axes(fig)]
    assert sum(g.startswith("map:attr/") for g in gids) == 3
    assert sum(g.startswith("map:cam/") for g in gids) == 1


def test_split_gives_one_figure_per_map_and_target_with_safe_names():
    pos, neg = blobs()
    rec = make_record("scan 1", maps={
        "attr/integrated_gradients/black": (np.stack([np.stack([pos] * 3)] * 2),
                                            ig_info(("a/b c", "a/b c"))),
        "cam/gradcam++/encoder.layer4.1": (pos[None], cam_info("gradcam++", "encoder.layer4.1")),
    })
    names = [n for n, _ in build(rec, split=True)]
    assert names == ["scan_1__integrated_gradients__black__a_b_c.png",
                     "scan_1__integrated_gradients__black__a_b_c-2.png",
                     "scan_1__gradcam++__encoder.layer4.1__blob.png"]
    names = [n for n, _ in build(rec, split=True, layout="grid", styles=("overlay",), fmt="svg")]
    assert names[-1] == "scan_1__gradcam++__encoder.layer4.1__blob__grid__overlay.svg"
    assert names[1] == "scan_1__integrated_gradients__black__a_b_c-2__grid__overlay.svg"   # numbered on the target


def test_record_without_image_renders_the_maps_alone(tmp_path):
    pos, neg = blobs()
    rec = make_record(image=False, maps={"attr/integrated_gradients/black":
                                         (np.stack([pos - neg] * 3)[None].astype(np.float32), ig_info())})
    (_, fig), = build(rec, styles=("signed", "overlay", "contours"))
    r = roles(fig)
    assert "image" not in r and "overlay" not in r
    assert r.count("map") == 3
    px = save_png(fig, tmp_path / "f.png", opts())
    assert px.var() > 1e-3


def test_gray_16_bit_image(tmp_path):
    pos, _ = blobs()
    rec = make_record(maps={"cam/gradcam/layer4": (pos[None], cam_info())})
    rec.arrays["image"] = (np.linspace(0, 65535, 256).reshape(16, 16)).astype(np.uint16)
    (_, fig), = build(rec)
    image_ax = next(ax for ax in fig.axes if ax.get_gid() == "image:original")
    assert image_ax.images[0].get_array().max() == pytest.approx(1.0)      # uint16 scaled to [0, 1]
    assert save_png(fig, tmp_path / "g.png", opts()).var() > 1e-3


def test_record_without_maps_shows_original_prediction_and_truth():
    rec = make_record()
    rec.arrays["gt/mask"] = rec.arrays["pred/mask"]
    (name, fig), = build(rec, split=True)
    assert name == "r1.png"
    assert roles(fig) == ["image", "prediction", "truth"]


def test_grid_without_maps_and_empty_record_are_clear_errors():
    from xaicli.errors import XaiError
    from xaicli.io.record import Record

    with pytest.raises(XaiError, match="no maps"):
        build(make_record(), layout="grid")
    with pytest.raises(XaiError, match="nothing to draw"):
        build(Record.new("empty"))


def test_tabular_attribution_is_a_sorted_bar_chart_with_feature_names():
    from matplotlib.colors import to_hex

    values = np.array([[0.5, -2.0, 3.0, 0.1, -0.3]], np.float32)
    names = ["age", "dose", "weight", "height", "sex"]
    rec = make_record(task="classification", labels=("no", "yes"), image=False,
                      maps={"attr/integrated_gradients/zeros": (values, ig_info(("yes",), feature_names=names))})
    (_, fig), = build(rec)
    (ax,) = map_axes(fig)
    bars = sorted(ax.patches, key=lambda p: -p.get_y())             # top to bottom
    assert [round(b.get_width(), 3) for b in bars] == [3.0, 0.5, 0.1, -0.3, -2.0]
    ticks = sorted(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]), key=lambda t: -t[0])
    assert [t for _, t in ticks] == ["weight", "age", "height", "sex", "dose"]
    assert to_hex(bars[0].get_facecolor()) != to_hex(bars[-1].get_facecolor())
    assert bars[0].get_facecolor()[0] > bars[0].get_facecolor()[2]     # positive: red
    assert bars[-1].get_facecolor()[2] > bars[-1].get_facecolor()[0]   # negative: blue


# -- titles -------------------------------------------------------------------

def all_text(fig) -> str:
    """Every title of the figure, line breaks from wrapping turned into spaces."""
    return " ".join(" ".join(t.get_text().split()) for t in fig.texts)


def test_titles_name_prediction_method_layer_target_and_ig_figures():
    rec = three_methods_two_targets()
    pred = rec.meta["prediction"]
    (_, fig), = build(rec)
    text = all_text(fig)
    assert f"{pred['label']} (p = {pred['confidence']:.2f})" in text
    assert "gradcam++ · layer4" in text and "target dog" in text
    assert "steps 32" in text and "δ 0.0012" in text and "baseline black" in text
    assert "% of ΔF" not in text                   # no relative delta stored, none shown


def test_ig_title_gives_the_delta_relative_to_the_score_change():
    pos, neg = blobs()
    rec = make_record(maps={"attr/integrated_gradients/black": (np.stack([pos - neg] * 3)[None].astype(np.float32),
                                                                 ig_info(relative_delta=[0.0022]))})
    (_, fig), = build(rec)
    assert "δ 0.0012 (0.22% of ΔF)" in all_text(fig)


def test_segmenter_title_gives_the_area_fraction():
    rec = make_record()                       # the mask covers a quarter of a quarter: 6.25 %
    (_, fig), = build(rec)
    assert "blob 6.2%" in all_text(fig)


# -- sizes --------------------------------------------------------------------

def test_png_pixel_size_is_dpi_times_figure_inches(tmp_path):
    rec = three_methods_two_targets()
    for dpi in (20.0, 45.0):
        (_, fig), = build(rec, dpi=dpi)
        w_in, h_in = fig.get_size_inches()
        px = save_png(fig, tmp_path / f"{dpi}.png", opts(dpi=dpi))
        assert abs(px.shape[1] - w_in * dpi) <= 1 and abs(px.shape[0] - h_in * dpi) <= 1
        assert px.var() > 1e-3                                    # not blank


def test_figure_size_is_fixed_in_inches_whatever_the_image_size():
    pos16, _ = blobs(16, 16)
    pos64, _ = blobs(64, 40)
    small = make_record(size=(16, 16), maps={"cam/gradcam/layer4": (pos16[None], cam_info())})
    large = make_record(size=(64, 40), maps={"cam/gradcam/layer4": (pos64[None], cam_info())})
    (_, a), = build(small)
    (_, b), = build(large)
    assert np.allclose(a.get_size_inches(), b.get_size_inches())
    (_, c), = build(small, panel_size=1.5)
    (_, d), = build(small, panel_size=3.0)
    assert np.allclose(d.get_size_inches(), 2 * c.get_size_inches())   # everything scales with the panel


# -- vector formats -----------------------------------------------------------

def _non_square_record():
    """A 48 (high) x 40 (wide) record: a figure that resampled it could not keep that shape by chance."""
    pos, _ = blobs(48, 40)
    return make_record(size=(48, 40), maps={"cam/gradcam/layer4": (pos[None], cam_info())})


def test_svg_embeds_maps_at_their_own_size_and_keeps_text_as_text(tmp_path):
    import base64
    import io
    import xml.etree.ElementTree as ET

    import matplotlib.image

    from xaicli.render import jobs, save

    o = opts(fmt="svg", dpi=300, layout="grid", styles=("heatmap", "overlay"))
    (job,) = jobs(_non_square_record(), o)
    save(job.build(), tmp_path / "f.svg", o)
    data = (tmp_path / "f.svg").read_bytes()
    root = ET.fromstring(data)
    svg = "{http://www.w3.org/2000/svg}"
    shapes = []
    for im in root.iter(svg + "image"):
        href = im.get("{http://www.w3.org/1999/xlink}href") or im.get("href")
        shapes.append(matplotlib.image.imread(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).shape[:2])
    # the image, the heatmap, and the overlay's image and map, each as its own 48x40 array (not composited,
    # not resampled to 300 dpi); the colour bar's gradient is the one other image
    assert shapes.count((48, 40)) == 4 and len(shapes) == 5
    words = " ".join(t.text or "" for t in root.iter(svg + "text"))
    assert "gradcam" in words and "layer4" in words and "target blob" in words
    assert b"DejaVuSans-" not in data                      # no glyphs drawn as paths


def test_pdf_embeds_maps_at_their_own_size_and_embeds_truetype_fonts(tmp_path):
    import re

    from xaicli.render import jobs, save

    o = opts(fmt="pdf", dpi=300, layout="grid")
    (job,) = jobs(_non_square_record(), o)
    save(job.build(), tmp_path / "f.pdf", o)
    data = (tmp_path / "f.pdf").read_bytes()
    sizes = re.findall(rb"/Subtype /Image[^>]*?/Width (\d+)[^>]*?/Height (\d+)", data)
    assert sizes.count((b"40", b"48")) == 2 and len(sizes) == 3     # image and map; the colour bar
    assert b"/FontFile2" in data and b"/Type3" not in data            # text stays text (Type 42), not glyph paths


# -- colour scale ------------------------------------------------------------

def test_scale_per_map_fills_each_map_and_shared_keeps_their_ratio():
    pos, _ = blobs()
    cams = np.stack([pos, 10 * pos]).astype(np.float32)
    rec = make_record(image=False, maps={"cam/gradcam/layer4": (cams, cam_info(labels=("a", "b")))})
    (_, per), = build(rec, layout="grid")
    (_, shared), = build(rec, layout="grid", scale="shared")
    per_max = [float(ax.images[0].get_array().max()) for ax in map_axes(per)]
    shared_max = [float(ax.images[0].get_array().max()) for ax in map_axes(shared)]
    assert per_max == [1.0, 1.0]
    assert shared_max[0] < 0.2 * shared_max[1]


# -- the stored reference figures -------------------------------------------------

def _reference_names():
    import make_render_reference as ref

    return list(ref.figures())


@pytest.mark.parametrize("name", _reference_names())
def test_figures_match_the_stored_references(tmp_path, name):
    """Regenerate only on purpose: `make reference-images` (tests/make_render_reference.py)."""
    from matplotlib.testing.compare import compare_images

    import make_render_reference as ref

    new = ref.render_reference(name, tmp_path)
    stored = sorted(ref.DATA.glob(name.replace("{part}", "*")))
    assert [p.name for p in stored] == [p.name for p in new], "reference images differ: run `make reference-images`"
    for old, fresh in zip(stored, new):
        assert old.stat().st_size < 100_000
        assert compare_images(str(old), str(fresh), tol=1.0) is None   # alpha 0.5 → 0.6 is RMS 2.5
