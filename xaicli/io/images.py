"""Reading images as displayed: uint8 or uint16, HxW (gray) or HxWx3 (RGB)."""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xaicli.errors import XaiError, XaiUsageError

DICOM_EXTS = {".dcm", ".dicom"}
log = logging.getLogger("xai")


@dataclass(frozen=True)
class Window:
    """How a gray DICOM's values become display levels (`--window`): "file" (its first VOI LUT
    or window, the default), "option" (center and width given), or "minmax" (stretch)."""

    mode: str = "file"
    center: float | None = None
    width: float | None = None


def parse_window(text: str | None) -> Window:
    """`--window`: CENTER,WIDTH, minmax or file (None: file)."""
    if text is None or text.strip().lower() == "file":
        return Window()
    if text.strip().lower() == "minmax":
        return Window("minmax")
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        center = width = math.nan
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise XaiUsageError(f"--window {text!r}: use CENTER,WIDTH in the file's units after its rescale (a width "
                            "above 0, e.g. 40,400 for soft tissue in HU), minmax (stretch min to max) or file "
                            "(the file's first window, the default)")
    return Window("option", center, width)


def read_image(path: Path, max_pixels: int | None = None, window: Window = Window()) -> np.ndarray:
    """Decode `path` as displayed; alpha is dropped, palettes expanded, floats and wide ints rejected.

    `max_pixels` refuses larger images, checked from the header before decoding. It replaces
    Pillow's decompression-bomb guard (a warning over ~89 M pixels, a refusal over ~179 M),
    which is off while reading. None means no limit, for files the caller trusts: the CLI
    always passes --max-pixels (100 M by default). `window` applies to gray DICOM only.
    """
    return read_image_and_window(path, max_pixels, window)[0]


def read_image_and_window(path: Path, max_pixels: int | None = None,
                          window: Window = Window()) -> tuple[np.ndarray, dict | None]:
    """The image as `read_image` gives it, and the window that made it (gray DICOM; else None)."""
    _check_readable(path)
    used = None
    if path.suffix.lower() in DICOM_EXTS:
        img, used = _read_dicom(path, max_pixels, window)
    else:
        img = _read_imageio(path, max_pixels)
    img = _normalise(img, path)
    _check_pixels(path, img.shape[1], img.shape[0], max_pixels)  # for readers without a header check
    return img, used


