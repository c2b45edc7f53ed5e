"""Region masks given on the command line: `--target-mask` (attribute, cam) and `--mask` (stats).

FILE: one mask for every record; DIR: masks matched by record id (the file stem, or the id
xai makes of it).
Images are nonzero-is-inside (any channel); `.npy` arrays the same, read without pickles.
"""

from __future__ import annotations

from pathlib import Path

from xaicli.errors import XaiError
from xaicli.io.ids import safe_id

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}


class MaskSource:
    def __init__(self, spec: str, option: str, error: type[XaiError] = XaiError):
        self.option, self.error = option, error
        self.path = Path(spec).expanduser()
        self.files: dict[str, Path] = {}
        self.single = None
        if not self.path.exists():
            raise error(f"{option} {spec}: no such file or directory; pass a mask image (or .npy) "
                        "or a folder of masks named by record id")
        if self.path.is_dir():
            found = [p for p in sorted(self.path.iterdir())
                     if p.is_file() and p.suffix.lower() in EXTS and not p.name.startswith(".")]
            # by stem, and by the id xai makes of it: `scan 001.png` is the mask of record `scan_001`
            self.files = {p.stem: p for p in found}
            for p in found:
                self.files.setdefault(safe_id(p.stem), p)
            if not self.files:
                raise error(f"{option} {spec}: folder holds no mask images (.png, .tif, .npy, ...)")
        else:
            self.single = read_mask(self.path, option, error)

    def lookup(self, record_id: str):
        """(mask, path) for this record, or None when the folder has no mask of that name."""
        if self.single is not None:
            return self.single, self.path
        path = self.files.get(record_id)
        return None if path is None else (read_mask(path, self.option, self.error), path)


def read_mask(path: Path, option: str, error: type[XaiError] = XaiError):
    """A 2-D bool array: True inside."""
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            m = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise error(f"{option} {path}: not a readable .npy mask ({exc})") from None
    else:
        from xaicli.io.images import read_image

        try:
            m = read_image(path)
        except XaiError as exc:
            raise error(f"{option} {exc}") from None
    m = np.asarray(m)
    if m.ndim == 3:
        m = (m != 0).any(axis=-1)
    if m.ndim != 2:
        raise error(f"{option} {path}: a mask is a 2-D image, got shape {m.shape}")
    return m != 0
