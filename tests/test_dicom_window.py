"""DICOM as a viewer shows it: modality rescale, then the file's VOI LUT or window (or --window),
checked against pydicom's own functions and the closed form of DICOM PS3.3 C.11.2.1.2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_models import stream_records, write_dicom

from xaicli.io.images import Window, parse_window, read_image_and_window

pydicom = pytest.importorskip("pydicom")

RNG = np.random.default_rng(7)
# CT-like: int16 stored values, HU = stored - 1024, air to bone
STORED = RNG.integers(0, 3000, (24, 20)).astype(np.int16)
INTERCEPT = -1024.0
# pydicom's output range for a signed 16-bit image after the rescale (what lies below / above a window)
Y_MIN, Y_MAX = -32768 + INTERCEPT, 32767 + INTERCEPT


def ct(path, **elements):
    """The CT-like file, soft-tissue window first (center 40, width 400 HU), bone second."""
    elements = {"WindowCenter": [40, 500], "WindowWidth": [400, 2000],
                "WindowCenterWidthExplanation": ["SOFT TISSUE", "BONE"], **elements}
    return write_dicom(path, STORED, slope=1.0, intercept=INTERCEPT, **elements)


def linear_window(hu, center, width):
    """PS3.3 C.11.2.1.2.1 (VOI LUT Function LINEAR) as a fraction of the output range."""
    c, w = center - 0.5, width - 1
    return np.clip((hu - c) / w + 0.5, 0.0, 1.0)


def pydicom_display(path, **override):
    """pydicom's modality LUT then VOI LUT / window on the file, mapped from its output range to 0-65535."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    for k, v in override.items():
        setattr(ds, k, v)
    voi = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    return np.round((voi - Y_MIN) / (Y_MAX - Y_MIN) * 65535).astype(np.uint16)


def test_ct_soft_tissue_window_is_pydicoms(tmp_path):
    path = ct(tmp_path / "ct.dcm")
    img, used = read_image_and_window(path)
    assert img.dtype == np.uint16 and img.shape == STORED.shape
    np.testing.assert_array_equal(img, pydicom_display(path))
    hu = STORED.astype(float) + INTERCEPT
    expected = np.round(linear_window(hu, 40, 400) * 65535)
    assert np.abs(img - expected).max() <= 1                 # the closed form, up to pydicom's float rounding
    assert (img[hu <= 40 - 200] == 0).all() and (img[hu > 40 + 200] == 65535).all()
    assert 0 < (img[(hu > -100) & (hu < 180)]).min() and img[(hu > -100) & (hu < 180)].max() < 65535
    assert used == {"from": "file", "center": 40.0, "width": 400.0, "function": "LINEAR",
                    "explanation": "SOFT TISSUE"}


def test_window_option_overrides_the_file(tmp_path):
    path = ct(tmp_path / "ct.dcm")
    img, used = read_image_and_window(path, window=parse_window("500,2000"))
    np.testing.assert_array_equal(img, pydicom_display(path, WindowCenter=500, WindowWidth=2000))
    assert used == {"from": "option", "center": 500.0, "width": 2000.0, "function": "LINEAR"}


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_the_files_voi_lut_function_is_kept(tmp_path, function):
    path = ct(tmp_path / "ct.dcm", VOILUTFunction=function)
    img, used = read_image_and_window(path)
    np.testing.assert_array_equal(img, pydicom_display(path))
    assert used["function"] == function


def test_minmax_keeps_the_stretch(tmp_path):
    path = ct(tmp_path / "ct.dcm")
    img, used = read_image_and_window(path, window=Window("minmax"))
    hu = STORED.astype(float) + INTERCEPT
    np.testing.assert_array_equal(img, np.round((hu - hu.min()) / (hu.max() - hu.min()) * 65535).astype(np.uint16))
    assert used == {"from": "minmax", "center": (hu.min() + hu.max()) / 2, "width": hu.max() - hu.min()}


