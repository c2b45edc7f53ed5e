"""The stream: a tar of `<id>.npz` records, written and read with constant memory.

Writing emits each member (header, data, padding) and flushes, so the next command in
a pipe starts on a record as soon as it is complete. The end-of-archive marker is
written only on success: a producer that fails midway leaves a stream that readers
report as truncated instead of silently short.
"""

from __future__ import annotations

import tarfile
import time
from typing import BinaryIO, Iterator

from xaicli.errors import XaiError
from xaicli.io.record import Record

BLOCK = 512
RECORDSIZE = 20 * BLOCK


class TarWriter:
    def __init__(self, fileobj: BinaryIO):
        self.f = fileobj
        self.written = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        pad = (-len(data)) % BLOCK
        self._write(header)
        self._write(data)
        self._write(b"\0" * pad)
        self.f.flush()

    def add_record(self, record: Record) -> None:
        self.add(f"{record.id}.npz", record.to_bytes())

    def close(self) -> None:
        """Write the end-of-archive marker, padded to tar's usual record size."""
        end = 2 * BLOCK
        end += (-(self.written + end)) % RECORDSIZE
        self._write(b"\0" * end)
        self.f.flush()

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.written += len(data)


class _TailTracker:
    """File wrapper that remembers the last bytes read, to check the end marker."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.tail = b""
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.total += len(data)
        self.tail = (self.tail + data)[-2 * BLOCK:]
        return data


def read_tar(fileobj: BinaryIO, name: str) -> Iterator[Record]:
    """Yield the records of a (possibly concatenated) tar stream of `.npz` members."""
    tracker = _TailTracker(fileobj)
    try:
        tar = tarfile.open(fileobj=tracker, mode="r|", ignore_zeros=True)
    except tarfile.TarError as exc:  # ReadError, or StreamError when ignore_zeros skips garbage
        raise XaiError(f"{name}: not a tar stream of records ({exc}); pipe the output of an xai command") from None
    records, other = 0, None
    with tar:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as exc:
                # StreamError: ignore_zeros skipped a block that is not a tar header
                why = "bytes that are not a tar header" if isinstance(exc, tarfile.StreamError) else exc
                raise XaiError(f"{name}: truncated or corrupt record stream ({why}); re-run the command that wrote it") from None
            if member is None:
                break
            if not member.isfile() or not member.name.endswith(".npz"):
                other = other or member.name
                continue
            data = _read_member(tar, member, name)
            records += 1
            yield Record.from_bytes(data, f"{name}:{member.name}")
        # Drain to the physical end so the tail check sees the real end of input.
        while tracker.read(1 << 16):
            pass
    if tracker.total % BLOCK or tracker.tail != b"\0" * (2 * BLOCK):
        raise XaiError(
            f"{name}: truncated record stream (no end-of-archive marker); "
            "the command that wrote it failed or was interrupted, re-run it"
        )
    if other and not records:   # e.g. a tar of images: saying nothing would look like success
        raise XaiError(f"{name}: tar holds no .npz records (first member: {other}); "
                       "pass images as files or a folder, records as xai writes them")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> bytes:
    try:
        f = tar.extractfile(member)
        data = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise XaiError(f"{name}: truncated record stream inside {member.name} ({exc}); re-run the command that wrote it") from None
    if len(data) != member.size:
        raise XaiError(f"{name}: truncated record stream inside {member.name}; re-run the command that wrote it")
    return data
