"""Images as displayed: PNG/JPEG/BMP/TIFF/DICOM into uint8/uint16, HxW or HxWx3."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers_models import write_dicom, write_png
from PIL import Image

from xaicli.errors import XaiError
from xaicli.io.images import read_image

RNG = np.random.default_rng(42)
G8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
G16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
RGBA8 = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
RGBA16 = RNG.integers(0, 65536, (20, 30, 4), dtype=np.uint16)
_YY, _XX = np.mgrid[0:20, 0:30]
SMOOTH = np.stack([_YY * 12, _XX * 8, 255 - _XX * 8], -1).astype(np.uint8)  # JPEG keeps gradients close


@pytest.mark.parametrize("name, pixels, expected", [
    ("gray8.png", G8, G8),
    ("gray16.png", G16, G16),
    ("rgb8.png", RGB8, RGB8),
    ("rgba8.png", RGBA8, RGBA8[..., :3]),
    ("rgb16.png", RGB16, RGB16),
    ("rgba16.png", RGBA16, RGBA16[..., :3]),
    ("graya8.png", np.stack([G8, RGB8[..., 0]], -1), G8),
])
def test_png_bit_depths_and_channels(tmp_path, name, pixels, expected):
    path = write_png(tmp_path / name, pixels)
    img = read_image(path)
    assert img.dtype == expected.dtype and img.shape == expected.shape
    np.testing.assert_array_equal(img, expected)


@pytest.mark.parametrize("name, pixels", [
    ("gray.bmp", G8), ("rgb.bmp", RGB8),
    ("gray8.tif", G8), ("gray16.tiff", G16), ("rgb.tif", RGB8),
])
def test_bmp_and_tiff(tmp_path, name, pixels):
    Image.fromarray(pixels).save(tmp_path / name)
    img = read_image(tmp_path / name)
    assert img.dtype == pixels.dtype
    np.testing.assert_array_equal(img, pixels)


def test_rgba_tiff_drops_alpha(tmp_path):
    Image.fromarray(RGBA8).save(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif"), RGBA8[..., :3])


@pytest.mark.parametrize("pixels, mode", [(SMOOTH, "RGB"), (SMOOTH[..., 1], "L")])
def test_jpeg_matches_an_independent_decode(tmp_path, pixels, mode):
    path = tmp_path / "img.jpg"
    Image.fromarray(pixels, mode).save(path, quality=90)
    with Image.open(path) as im:
        decoded = np.asarray(im.convert(mode))
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == pixels.shape
    np.testing.assert_array_equal(img, decoded)
    assert np.abs(img.astype(int) - pixels.astype(int)).mean() < 8  # it is the same picture


def test_palette_png_is_expanded_to_rgb(tmp_path):
    im = Image.fromarray(RGB8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.save(tmp_path / "pal.png")
    expected = np.asarray(im.convert("RGB"))
    img = read_image(tmp_path / "pal.png")
    assert img.shape == (20, 30, 3)
    np.testing.assert_array_equal(img, expected)


def test_dicom_monochrome2_uint16(tmp_path):
    raw = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 7 + 100)
    img = read_image(write_dicom(tmp_path / "scan.dcm", raw))
    assert img.dtype == np.uint16 and img.shape == (12, 10)
    expected = np.round((raw.astype(float) - raw.min()) / (raw.max() - raw.min()) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(img, expected)


def test_dicom_monochrome1_is_inverted_and_rescale_applied(tmp_path):
    raw = np.tile(np.arange(10, dtype=np.uint16) * 100, (4, 1))
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", raw, slope=-1.0, intercept=1000.0))
    assert mono2[0, 0] == 65535 and mono2[0, -1] == 0  # slope -1 turns the ramp round
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1"))
    assert mono1[0, 0] == 65535 and mono1[0, -1] == 0  # MONOCHROME1: low values are white
    assert np.all(np.diff(mono1[0].astype(int)) < 0)


@pytest.mark.parametrize("content", [b"just some text\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, b""])
def test_non_images_are_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(XaiError, match="cannot read"):
        read_image(path)


def test_garbage_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"DICM? no" * 50)
    with pytest.raises(XaiError, match="DICOM"):
        read_image(tmp_path / "bad.dcm")


def test_max_pixels_refuses_large_images(tmp_path):
    path = write_png(tmp_path / "big.png", G8)
    with pytest.raises(XaiError, match="max-pixels"):
        read_image(path, max_pixels=100)
    assert read_image(path, max_pixels=600).shape == (20, 30)


# -- through a model ------------------------------------------------------------------

def _records(stdout: bytes) -> dict:
    """Records of a stream by their source file name."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(stdout)) as t:
        for m in t.getmembers():
            with np.load(t.extractfile(m), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(str(arrays["meta"][()]))
            out[Path(meta["source"]["path"]).name] = arrays
    return out


def test_gray_is_replicated_for_a_three_channel_model(cli, tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    write_png(tmp_path / "gray.png", gray)
    write_png(tmp_path / "rgb.png", np.stack([gray] * 3, -1))
    write_png(tmp_path / "deep.png", gray.astype(np.uint16) * 257)  # the same picture in 16 bit
    Image.fromarray(gray).save(tmp_path / "gray.tif")
    r = cli(["predict", "-m", "builtin:shapes-seg", tmp_path / "gray.png", tmp_path / "rgb.png",
             tmp_path / "deep.png", tmp_path / "gray.tif"])
    assert r.exit_code == 0, r.stderr
    recs = _records(r.stdout)
    assert recs["gray.png"]["image"].shape == (64, 64) and recs["gray.png"]["image"].dtype == np.uint8
    assert recs["deep.png"]["image"].dtype == np.uint16
    np.testing.assert_array_equal(recs["rgb.png"]["image"], np.stack([gray] * 3, -1))
    ref = recs["rgb.png"]["pred/logits"]
    assert ref.shape == (1, 64, 64)
    for name in ("gray.png", "deep.png", "gray.tif"):
        # 16-bit values scale to [0, 1] with their own float32 rounding, a last-bit difference
        # the net amplifies: on an H200 logits moved by 1.2e-5, near zero as well as at 3.6
        np.testing.assert_allclose(recs[name]["pred/logits"], ref, rtol=0, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=name)


def test_dicom_through_the_cli_keeps_16_bit(cli, tmp_path):
    raw = (np.random.default_rng(5).integers(0, 4096, (64, 64))).astype(np.uint16)
    path = write_dicom(tmp_path / "scan.dcm", raw)
    r = cli(["predict", "-m", "builtin:shapes-seg", path])
    assert r.exit_code == 0, r.stderr
    rec = _records(r.stdout)["scan.dcm"]
    assert rec["image"].dtype == np.uint16 and rec["image"].shape == (64, 64)
    assert rec["pred/mask"].shape == (64, 64)
