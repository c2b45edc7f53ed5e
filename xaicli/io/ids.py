"""Record ids: safe file names, stable for a given path, unique within one run."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_LEN = 80


def safe_id(text: str) -> str:
    """A file-name-safe id: no separators, no leading dots (so never `..`), no leading
    dash (which `tar`, `rm` or a shell loop over `*.npz` would take for an option)."""
    s = _UNSAFE.sub("_", text).lstrip("._-").rstrip("._") or "record"
    return s[:MAX_LEN]


def ids_for_paths(paths: list[Path]) -> list[str]:
    """Ids from file stems; paths whose stems collide get a short hash of their absolute path.

    The hash depends only on the path, so a file keeps its id when other files arrive,
    which `--skip-existing` in a cron job over a growing folder relies on.
    """
    stems = [safe_id(p.stem) for p in paths]
    counts = Counter(stems)
    out = []
    for stem, p in zip(stems, paths):
        if counts[stem] > 1:
            digest = hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:8]
            stem = f"{stem[:MAX_LEN - 9]}-{digest}"
        out.append(stem)
    return out
