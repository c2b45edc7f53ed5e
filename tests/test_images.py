"""Images as displayed: PNG/JPEG/BMP/TIFF/DICOM into uint8/uint16, HxW or HxWx3."""

from __future__ import annotations

import builtins
import io
import json
import os
import struct
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers_models import write_dicom, write_png
from PIL import Image, ImageOps

from xaicli.errors import XaiError
from xaicli.io.images import read_image
from conftest import npz_members

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


@pytest.mark.parametrize("mode, ext", [("CMYK", "jpg"), ("CMYK", "tif"), ("LAB", "tif"), ("YCbCr", "tif")])
def test_non_rgb_modes_are_converted_as_pillow_does(tmp_path, mode, ext):
    path = tmp_path / f"img.{ext}"
    Image.fromarray(SMOOTH).convert(mode).save(path)
    with Image.open(path) as im:
        assert im.mode == mode  # the file really holds these channels
        expected = np.asarray(im.convert("RGB"))
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == SMOOTH.shape
    np.testing.assert_array_equal(img, expected)
    assert np.abs(img.astype(int) - SMOOTH.astype(int)).mean() < 2  # the colours, not C, M, Y or L, a, b


def test_16_bit_rgb_tiff_keeps_16_bits(tmp_path):
    import imageio.v3 as iio

    with warnings.catch_warnings():  # imageio's note that its own tifffile copy is deprecated
        warnings.simplefilter("ignore")
        iio.imwrite(tmp_path / "rgb16.tif", RGB16)  # Pillow cannot write 16-bit colour
    img = read_image(tmp_path / "rgb16.tif")
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img, RGB16)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _pillow_upright(path: Path) -> np.ndarray:
    """The image as Pillow shows it: ImageOps.exif_transpose."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB") if im.mode == "CMYK" else ImageOps.exif_transpose(im))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("name, pixels, mode", [
    ("rgb.png", RGB8, None), ("gray16.png", G16, None), ("rgb.jpg", SMOOTH, None), ("cmyk.jpg", SMOOTH, "CMYK"),
    ("rgb.tif", RGB8, None), ("gray8.tif", G8, None), ("gray16.tif", G16, None), ("cmyk.tif", SMOOTH, "CMYK"),
])
def test_exif_orientation_as_pillow_shows_it(tmp_path, name, pixels, mode, orientation):
    im = Image.fromarray(pixels).convert(mode) if mode else Image.fromarray(pixels)
    path = tmp_path / name
    im.save(path, exif=_exif(orientation))
    # Pillow's own view of TIFFs is no reference: its TIFF reader turns them upright while
    # decoding, but (Pillow 13) returns single-band ones as stored. A PNG with the same pixels is.
    ref = path
    if name.endswith(".tif"):
        ref = tmp_path / "same.png"
        (im.convert("RGB") if mode else im).save(ref, exif=_exif(orientation))
    expected = _pillow_upright(ref)
    with Image.open(ref) as r:
        stored = np.asarray(r.convert("RGB") if mode else r)
    if orientation >= 5:  # the test is not vacuous: Pillow turned the 20x30 image round
        assert expected.shape[:2] == (30, 20)
    elif orientation >= 2:
        assert expected.shape == stored.shape and not np.array_equal(expected, stored)
    img = read_image(path)
    assert img.dtype == pixels.dtype
    np.testing.assert_array_equal(img, expected)


def _png_with_exif(path: Path, orientation: int) -> Path:
    """Insert an eXIf chunk after IHDR (where Pillow writes it) into a PNG that has none."""
    data = path.read_bytes()
    exif = _exif(orientation).tobytes()
    exif = exif[6:] if exif.startswith(b"Exif\0\0") else exif  # a PNG chunk holds the TIFF block alone
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    path.write_bytes(data[:33] + chunk + data[33:])  # signature 8 + IHDR 25 bytes
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_16_bit_colour_png(tmp_path, orientation):
    path = _png_with_exif(write_png(tmp_path / "rgb16.png", RGB16), orientation)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == orientation
    # Pillow decodes 16-bit colour to 8 bits: each channel as a 16-bit gray PNG with the same EXIF
    channels = []
    for c in range(3):
        Image.fromarray(RGB16[..., c]).save(tmp_path / f"c{c}.png", exif=_exif(orientation))
        channels.append(_pillow_upright(tmp_path / f"c{c}.png"))
    img = read_image(path)
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img, np.stack(channels, -1))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """10000x9500 = 95 M pixels, over Pillow's 89 M warning limit, in 12 kB (1 bit, all black)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (10000, 9500)).save(path)
    return path


