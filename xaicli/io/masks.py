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
    raw = np.asarray(m)
    inside = (raw != 0).any(axis=-1) if raw.ndim == 3 else raw != 0
    if inside.ndim != 2:
        raise error(f"{option} {path}: a mask is a 2-D image, got shape {raw.shape}")
    if path.suffix.lower() != ".npy":   # an array says what it means; an exported image may not
        _warn_if_suspect(path, option, inside, raw)
    return inside


def _warn_if_suspect(path: Path, option: str, inside, raw) -> None:
    """Non-zero is inside: masks that are not plain two-level images give another region than meant."""
    import logging

    import numpy as np

    log = logging.getLogger("xai")
    levels = len(np.unique(raw))
    if inside.all():
        log.warning("%s %s: the mask covers the whole image (a region kept in the alpha channel is not "
                    "read: save it as gray or RGB, 0 outside)", option, path)
    elif levels > 2:
        log.warning("%s %s: the mask has %d levels and every non-zero pixel counts as inside, so antialiased "
                    "or JPEG edges grow the region; save it as a two-level PNG (0 and 255)", option, path, levels)
