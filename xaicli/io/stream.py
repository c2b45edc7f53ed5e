"""The stream: a tar of `<id>.npz` records, written and read with constant memory.

Writing emits each member (header, data, padding) and flushes, so the next command in
a pipe starts on a record as soon as it is complete.

A stream xai writes is bracketed, so that a failed writer stays visible even after `cat`
joins its stream to others (readers skip the zero blocks between joined tars, so the end
marker of the next stream would hide a missing one):

- it starts with a member `.xai-stream.json` (`{"stream": <random id>}`);
- on success it ends with `.xai-stream-end.json` (`{"stream": id, "records": n}`), then
  tar's end-of-archive marker;
- on failure it ends with `.xai-stream-failed.json` (`{"stream": id, "records": n,
  "error": "<the one-line error>"}`) and no end-of-archive marker; a killed writer ends
  wherever it was stopped.

A reader refuses a failure member, a start member while a stream is still open (the one
before it never ended), an end member whose count or id disagrees, and input that ends
inside a stream. Tars without these members (`tar cf` of `.npz` files) read as before:
their records are taken as they come, and only the end-of-archive marker is required.
The members are hidden files for `tar xf`, and are listed by `tar tvf`.
"""

from __future__ import annotations

import json
import secrets
import tarfile
import time
from typing import Any, BinaryIO, Iterator

from xaicli.errors import XaiError
from xaicli.io.record import Record, printable

BLOCK = 512
RECORDSIZE = 20 * BLOCK
BEGIN = ".xai-stream.json"
END = ".xai-stream-end.json"
FAILED = ".xai-stream-failed.json"
MARKERS = (BEGIN, END, FAILED)
MARKER_MAX = 1 << 16           # a marker is a line of JSON: larger is not one


class TarWriter:
    """Writes the start member before anything else; `begin` writes it at once (StreamSink
    does as its command starts), so that even a writer killed before its first record is
    seen by a reader of `cat`-joined streams."""

    def __init__(self, fileobj: BinaryIO):
        self.f = fileobj
        self.written = 0
        self.records = 0
        self.stream = secrets.token_hex(8)
        self.begun = False

    def begin(self) -> None:
        if not self.begun:
            self.begun = True
            self._marker(BEGIN, {})

    def add(self, name: str, data: bytes) -> None:
        """One member; an `.npz` member counts as a record (the end member says how many)."""
        self.begin()
        self.records += name.endswith(".npz")
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

    def fail(self, error: str) -> None:
        """End a failed stream: the failure member, and no end-of-archive marker."""
        self._marker(FAILED, {"records": self.records, "error": error})

    def close(self) -> None:
        """End a complete stream: the end member with the record count, then the
        end-of-archive marker, padded to tar's usual record size."""
        self._marker(END, {"records": self.records})
        end = 2 * BLOCK
        end += (-(self.written + end)) % RECORDSIZE
        self._write(b"\0" * end)
        self.f.flush()

    def _marker(self, name: str, fields: dict[str, Any]) -> None:
        self.add(name, (json.dumps({"stream": self.stream, **fields}) + "\n").encode())

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
    bracket = _Bracket(name)
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
            if member.name in MARKERS and member.isfile():
                bracket.marker(member.name, _marker_fields(tar, member, name))
                continue
            if not member.isfile() or not member.name.endswith(".npz"):
                other = other or member.name
                continue
            data = _read_member(tar, member, name)
            records += 1
            bracket.records += 1
            yield Record.from_bytes(data, f"{name}:{member.name}")
        # Drain to the physical end so the tail check sees the real end of input.
        while tracker.read(1 << 16):
            pass
    bracket.finish()
    if tracker.total % BLOCK or tracker.tail != b"\0" * (2 * BLOCK):
        raise XaiError(
            f"{name}: truncated record stream (no end-of-archive marker); "
            "the command that wrote it failed or was interrupted, re-run it"
        )
    if other and not records:   # e.g. a tar of images: saying nothing would look like success
        raise XaiError(f"{name}: tar holds no .npz records (first member: {printable(other)}); "
                       "pass images as files or a folder, records as xai writes them")


class _Bracket:
    """The start / end / failure members of the streams in one input (see the module doc)."""

    def __init__(self, name: str):
        self.name = name
        self.open: str | None = None     # id of the stream being read, between its start and end
        self.records = 0                 # records since the last start member

    def marker(self, member: str, fields: dict[str, Any]) -> None:
        stream, name = fields.get("stream"), self.name
        if member == FAILED:
            error = printable(str(fields.get("error")))[:300]
            count = printable(str(fields.get("records")))[:20]
            raise XaiError(f"{name}: the command that wrote this stream failed after {count} records ({error}); "
                           "fix that and re-run it")
        if member == BEGIN:
            self._unfinished("and another stream begins")
            self.open, self.records = stream, 0
            return
        if self.open is None or stream != self.open:
            raise XaiError(f"{name}: stream end member without its start (a stream cut or pieced together); "
                           "re-run the command that wrote it")
        if fields.get("records") != self.records:
            count = printable(str(fields.get("records")))[:20]
            raise XaiError(f"{name}: a stream holds {self.records} records but its writer wrote {count}; "
                           "re-run the command that wrote it")
        self.open = None

    def finish(self) -> None:
        self._unfinished("at the end of the input")

    def _unfinished(self, where: str) -> None:
        if self.open is not None:
            raise XaiError(f"{self.name}: truncated record stream: a stream stops after {self.records} records "
                           f"without its end member {where}; the command that wrote it failed or was killed, "
                           "re-run it")


def _marker_fields(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> dict[str, Any]:
    if member.size > MARKER_MAX:
        raise XaiError(f"{name}: corrupt record stream ({member.name} of {member.size} bytes); "
                       "re-run the command that wrote it")
    try:
        fields = json.loads(_read_member(tar, member, name))
    except (ValueError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        raise XaiError(f"{name}: corrupt record stream ({member.name} is not a JSON object); "
                       "re-run the command that wrote it")
    return fields


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> bytes:
    try:
        f = tar.extractfile(member)
        data = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise XaiError(f"{name}: truncated record stream inside {member.name} ({exc}); re-run the command that wrote it") from None
    if len(data) != member.size:
        raise XaiError(f"{name}: truncated record stream inside {member.name}; re-run the command that wrote it")
    return data
