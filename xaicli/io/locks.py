"""Advisory locks per record id in an output folder, so that overlapping runs over one inbox
(`xai attribute inbox/ -o out/ --skip-existing` from cron, twice at once) never make the
same record twice.

A lock is `fcntl.flock` on the hidden file `.<id>.npz.lock` next to the record. The kernel
drops a flock when its process dies, however it dies, so the lock of a killed run is free
at once and the next run takes it over (the file it left is reused, then removed). Locks
are only tried, never waited for, so no run waits for another. On NFS, Linux carries flock
over as a POSIX lock to the server.

The holder writes `<host> <pid>` into the file, for messages only. It removes the file
when it lets go; a reader that locked a file just removed (the inode changed under it)
tries again, so a lock is never held twice. The files a killed run left are swept by the
next run into the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

_HOST = socket.gethostname() or "host"
SUFFIX = ".npz.lock"


class IdLocks:
    def __init__(self, folder: Path):
        self.folder = folder
        self.held: dict[str, int] = {}       # id → descriptor of the locked file

    def path(self, record_id: str) -> Path:
        return self.folder / f".{record_id}{SUFFIX}"

    def acquire(self, record_id: str) -> bool:
        """Lock `record_id`; False, at once, when another process holds it."""
        if record_id in self.held:
            return True
        path = self.path(record_id)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)             # the holder removed the file as we locked it: try the new one
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{_HOST} {os.getpid()}\n".encode(), 0)
        self.held[record_id] = fd
        return True

    def holder(self, record_id: str) -> str:
        """'host pid' of the run that holds the lock, for messages."""
        try:
            return self.path(record_id).read_text(errors="replace").strip() or "?"
        except OSError:
            return "?"

    def release(self, record_id: str) -> None:
        fd = self.held.pop(record_id, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path(record_id))   # while still locked: see acquire's inode check
        os.close(fd)

    def sweep(self) -> None:
        """Remove the lock files no process holds (what a killed run left): a lock is taken
        and let go, which removes its file; one another run holds stays."""
        try:
            names = [n for n in os.listdir(self.folder) if n.startswith(".") and n.endswith(SUFFIX)]
        except OSError:
            return
        for name in names:
            record_id = name[1:-len(SUFFIX)]
            with contextlib.suppress(OSError):
                if record_id not in self.held and self.acquire(record_id):
                    self.release(record_id)

    def release_all(self) -> None:
        for record_id in list(self.held):
            self.release(record_id)
