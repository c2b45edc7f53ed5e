"""Where records go: a tar stream on stdout or in a file, or one `.npz` per record in a folder.

`open_sink` picks the sink from `-o`: nothing or `-` is stdout, an existing folder or a
path ending in `/` is a folder, anything else a tar file.

A folder is what cron jobs and SLURM arrays write to. Each `<id>.npz` is written to a
temp name and renamed; only then is its line appended to `manifest.jsonl` (one
`write(2)` on an O_APPEND descriptor, so concurrent writers never interleave). An output
counts as done (`exists`, used by `--skip-existing`) only when both are there and agree:
the file exists, the manifest's last line for the id has the same source sha256, and
the record was made (or passed through) by the command asking. So after `kill -9`
between the rename and the append the record is redone; a manifest line whose file was
deleted is redone; a record of a changed image (new sha256) is redone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.atomic import (append_line, atomic_write, close_cut_line, make_temp, output_target, read_manifest,
                              sweep_stale_temps)
from xaicli.io.locks import IdLocks
from xaicli.io.record import Record
from xaicli.io.stream import TarWriter

MANIFEST = "manifest.jsonl"


class _Transaction:
    """`with` commits on success and aborts on failure, so a failed run leaves no partial file."""

    def commit(self) -> None: ...

    def abort(self, exc: BaseException | None = None) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort(exc)


class Sink(_Transaction):
    """Records out: `write` each record; success finalises, failure leaves no partial file."""

    #: whether `exists` can tell finished outputs apart (`--skip-existing` needs it)
    can_skip = False

    def write(self, record: Record) -> None:
        raise NotImplementedError

    def exists(self, record_id: str, sha256: str | None = None) -> bool:
        """Whether a complete output for this id (and source hash) is already there."""
        return False

    def claim(self, record: Record) -> None:
        """Refuse a record whose id this run already wrote for another image (see IdClaims)."""
        self.__dict__.setdefault("_claims", IdClaims()).claim(record)


class IdClaims:
    """The record ids one run has written, with their images. A second record of the same id
    but another image would replace the first (a file in a folder, `tar xf` of a stream, a
    figure): refused. The same image's record twice (concatenated streams) passes, as it came."""

    def __init__(self):
        self.sources: dict[str, tuple] = {}

    def claim(self, record: Record) -> None:
        src = record.meta.get("source") or {}
        source = (src.get("path"), src.get("sha256"))
        if self.sources.setdefault(record.id, source) != source:
            raise XaiError(f"two records with id {record.id!r} in one run, of different images "
                           f"({self.sources[record.id][0]} and {source[0]}); write them in separate runs, or "
                           "make the records from the images in one run, which gives them distinct ids")


class StreamSink(Sink):
    """Tar stream to a binary file object. A failure ends it with the failure member that
    carries the error (io/stream.py): readers report it, even after `cat`."""

    def __init__(self, fileobj: BinaryIO):
        self.writer = TarWriter(fileobj)

    def __enter__(self):
        self.writer.begin()          # as the command starts: a kill before the first record shows
        return self

    def write(self, record: Record) -> None:
        self.claim(record)
        self.writer.add_record(record)

    def commit(self) -> None:
        self.writer.close()

    def abort(self, exc: BaseException | None = None) -> None:
        if isinstance(exc, BrokenPipeError):      # the reader is gone: nobody to tell
            return
        try:
            self.writer.fail(failure_line(exc))
        except (OSError, ValueError):             # the output itself failed (full disk, closed)
            pass


def failure_line(exc: BaseException | None) -> str:
    """The one line a failed writer leaves in its stream, as the CLI would print it."""
    if isinstance(exc, XaiError):
        text = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif exc is None:
        text = "failed"
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or ["failed"])[0]


class TarFileSink(Sink):
    """Tar file written to a temp name and renamed into place on success only."""

    def __init__(self, path: Path):
        self.path, in_place = output_target(path)
        self.tmp = None
        try:
            if in_place:   # a FIFO or device: no rename; a failed stream lacks its end marker
                self.f = open(self.path, "wb")
                refuse_tty(self.f, "a record stream")
            else:
                sweep_stale_temps(self.path.parent)
                fd, self.tmp = make_temp(self.path)
                self.f = os.fdopen(fd, "wb")
        except OSError as exc:
            raise XaiError(f"{path}: cannot write output ({exc.strerror}); choose a writable -o path") from None
        self.stream = StreamSink(self.f)

    def __enter__(self):
        try:
            self.stream.__enter__()
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None
        return self

    def write(self, record: Record) -> None:
        try:
            self.stream.write(record)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def commit(self) -> None:
        try:
            self.stream.commit()
            self.f.close()
            if self.tmp is not None:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None

    def abort(self, exc: BaseException | None = None) -> None:
        if self.tmp is None:      # written in place (a FIFO): the reader sees why it ends
            self.stream.abort(exc)
        try:
            self.f.close()
        except OSError:
            pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


