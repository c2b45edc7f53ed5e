"""Reading images as displayed: uint8 or uint16, HxW (gray) or HxWx3 (RGB)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from xaicli.errors import XaiError

DICOM_EXTS = {".dcm", ".dicom"}


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode `path`; alpha is dropped, palettes expanded, floats and wide ints rejected."""
    if path.suffix.lower() in DICOM_EXTS:
        img = _read_dicom(path)
    else:
        img = _read_imageio(path)
    img = _normalise(img, path)
    if max_pixels and img.shape[0] * img.shape[1] > max_pixels:
        raise XaiError(
            f"{path}: image is {img.shape[1]}x{img.shape[0]} = {img.shape[0] * img.shape[1]} pixels, "
            f"over --max-pixels {max_pixels}; downscale it or raise --max-pixels"
        )
    return img


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_imageio(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = iio.imread(path)
    except FileNotFoundError:
        raise XaiError(f"{path}: no such file; check the path") from None
    except Exception as exc:  # imageio raises many types for undecodable input
        raise XaiError(
            f"{path}: cannot read as an image ({type(exc).__name__}); pass PNG, JPEG, BMP, TIFF or DICOM files"
        ) from None
    if img.ndim == 4:  # multi-frame (animated/multi-page): the first frame
        img = img[0]
    if img.dtype == np.uint8 and img.ndim == 3 and _png_bit_depth(path) == 16:
        img = _read_png16_colour(path, img)
    return np.asarray(img)


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
        return None
    return head[24]


def _read_png16_colour(path: Path, img8: np.ndarray) -> np.ndarray:
    """Pillow decodes 16-bit RGB(A) PNGs to 8 bits; OpenCV (a grad-cam dependency) keeps 16."""
    try:
        import cv2
    except ImportError:
        return img8
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[:2] != img8.shape[:2]:
        return img8
    return arr[..., [2, 1, 0, 3][: arr.shape[-1]]]  # BGR(A) → RGB(A)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise XaiError(f"{path}: reading DICOM needs pydicom; install xai with the 'dicom' extra (pip install 'xai[dicom]')") from None
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:
        raise XaiError(f"{path}: cannot read DICOM pixels ({type(exc).__name__}: {exc}); check the file") from None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[0]  # multi-frame: the first frame
    arr = arr.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    lo, hi = float(np.min(arr)), float(np.max(arr))
    scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.round(scaled * 65535).astype(np.uint16)


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
        lo, hi = float(img.min()), float(img.max())
        scaled = (img.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(img.shape)
        return np.round(scaled * 65535).astype(np.uint16)
    raise XaiError(f"{path}: unsupported pixel type {img.dtype}; pass 8- or 16-bit images")


def to_unit_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 image → float32 in [0, 1], HxWxC (C = 1 or 3)."""
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    out = img.astype(np.float32) / scale
    return out[..., None] if out.ndim == 2 else out
