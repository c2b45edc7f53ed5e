"""Where records go: a tar stream on stdout or in a file, or one `.npz` per record in a folder.

`open_sink` picks the sink from `-o`: nothing or `-` is stdout, an existing folder or a
path ending in `/` is a folder, anything else a tar file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.atomic import append_line, atomic_write
from xaicli.io.record import Record
from xaicli.io.stream import TarWriter

MANIFEST = "manifest.jsonl"


class Sink:
    """Context manager: `write` each record; success finalises, failure leaves no partial file."""

    def write(self, record: Record) -> None:
        raise NotImplementedError

    def exists(self, record_id: str, sha256: str | None = None) -> bool:
        """Whether a complete output for this id (and source hash) is already there."""
        return False

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class StreamSink(Sink):
    """Tar stream to a binary file object. No end marker on failure: readers see truncation."""

    def __init__(self, fileobj: BinaryIO):
        self.writer = TarWriter(fileobj)

    def write(self, record: Record) -> None:
        self.writer.add_record(record)

    def commit(self) -> None:
        self.writer.close()


class TarFileSink(Sink):
    """Tar file written to a temp name and renamed into place on success only."""

    def __init__(self, path: Path):
        self.path = path
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise XaiError(f"{path}: cannot write output ({exc.strerror}); choose a writable -o path") from None
        self.f = os.fdopen(fd, "wb")
        self.stream = StreamSink(self.f)

    def write(self, record: Record) -> None:
        self.stream.write(record)

    def commit(self) -> None:
        self.stream.commit()
        self.f.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


class DirSink(Sink):
    """One `<id>.npz` per record (each written atomically) plus an appended manifest."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise XaiError(f"{path}: cannot create output folder ({exc.strerror}); choose a writable -o path") from None
        if not os.access(path, os.W_OK):
            raise XaiError(f"{path}: output folder is not writable; choose a writable -o path")
        self._done = _load_manifest(path / MANIFEST)

    def file_for(self, record_id: str) -> Path:
        return self.path / f"{record_id}.npz"

    def exists(self, record_id: str, sha256: str | None = None) -> bool:
        if not self.file_for(record_id).exists():
            return False
        return sha256 is None or self._done.get(record_id) == sha256

    def write(self, record: Record) -> None:
        target = self.file_for(record.id)
        try:
            atomic_write(target, record.to_bytes())
        except OSError as exc:
            raise XaiError(f"{target}: cannot write record ({exc.strerror}); free space or choose another -o") from None
        entry = manifest_entry(record, target.name)
        append_line(self.path / MANIFEST, json.dumps(entry))
        self._done[record.id] = entry.get("sha256")


def manifest_entry(record: Record, file: str) -> dict[str, Any]:
    src = record.meta.get("source", {})
    last = (record.meta.get("history") or [{}])[-1]
    return {"id": record.id, "file": file, "source": src.get("path"), "sha256": src.get("sha256"),
            "task": record.task, "command": last.get("command"), "maps": record.map_keys()}


def _load_manifest(path: Path) -> dict[str, str | None]:
    done: dict[str, str | None] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash of another writer; its record is redone
        done[entry.get("id")] = entry.get("sha256")
    return done


def open_sink(output: str | None, *, stdout: BinaryIO | None = None) -> Sink:
    if output in (None, "-"):
        out = stdout if stdout is not None else sys.stdout.buffer
        refuse_tty(out, "a record stream")
        return StreamSink(out)
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return DirSink(path)
    if not path.parent.exists():
        raise XaiError(f"{path.parent}: output folder does not exist; create it, or end -o with '/' to write a folder of records")
    return TarFileSink(path)


def refuse_tty(f: BinaryIO, what: str) -> None:
    try:
        tty = f.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        raise XaiUsageError(
            f"refusing to write {what} to a terminal; pipe it (e.g. '| xai render -o figs/') or use -o FILE.tar or -o DIR/"
        )