class DirSink(Sink):
    """One `<id>.npz` per record (each written atomically) plus an appended manifest.

    `command` (e.g. "attribute") makes `exists` require that the finished record went
    through that command, so `xai attribute recs/ -o recs/ --skip-existing` over the
    records of `xai predict` still adds the maps.

    Under --skip-existing the pipeline `lock`s each id (io/locks.py) before it looks at the
    record and keeps the lock until `write`, so overlapping runs make each record once;
    `refresh` reads the manifest lines other runs appended since.
    """

    can_skip = True

    def __init__(self, path: Path, command: str | None = None):
        self.path = path
        self.command = command
        output_folder(path, "-o DIR/ takes a folder for the records")
        sweep_stale_temps(path)
        self._done: dict[str, dict[str, Any]] = {}
        self._read = 0              # bytes of the manifest read so far (whole lines only)
        self.refresh()
        try:
            close_cut_line(path / MANIFEST)
        except OSError as exc:
            raise _write_error(path / MANIFEST, exc) from None
        self.locks = IdLocks(path)
        self.locks.sweep()          # lock files of killed runs

    def file_for(self, record_id: str) -> Path:
        return self.path / f"{record_id}.npz"

    def refresh(self) -> None:
        """Read the manifest lines appended since the last read (by this run or others)."""
        entries, self._read = read_manifest(self.path / MANIFEST, self._read)
        self._done.update((e["id"], e) for e in entries if isinstance(e.get("id"), str))   # later lines win

    def lock(self, record_id: str) -> bool:
        """Lock this id for this run until its record is written; False if another run has it."""
        try:
            return self.locks.acquire(record_id)
        except OSError as exc:
            raise XaiError(f"{self.locks.path(record_id)}: cannot lock ({exc.strerror}); "
                           "check the output folder's permissions") from None

    def unlock(self, record_id: str) -> None:
        self.locks.release(record_id)

    def locked_by(self, record_id: str) -> str:
        return self.locks.holder(record_id)

    def exists(self, record_id: str, sha256: str | None = None) -> bool:
        if not self.file_for(record_id).exists():
            return False
        entry = self._done.get(record_id)
        if entry is None:
            return False  # file without manifest line: killed between the two, redo it
        if sha256 is not None and entry.get("sha256") != sha256:
            return False
        if self.command is not None:
            commands = entry.get("commands") or [entry.get("command")]
            return self.command in commands
        return True

    def finished_by_others(self, record_id: str, sha256: str | None) -> Path | None:
        """The finished record of this id and source that other commands made here, if any: an
        image input under --skip-existing adds to it, rather than replacing its maps."""
        entry, path = self._done.get(record_id), self.file_for(record_id)
        if entry is None or not path.exists() or entry.get("sha256") != sha256:
            return None
        return path

    def write(self, record: Record) -> None:
        self.claim(record)
        target = self.file_for(record.id)
        try:
            atomic_write(target, record.to_bytes())
        except OSError as exc:
            raise _write_error(target, exc) from None
        entry = manifest_entry(record, target.name)
        try:
            append_line(self.path / MANIFEST, json.dumps(entry))
        except OSError as exc:
            # A record without its manifest line would be redone anyway: leave no such file.
            try:
                target.unlink()
            except OSError:
                pass
            raise _write_error(self.path / MANIFEST, exc) from None
        self._done[record.id] = entry
        self.locks.release(record.id)

    def commit(self) -> None:
        self.locks.release_all()

    def abort(self, exc: BaseException | None = None) -> None:
        self.locks.release_all()


def manifest_entry(record: Record, file: str) -> dict[str, Any]:
    src = record.meta.get("source", {})
    history = record.meta.get("history") or [{}]
    return {"id": record.id, "file": file, "source": src.get("path"), "sha256": src.get("sha256"),
            "task": record.task, "command": history[-1].get("command"),
            "commands": [h.get("command") for h in history if h.get("command")], "maps": record.map_keys()}


