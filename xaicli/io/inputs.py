"""Resolve command-line inputs (images, records, tars, directories, `-`) into items.

Everything is checked before the first item is produced, so a missing file fails
the command before any output exists. A file named twice (`a.png ./a.png`, or a file and
its folder) is read once. With a `Shard`, only the items whose record id falls in it are
produced: images are dropped before they are read, records after their meta is parsed.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.ids import Shard, ids_for_paths, parse_shard
from xaicli.io.record import NPZ_MAGIC, Record
from xaicli.io.stream import read_tar

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
RECORD_EXTS = {".npz"}
STREAM_EXTS = {".tar"}


@dataclass(frozen=True)
class ImageInput:
    path: Path
    id: str


@dataclass(frozen=True)
class _Source:
    kind: str          # "image" | "record" | "stream" | "stdin"
    path: Path | None
    listed: bool = False   # found in a folder given as input, not named itself


Item = Union[ImageInput, Record]
log = logging.getLogger("xai")


class Inputs:
    """The resolved inputs of one command; iterate to get images and records in order."""

    def __init__(self, sources: list[_Source], image_ids: dict[Path, str], stdin: BinaryIO | None,
                 shard: Shard | None = None):
        self.sources = sources
        self._image_ids = image_ids
        self._stdin = stdin
        self.shard = shard

    @property
    def count(self) -> int | None:
        """Number of items when known without reading streams (for progress bars)."""
        if any(s.kind in ("stream", "stdin") for s in self.sources):
            return None
        if self.shard is None:
            return len(self.sources)
        if any(s.kind == "record" for s in self.sources):
            return None  # a record's id is known only once it is read
        return sum(self._image_ids[s.path] in self.shard for s in self.sources)

    def __iter__(self) -> Iterator[Item]:
        shard = self.shard
        for src in self.sources:
            if src.kind == "image":
                item_id = self._image_ids[src.path]
                if shard is None or item_id in shard:
                    yield ImageInput(src.path, item_id)
                continue
            if src.kind == "record":
                records: Iterator[Record] = iter([Record.from_bytes(_read_bytes(src.path), str(src.path))])
            elif src.kind == "stream":
                records = _read_tar_file(src.path)
            else:
                records = read_stdin(self._stdin)
            for rec in records:
                if shard is None or rec.id in shard:
                    yield rec


def resolve(args: list[str], *, images: bool = True, records: bool = True,
            stdin: BinaryIO | None = None, shard: Shard | str | None = None,
            output: str | None | bool = False) -> Inputs:
    """Check and expand `args`; with no args, read stdin unless it is a terminal.

    `shard` is a Shard or the text of `--shard` (K/N or slurm). Record ids of images are
    assigned over the whole list before it selects, so every task of an array job sees
    the same ids and the shards partition them. `output` is the command's `-o` (None or
    '-': stdout; False: it writes no records): an input that is that very file is skipped."""
    if isinstance(shard, str):
        try:
            shard = parse_shard(shard)
        except ValueError as exc:
            raise XaiUsageError(str(exc)) from None
    stdin = stdin if stdin is not None else sys.stdin.buffer
    what = " or ".join(w for w, ok in (("images", images), ("records", records)) if ok)
    if not args:
        if _isatty(stdin):
            raise XaiUsageError(f"no input: pass {what} (files or directories), or pipe a record stream into '-'")
        args = ["-"]
    sources: list[_Source] = []
    for arg in args:
        if arg == "-":
            if not records:
                raise XaiUsageError("this command reads images, not a stream on stdin; pass image files or directories")
            sources.append(_Source("stdin", None))
            continue
        path = Path(arg)
        if path.is_dir():
            try:
                listed = sorted(path.iterdir())
            except OSError as exc:
                raise XaiError(f"{path}: cannot list the folder ({exc.strerror}); check its permissions") from None
            found = [_classify(p, images, records, explicit=False) for p in listed
                     if p.is_file() and not p.name.startswith(".")]
            found = [s for s in found if s is not None]
            if not found:
                raise XaiError(f"{path}: directory holds no {what}; point at the folder that holds them")
            sources.extend(found)
        elif path.exists():
            sources.append(_classify(path, images, records, explicit=True))
        else:
            raise XaiError(f"{path}: no such file or directory; check the path")
    sources = _dedupe(sources)
    if output is not False:
        sources = _not_the_output(sources, output)
    image_paths = [s.path for s in sources if s.kind == "image"]
    ids = dict(zip(image_paths, ids_for_paths(image_paths)))
    return Inputs(sources, ids, stdin, shard)


def _dedupe(sources: list[_Source]) -> list[_Source]:
    """Drop repeats of a file (same resolved path) or of stdin; the first mention keeps its place."""
    seen: set = set()
    out = []
    for src in sources:
        key = "-" if src.path is None else _resolved(src.path)
        if key in seen:
            log.debug("%s: given more than once, read once", src.path or "-")
            continue
        seen.add(key)
        out.append(src)
    return out


def _not_the_output(sources: list[_Source], output: str | None) -> list[_Source]:
    """Drop an input that is the file being written, as grep and tar do (same device and inode):
    `xai predict scans/ > scans/out.tar` would read its own half-written stream. `-o FILE` is
    written to a temp file and renamed, so a FILE named as an input is its earlier version and
    is read (an in-place update); found in a folder, it is an earlier output and is skipped."""
    if output in (None, "-"):
        target, what, named_too = _identity(_stdout_fd()), "stdout", True
    else:
        path = Path(output)
        target = _identity(path) if not path.is_dir() else None
        what = f"-o {output}"
        named_too = target is not None and not path.is_file()       # a FIFO or device: written in place
    if target is None:
        return sources
    kept = []
    for src in sources:
        if src.path is not None and (src.listed or named_too) and _identity(src.path) == target:
            log.warning("%s: is this command's output (%s); not read as an input", src.path, what)
            continue
        kept.append(src)
    return kept


def _stdout_fd() -> int | None:
    try:
        return sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


def _identity(where: Path | int | None) -> tuple[int, int] | None:
    """(device, inode) of a path or an open descriptor; None when there is none."""
    if where is None:
        return None
    try:
        st = os.fstat(where) if isinstance(where, int) else os.stat(where)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


def _read_tar_file(path: Path) -> Iterator[Record]:
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise XaiError(f"{path}: cannot read ({exc.strerror}); check the path and permissions") from None
    with f:
        yield from read_tar(f, str(path))


def _classify(path: Path, images: bool, records: bool, explicit: bool) -> _Source | None:
    ext = path.suffix.lower()
    listed = not explicit
    if ext in RECORD_EXTS and records:
        return _Source("record", path, listed)
    if ext in STREAM_EXTS and records:
        return _Source("stream", path, listed)
    if images and (ext in IMAGE_EXTS or explicit and ext not in RECORD_EXTS | STREAM_EXTS):
        # An explicit file with an unknown extension is tried as an image; reading it
        # reports a clear error if it is not one.
        return _Source("image", path, listed)
    if not explicit:
        return None
    if ext in RECORD_EXTS | STREAM_EXTS:
        raise XaiUsageError(f"{path}: this command reads images, not records; pass image files")
    raise XaiUsageError(f"{path}: this command reads records (.npz, .tar, or a stream on stdin), not {ext or 'this file'}")


def read_stdin(stdin: BinaryIO) -> Iterator[Record]:
    stdin = _buffered(stdin)
    head = stdin.peek(4)[:4]
    if not head:
        raise XaiError("<stdin>: stdin is empty: pipe the output of an xai command, or pass files")
    if head.startswith(NPZ_MAGIC):
        yield Record.from_bytes(stdin.read(), "<stdin>")
    else:
        yield from read_tar(stdin, "<stdin>")


def _buffered(f: BinaryIO) -> BinaryIO:
    """A stream that can peek (test runners hand over a plain BytesIO)."""
    return f if hasattr(f, "peek") else io.BufferedReader(f)  # type: ignore[arg-type]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise XaiError(f"{path}: cannot read ({exc.strerror}); check the path and permissions") from None


def _isatty(f: BinaryIO) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False
