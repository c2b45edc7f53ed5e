"""Reading and writing beside the computation: a GPU should not wait while images are
decoded or records serialised.

`prefetch` runs an iterator (reading, hashing, decoding the next inputs) in a thread,
`background_writes` hands finished records to a writer thread; both through bounded
queues, so memory holds at most `depth` items ahead. Order is kept, and an exception on
either side reaches the main thread where it would have happened without threads (an
input's error after the records before it; a write error at the next write), so errors
stay one line.

The threads pay where the model runs on an accelerator. On a CPU they compete with
torch's own threads for the cores: on 2 cores `xai attribute` ran 1.23x slower in wall
time with them (bench/bench_io_overlap.py, CPU time 1.03x), so the commands turn them on
for CUDA/MPS devices only (`wanted`). `XAI_IO_THREADS=1` forces them on, `0` off.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any, Iterable, Iterator

_END = object()
_POLL = 0.1     # seconds between checks of the stop flag while a queue is full or empty


def enabled() -> bool:
    """The environment's say: off only with XAI_IO_THREADS=0 (the library's default is on)."""
    return os.environ.get("XAI_IO_THREADS", "1") != "0"


def wanted(device: str | None) -> bool:
    """Whether a command on `device` (--device: auto, cpu, cuda[:N], mps) reads ahead and writes
    behind: XAI_IO_THREADS=0/1 decides if set, else only where the model is not on the CPU."""
    if "XAI_IO_THREADS" in os.environ:
        return enabled()
    name = (device or "auto").strip().lower()
    if name == "auto":
        import torch

        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or (mps is not None and mps.is_available())
    return name != "cpu"


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(iterable: Iterable, depth: int = 2, on: bool | None = None) -> Iterator:
    """Items of `iterable`, produced up to `depth` ahead in a daemon thread (`on`: None = `enabled()`)."""
    if not (enabled() if on is None else on):
        yield from iterable
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:      # noqa: BLE001 - handed to the consumer, raised there
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="xai-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=1)            # a decode in progress ends on its own; the thread is a daemon


class _Writer:
    """`write(record)` queues it; the thread calls `sink.write` in order."""

    def __init__(self, sink: Any, depth: int):
        self.sink = sink
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="xai-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.items.get()
            if item is _END:
                return
            if self.error is not None:
                continue                  # after a failed write, drop the rest: the run is failing
            try:
                self.sink.write(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread at its next call
                self.error = exc

    def write(self, record: Any) -> None:
        self._raise()
        while True:
            try:
                self.items.put(record, timeout=_POLL)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Wait until every queued record is written; raise a write's error."""
        self.items.put(_END)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:        # kept: later writes fail too
            raise self.error


@contextlib.contextmanager
def background_writes(sink: Any, depth: int = 2, on: bool | None = None):
    """A writer for `sink` whose `write` returns at once. On leaving, the queued records are
    written (also when the block failed: records already made are kept, as without threads),
    and a write's error is raised unless the block is already failing (`on`: None = `enabled()`)."""
    if not (enabled() if on is None else on):
        yield sink
        return
    writer = _Writer(sink, depth)
    try:
        yield writer
    except BaseException:
        with contextlib.suppress(BaseException):
            writer.close()
        raise
    writer.close()