def output_folder(path: str | os.PathLike, takes: str) -> Path:
    """Create the `-o` folder (parents too) and check that it is writable, before any work.
    `takes` completes the message for a path that is a file, e.g. "-o takes a folder for the figures"."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XaiError(f"{path}: exists and is not a folder; {takes}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XaiError(f"{path}: cannot create output folder ({exc.strerror}); choose a writable -o path") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise XaiError(f"{path}: output folder is not writable; choose a writable -o path")
    return path


def _write_error(path: Path, exc: OSError) -> XaiError:
    return XaiError(f"{path}: cannot write ({exc.strerror or exc}); free space or choose another -o")


class LinesSink(_Transaction):
    """Text lines (JSON Lines) to stdout, or to `-o FILE` written atomically on success.

    With `keep_existing`, the lines already in FILE are kept and the ids they name (with
    their `sha256`) count as done, so `--skip-existing` appends only new inputs' lines;
    the file is still replaced in one rename, never left half-written.
    """

    def __init__(self, output: str | None, *, stdout: TextIO | None = None, keep_existing: bool = False):
        self.path = None if output in (None, "-") else Path(output)
        self.can_skip = self.path is not None
        self._done: dict[str, str | None] = {}
        self._kept: list[str] = []
        self._redone: set[str] = set()
        if self.path is None:
            self.out = stdout if stdout is not None else sys.stdout
            return
        check_file_output(output, "JSON Lines go", "predictions.jsonl")
        self.path, in_place = output_target(self.path)
        self.tmp = None
        if in_place:   # a FIFO or device: written as it comes, nothing to keep or rename
            try:
                self.out = open(self.path, "w", encoding="utf-8")
            except OSError as exc:
                raise XaiError(f"{self.path}: cannot write output ({exc.strerror}); choose a writable -o path") from None
            return
        if keep_existing and self.path.exists():
            try:
                text = self.path.read_text(errors="replace")
            except OSError as exc:
                raise XaiError(f"{self.path}: cannot read it to skip what it holds ({exc.strerror}); "
                               "check its permissions") from None
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    self._kept.append(line)
                    self._done[entry["id"]] = entry.get("sha256")
        sweep_stale_temps(self.path.parent)
        try:
            fd, self.tmp = make_temp(self.path)
        except OSError as exc:
            raise XaiError(f"{self.path}: cannot write output ({exc.strerror}); choose a writable -o path") from None
        self.out = os.fdopen(fd, "w", encoding="utf-8")
        try:
            for line in self._kept:
                self.out.write(line + "\n")
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None

    def exists(self, record_id: str, sha256: str | None = None) -> bool:
        return record_id in self._done and (sha256 is None or self._done[record_id] == sha256)

    def write_line(self, obj: dict[str, Any]) -> None:
        if obj.get("id") in self._done:
            self._redone.add(obj["id"])     # a changed image: its kept line goes at commit
        try:
            self.out.write(json_dumps_strict(obj) + "\n")
            self.out.flush()
        except OSError as exc:
            if self.path is None:
                raise
            raise _write_error(self.path, exc) from None

    def commit(self) -> None:
        if self.path is None:
            return
        try:
            self.out.close()
            if self._redone and self.tmp is not None:
                self._drop_replaced_lines()
            if self.tmp is not None:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None

    def _drop_replaced_lines(self) -> None:
        """The temp file is the kept lines, then this run's: drop kept lines of redone ids."""
        with open(self.tmp, encoding="utf-8") as f:
            lines = f.read().splitlines()
        kept = [line for line in lines[:len(self._kept)] if json.loads(line).get("id") not in self._redone]
        with open(self.tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept + lines[len(self._kept):]))

    def abort(self, exc: BaseException | None = None) -> None:
        if self.path is None:
            return
        try:
            self.out.close()
        except OSError:
            pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def check_file_output(output: str, what: str, example: str) -> None:
    """`-o FILE` before any work: a file (not a folder) in a folder that exists."""
    if Path(output).is_dir() or output.endswith(("/", os.sep)):
        raise XaiUsageError(f"-o {output}: {what} to a file (e.g. -o {example}), not a folder")
    if not Path(output).parent.exists():
        raise XaiError(f"{Path(output).parent}: output folder does not exist; create it or choose another -o")


def json_dumps_strict(obj: Any) -> str:
    """Strict JSON (RFC 8259): NaN and infinities become null, as in record meta."""
    from xaicli.io.record import _finite, _json_default

    return json.dumps(_finite(obj), allow_nan=False, default=_json_default)


def open_sink(output: str | None, *, stdout: BinaryIO | None = None, command: str | None = None) -> Sink:
    """The sink for `-o OUTPUT`. `command` (default: the running xai subcommand) keys
    `--skip-existing` in a folder; see DirSink."""
    if output in (None, "-"):
        out = stdout if stdout is not None else sys.stdout.buffer
        refuse_tty(out, "a record stream")
        return StreamSink(out)
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return DirSink(path, command if command is not None else _current_command())
    if not path.parent.exists():
        raise XaiError(f"{path.parent}: output folder does not exist; create it, or end -o with '/' to write a folder of records")
    return TarFileSink(path)


def _current_command() -> str | None:
    """Name of the xai subcommand being run (Click's context), None outside the CLI."""
    try:
        from typer._click.globals import get_current_context  # Typer >= 0.26 vendors Click
    except ImportError:
        try:
            from click import get_current_context
        except ImportError:  # no CLI at all: skipping then ignores the command
            return None
    ctx = get_current_context(silent=True)
    return ctx.info_name if ctx is not None and ctx.parent is not None else None


def refuse_tty(f: BinaryIO, what: str) -> None:
    try:
        tty = f.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        raise XaiUsageError(
            f"refusing to write {what} to a terminal; pipe it (e.g. '| xai render -o figs/') or use -o FILE.tar or -o DIR/"
        )
