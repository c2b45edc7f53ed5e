"""Atomic file writes: a temp file in the target's folder, then rename.

An interrupted run never leaves a half-written file under the final name, which is
what lets `--skip-existing` trust that an existing output is complete.

Temp files are hidden and named `.<name>.xai-<host>-<pid>-<random>.tmp`. Ctrl-C and
errors remove them; `kill -9` (or a power cut) cannot, so `sweep_stale_temps` removes
those of processes on this host that no longer run. It never touches a temp file of a
live process or of another host, so concurrent writers (SLURM tasks sharing a folder on
a network file system) are safe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from xaicli.errors import XaiError

_HOST = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname() or "host")[:40]
_TEMP = re.compile(r"^\..+\.xai-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^.]*\.tmp$")


def temp_prefix(name: str) -> str:
    """Prefix of a temp file for `name`, by this process (mkstemp adds random letters)."""
    return f".{name}.xai-{_HOST}-{os.getpid()}-"


def make_temp(path: Path) -> tuple[int, str]:
    """mkstemp in the target's folder: (fd, temp path)."""
    return tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent or ".")


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where `-o path` really goes, and whether it must be written in place.

    A link is followed, so the link stays and its target is replaced (a rename onto the
    link would replace the link). A FIFO or a device (`-o /dev/stdout`, a named pipe)
    cannot be replaced by a rename: it is written in place, like a shell redirection.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return path, True   # by its own name: /dev/stdout's target, pipe:[N], is no path
    return (Path(os.path.realpath(path)) if path.is_symlink() else path), False


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temp file that replaces `path` only if the block succeeds."""
    path, in_place = output_target(path)
    if in_place:
        with open(path, "wb") as f:
            yield f
        return
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write(2) on an O_APPEND descriptor.

    POSIX makes such appends atomic with respect to each other, so concurrent SLURM
    tasks sharing one manifest never interleave half lines. A short write (full disk)
    raises OSError; `close_cut_line` repairs what it leaves before the next run appends.
    """
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)


def manifest_entries(path: str | os.PathLike) -> Iterator[dict]:
    """The JSON objects of a manifest's lines, oldest first. A line cut short (a writer stopped
    by a full disk or kill -9) is skipped: what it described is redone. No file: no entries."""
    yield from read_manifest(path)[0]


def read_manifest(path: str | os.PathLike, start: int = 0) -> tuple[list[dict], int]:
    """(the JSON objects of the manifest's whole lines from byte `start` on, the byte where they
    end): a reader that keeps the end reads only what writers appended since. A last line
    without its newline is left for the next read (still being appended, or cut short)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    except OSError as exc:
        raise XaiError(f"{path}: cannot read the manifest ({exc.strerror}); check permissions") from None
    whole = data[:data.rfind(b"\n") + 1]
    entries = []
    for line in whole.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries, start + len(whole)


def close_cut_line(path: str | os.PathLike) -> None:
    """If the file ends inside a line (a writer cut short by a full disk), end that line,
    so the damaged line never swallows the next one appended. Called once when a writer
    opens the file, not per line: a check racing another task's append could only add a
    blank line, which readers skip."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
    finally:
        os.close(fd)


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files left in `folder` by killed xai processes of this host; return them."""
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if not m or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        p = Path(folder) / name
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