def test_max_pixels_is_checked_before_decoding(huge_png, monkeypatch, capfd):
    import imageio.v3 as iio

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image over --max-pixels")

    monkeypatch.setattr(iio, "imread", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(XaiError) as err:
            read_image(huge_png, max_pixels=50_000_000)
    assert str(err.value) == (f"{huge_png}: image is 10000x9500 = 95000000 pixels, over --max-pixels 50000000; "
                              "downscale it or raise --max-pixels")
    assert capfd.readouterr().err == ""


def test_an_image_within_max_pixels_but_over_pillows_limit_reads_quietly(huge_png, capfd):
    limit = Image.MAX_IMAGE_PIXELS
    assert 10000 * 9500 > limit  # Pillow alone would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = read_image(huge_png, max_pixels=100_000_000)
    assert img.shape == (9500, 10000) and img.dtype == np.uint8 and not img.any()
    assert capfd.readouterr().err == ""
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's guard is back for other code


@pytest.mark.parametrize("pillow_limit", [500, 100])  # 600 pixels: Pillow warns over 500, refuses over 200
@pytest.mark.parametrize("max_pixels", [None, 600])
def test_pillows_guard_neither_warns_nor_refuses(tmp_path, monkeypatch, capfd, pillow_limit, max_pixels):
    path = write_png(tmp_path / "rgb.png", RGB8)  # 20x30 = 600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_image(path, max_pixels=max_pixels), RGB8)
    assert capfd.readouterr().err == ""
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_dicom_max_pixels_is_checked_before_decoding(tmp_path, monkeypatch):
    import pydicom

    path = write_dicom(tmp_path / "scan.dcm", np.zeros((12, 10), np.uint16))
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda self: pytest.fail("decoded an image over --max-pixels")))
    with pytest.raises(XaiError, match=r"scan.dcm: image is 10x12 = 120 pixels, over --max-pixels 100;"):
        read_image(path, max_pixels=100)


@pytest.mark.parametrize("name", ["img.png", "scan.dcm"])
def test_an_unreadable_file_says_so(tmp_path, monkeypatch, name):
    path = write_dicom(tmp_path / name, np.zeros((4, 4), np.uint16)) if name.endswith(".dcm") \
        else write_png(tmp_path / name, G8)
    real_open = builtins.open

    def denying_open(file, *args, **kwargs):  # as chmod 000 does for anyone but root
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    with pytest.raises(XaiError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: cannot read (permission denied); check the file's permissions"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_chmod_000_file_says_so(tmp_path):
    path = write_png(tmp_path / "img.png", G8)
    path.chmod(0)
    try:
        with pytest.raises(XaiError, match=r"cannot read \(permission denied\); check the file's permissions$"):
            read_image(path)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("name", ["missing.png", "missing.dcm"])
def test_a_missing_file_says_so(tmp_path, name):
    with pytest.raises(XaiError) as err:
        read_image(tmp_path / name)
    assert str(err.value) == f"{tmp_path / name}: no such file; check the path"


# -- through a model ------------------------------------------------------------------

def _records(stdout: bytes) -> dict:
    """Records of a stream by their source file name."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(stdout)) as t:
        for m in npz_members(t):
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


def test_multi_frame_dicom_reads_the_first_frame_and_says_so(tmp_path, caplog):
    frames = np.zeros((3, 16, 16), np.uint16)
    frames[0, 2:5, 2:5] = 1000
    frames[1, 10:14, 10:14] = 1000
    with caplog.at_level("WARNING", logger="xai"):
        img = read_image(write_dicom(tmp_path / "cine.dcm", frames))
    assert img.shape == (16, 16) and img[3, 3] == 65535 and img[12, 12] == 0
    assert "cine.dcm: 3 frames; xai reads the first only" in caplog.text