def test_monochrome1_still_inverts(tmp_path):
    mono2, _ = read_image_and_window(ct(tmp_path / "m2.dcm"))
    mono1, used = read_image_and_window(ct(tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_array_equal(mono1, 65535 - mono2)       # the window first, then low values white
    assert used["from"] == "file"


def test_voi_lut_sequence_is_preferred_over_the_window(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4096, -1024, 16]                     # 4096 entries from HU -1024, 16-bit output
    item.LUTData = np.linspace(0, 65535, 4096).astype("<u2").tobytes()
    item.LUTExplanation = "RAMP"
    path = ct(tmp_path / "lut.dcm", VOILUTSequence=[item])
    img, used = read_image_and_window(path)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    ref = apply_voi_lut(np.round(apply_modality_lut(ds.pixel_array, ds)).astype(np.int64), ds)
    np.testing.assert_array_equal(img, ref.astype(np.uint16))  # a 16-bit LUT: its levels are the image's
    ramp = np.linspace(0, 65535, 4096).astype(np.uint16)
    np.testing.assert_array_equal(img, ramp[STORED])            # entry HU + 1024 = the stored value
    assert used == {"from": "file", "center": None, "width": None, "lut": "RAMP"}


@pytest.mark.parametrize("elements", [{}, {"WindowCenter": None, "WindowWidth": None}])   # absent, or empty
def test_no_window_falls_back_to_minmax_and_says_so(tmp_path, caplog, elements):
    path = write_dicom(tmp_path / "plain.dcm", STORED.astype(np.uint16), slope=2.0, intercept=-10.0, **elements)
    with caplog.at_level("INFO", logger="xai"):
        img, used = read_image_and_window(path)
    v = STORED.astype(float) * 2 - 10
    np.testing.assert_array_equal(img, np.round((v - v.min()) / (v.max() - v.min()) * 65535).astype(np.uint16))
    assert used["from"] == "minmax"
    assert "plain.dcm: no VOI LUT or window in the file; stretched min to max" in caplog.text


@pytest.mark.parametrize("text", ["40", "40,0", "40,-5", "a,b", "40,400,1", "nan,400", "40,inf", ""])
def test_bad_window_values_are_refused(text):
    from xaicli.errors import XaiUsageError

    with pytest.raises(XaiUsageError, match="CENTER,WIDTH"):
        parse_window(text)


# -- through the commands: stored in the record, -v, one-line usage errors --------------------------

SEG = "builtin:shapes-seg"


def test_predict_stores_the_window_and_reports_the_fallback(cli, tmp_path):
    ct(tmp_path / "ct.dcm")
    write_dicom(tmp_path / "plain.dcm", STORED.astype(np.uint16))
    r = cli(["-v", "predict", "-m", SEG, str(tmp_path / "ct.dcm"), str(tmp_path / "plain.dcm")])
    assert r.exit_code == 0, r.stderr
    recs = {rec["meta"]["id"]: rec for rec in stream_records(r.stdout)}
    assert recs["ct"]["meta"]["source"]["window"]["center"] == 40.0
    np.testing.assert_array_equal(recs["ct"]["image"], pydicom_display(tmp_path / "ct.dcm"))
    assert recs["plain"]["meta"]["source"]["window"]["from"] == "minmax"
    assert "plain.dcm: no VOI LUT or window in the file; stretched min to max" in r.stderr
    assert "ct.dcm: no VOI" not in r.stderr
    r = cli(["predict", "-m", SEG, "--json", "--window", "minmax", str(tmp_path / "ct.dcm")])
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == "ct"


def test_window_option_reaches_every_image_command(cli, tmp_path):
    ct(tmp_path / "ct.dcm")
    r = cli(["predict", "-m", SEG, "--window", "500,2000", str(tmp_path / "ct.dcm")])
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["source"]["window"] == {"from": "option", "center": 500.0, "width": 2000.0,
                                               "function": "LINEAR"}
    for command, extra in (("attribute", ["--steps", "2"]), ("cam", [])):
        r = cli([command, "-m", SEG, "--window", "500,2000", *extra, str(tmp_path / "ct.dcm")])
        assert r.exit_code == 0, r.stderr
        (other,) = stream_records(r.stdout)
        np.testing.assert_array_equal(other["image"], rec["image"])
        assert other["meta"]["source"]["window"] == rec["meta"]["source"]["window"]


def test_png_sources_have_no_window(cli, tmp_path):
    from helpers_models import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (rec,) = stream_records(cli(["predict", "-m", SEG, str(tmp_path / "a.png")]).stdout)
    assert "window" in rec["meta"]["source"] and rec["meta"]["source"]["window"] is None


@pytest.mark.parametrize("command", ["predict", "attribute", "cam"])
def test_bad_window_is_a_usage_error(cli, tmp_path, command):
    from conftest import error_line

    path = ct(tmp_path / "ct.dcm")
    line = error_line(cli([command, "-m", SEG, "--window", "40", str(path)]), 2)
    assert "--window '40'" in line and "CENTER,WIDTH" in line