def _check_readable(path: Path) -> None:
    """Missing and unreadable files name their own fix, not "pass PNG, JPEG, ..." (both readers)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise XaiError(f"{path}: no such file; check the path") from None
    except PermissionError:
        raise XaiError(f"{path}: cannot read (permission denied); check the file's permissions") from None
    except OSError:
        pass  # e.g. a folder: the readers say it is not an image


def _first_frame_only(path: Path, frames: int) -> None:
    """One image per file: a cine loop or a volume would otherwise lose its other frames unsaid."""
    import logging

    logging.getLogger("xai").warning("%s: %d frames; xai reads the first only (export the frame or slice "
                                     "to explain as its own file)", path, frames)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise XaiError(
            f"{path}: image is {width}x{height} = {width * height} pixels, "
            f"over --max-pixels {max_pixels}; downscale it or raise --max-pixels"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Pillow modes whose three or four channels are not R, G, B (imageio returns them as they are,
# so a CMYK JPEG came out as inverted RGBA): decoded by Pillow and converted to RGB as it does.
_NOT_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV"}


def _read_imageio(path: Path, max_pixels: int | None) -> np.ndarray:
    import imageio.v3 as iio
    from imageio.plugins.pillow import PillowPlugin

    with _pillow_bomb_guard_off():
        header = _pillow_header(path)  # None: not a format Pillow knows, imageio may have another plugin
        if header is not None:
            _check_pixels(path, header[0], header[1], max_pixels)  # before decoding: the limit is for memory and time
        rgb = header is not None and header[2] in _NOT_RGB_MODES
        try:
            # imageio's own choice of plugin otherwise: for TIFF its tifffile, which keeps 16-bit colour
            with iio.imopen(path, "r", plugin="pillow" if rgb else None) as f:
                by_pillow = isinstance(f, PillowPlugin)
                # rotate: Pillow's EXIF orientation, read after decoding as ImageOps.exif_transpose does
                # (Pillow's TIFF reader turns the image upright itself while decoding, and drops the tag)
                img = f.read(rotate=True, mode="RGB" if rgb else None) if by_pillow else f.read()
        except Exception as exc:  # imageio raises many types for undecodable input
            raise XaiError(
                f"{path}: cannot read as an image ({type(exc).__name__}); pass PNG, JPEG, BMP, TIFF or DICOM files"
            ) from None
    if img.ndim == 4:  # multi-frame (animated/multi-page): the first frame
        _first_frame_only(path, img.shape[0])
        img = img[0]
    orientation = header[3] if header is not None else 1
    if not by_pillow:  # other plugins (tifffile) give the pixels as stored
        img = _apply_orientation(img, orientation)
    if img.dtype == np.uint8 and img.ndim == 3 and _png_bit_depth(path) == 16:
        img = _read_png16_colour(path, img, orientation)
    return np.asarray(img)


@contextmanager
def _pillow_bomb_guard_off():
    """Pillow's own pixel limit off while reading: --max-pixels governs instead, and Pillow's
    guard would print warnings to stderr, or refuse images that --max-pixels allows."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _pillow_header(path: Path) -> tuple[int, int, str, int] | None:
    """(width, height, Pillow mode, EXIF orientation) without decoding the pixels; None if
    Pillow cannot open the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            width, height = im.size
            mode = im.mode
            try:
                with warnings.catch_warnings():  # a damaged EXIF block: shown as stored, without a warning
                    warnings.simplefilter("ignore")
                    # The base class's getexif: PngImageFile's own decodes the whole image to look for an
                    # eXIf chunk after the pixels; this one reads what precedes them (where Pillow writes it).
                    orientation = Image.Image.getexif(im).get(0x0112, 1)
            except Exception:
                orientation = 1
    except Exception:
        return None
    return width, height, mode, orientation


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """`img` (HxW or HxWxC) as displayed under EXIF orientation 0x0112, as PIL.ImageOps.exif_transpose
    turns it: 5-8 are a transpose followed by 1-4 (6, a quarter turn clockwise, is transpose +
    mirror; 8 is transpose + flip); 2 mirrors, 3 turns 180 degrees, 4 flips. Other values: as stored."""
    if orientation in (5, 6, 7, 8):
        img, orientation = np.swapaxes(img, 0, 1), orientation - 4
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    return img


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
        return None
    return head[24]


def _read_png16_colour(path: Path, img8: np.ndarray, orientation: int) -> np.ndarray:
    """Pillow decodes 16-bit RGB(A) PNGs to 8 bits; OpenCV (a grad-cam dependency) keeps 16.

    OpenCV ignores EXIF orientation here, so `orientation` (from the header) is applied; its
    result is kept only if its high bytes are Pillow's 8-bit image, upright (an eXIf chunk after
    the pixels, which Pillow reads and the header does not, falls back to 8 bits)."""
    try:
        import cv2
    except ImportError:
        return img8
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return img8
    arr = _apply_orientation(arr[..., [2, 1, 0, 3][: arr.shape[-1]]], orientation)  # BGR(A) → RGB(A)
    if not np.array_equal(arr >> 8, img8):  # also False when the shapes differ
        return img8
    return arr


def _read_dicom(path: Path, max_pixels: int | None, window: Window) -> tuple[np.ndarray, dict | None]:
    try:
        import pydicom
    except ImportError:
        raise XaiError(f"{path}: reading DICOM needs pydicom; install xai with the 'dicom' extra (pip install 'xai[dicom]')") from None
    try:
        ds = pydicom.dcmread(path)
        # from the header, before decoding the pixels (which may be compressed)
        _check_pixels(path, int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0), max_pixels)
        arr = ds.pixel_array
    except XaiError:
        raise
    except Exception as exc:
        raise XaiError(f"{path}: cannot read DICOM pixels ({type(exc).__name__}: {exc}); check the file") from None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        _first_frame_only(path, arr.shape[0])
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):       # colour: no window applies
        arr = arr.astype(np.float64)
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        return _stretch(arr * slope + intercept), None
    scaled, used = _display_levels(path, ds, arr, window)
    if photometric == "MONOCHROME1":                              # low values are white
        scaled = 1.0 - scaled
    return np.round(scaled * 65535).astype(np.uint16), used


def _display_levels(path: Path, ds, arr: np.ndarray, window: Window) -> tuple[np.ndarray, dict]:
    """Stored values → [0, 1] as a DICOM viewer shows them, and the window used.

    pydicom's own functions do the work: the modality LUT or rescale, then the VOI LUT or
    the window (first of several, with the file's VOI LUT Function). Their output range
    (for a window: the stored bits' full range after the rescale, what pydicom puts below
    and above the window; for a VOI LUT: 0 to 2^bits - 1) maps linearly onto [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    if window.mode == "option":
        ds.WindowCenter, ds.WindowWidth = window.center, window.width
        if "VOILUTSequence" in ds:
            del ds.VOILUTSequence
    lut = _voi_lut(ds) if window.mode == "file" else None
    has_window = window.mode != "minmax" and all(ds.get(k) not in (None, "") for k in ("WindowCenter", "WindowWidth"))
    if lut is None and not has_window:
        if window.mode == "file":
            log.info("%s: no VOI LUT or window in the file; stretched min to max (set one with --window C,W)", path)
        values = np.asarray(values, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        return _unit(values, lo, hi), {"from": "minmax", "center": (lo + hi) / 2, "width": hi - lo}
    if lut is not None and np.issubdtype(np.asarray(values).dtype, np.floating):
        values = np.round(values).astype(np.int64)     # a LUT is indexed by integers (pydicom warns on floats)
    try:
        shown = apply_voi_lut(values, ds).astype(np.float64)
        if lut is not None:
            lo, hi = 0.0, float(2 ** int(lut.LUTDescriptor[2]) - 1)
            used = {"from": "file", "center": None, "width": None,
                    "lut": str(lut.get("LUTExplanation", "") or "VOI LUT Sequence")}
        else:   # what pydicom writes below and above the window: its output range
            lo, hi = (float(v) for v in apply_voi_lut(np.array([-np.inf, np.inf]), ds))
            used = {"from": window.mode, "center": _first(ds.WindowCenter), "width": _first(ds.WindowWidth),
                    "function": str(ds.get("VOILUTFunction", "") or "LINEAR")}
            explanation = ds.get("WindowCenterWidthExplanation") if window.mode == "file" else None
            if explanation:
                used["explanation"] = str(_first(explanation))
    except (ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        where = "--window" if window.mode == "option" else "the file's VOI LUT or window"
        raise XaiError(f"{path}: cannot apply {where} ({exc}); pass --window CENTER,WIDTH or --window minmax") from None
    return _unit(shown, lo, hi), used


def _voi_lut(ds):
    """The first VOI LUT Sequence item, if the file has a usable one (pydicom then prefers it)."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return seq[0]
    return None


def _first(value):
    """The first of a multi-valued element (several windows), as a float where it is a number."""
    if isinstance(value, Sequence) and not isinstance(value, str):    # pydicom's MultiValue is one
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`values` from [lo, hi] onto [0, 1] (lo > hi turns it round; an empty range is all 0)."""
    if hi == lo:
        return np.zeros(values.shape)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def _stretch(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return np.round(_unit(arr, lo, hi) * 65535).astype(np.uint16)


def _normalise(img: np.ndarray, path: Path) -> np.ndarray:
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[-1] == 2:  # gray + alpha
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise XaiError(f"{path}: unsupported image shape {img.shape}; pass a gray, RGB or RGBA image")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(img)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)):
            raise XaiError(f"{path}: image holds NaN or infinite pixels; fix or re-export the image")
        lo, hi = float(img.min()), float(img.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(img * 65535).astype(np.uint16)
    if np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating):
        return _stretch(img.astype(np.float64))
    raise XaiError(f"{path}: unsupported pixel type {img.dtype}; pass 8- or 16-bit images")


def to_unit_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 image → float32 in [0, 1], HxWxC (C = 1 or 3)."""
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    out = img.astype(np.float32) / scale
    return out[..., None] if out.ndim == 2 else out
