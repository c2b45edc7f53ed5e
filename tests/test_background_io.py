"""Reading ahead and writing behind (xaicli/io/background.py): order, errors where they belong."""

from __future__ import annotations

import threading
import time

import pytest

from xaicli.io.background import background_writes, prefetch


def test_prefetch_keeps_order_and_reads_ahead():
    seen = []

    def source():
        for i in range(6):
            seen.append(i)
            yield i

    it = prefetch(source(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert seen[:4] == [0, 1, 2, 3] and len(seen) <= 4       # one handed out, two queued, one waiting to be
    assert list(it) == [1, 2, 3, 4, 5]


def test_prefetch_raises_an_items_error_after_the_items_before_it():
    def source():
        yield "a"
        yield "b"
        raise ValueError("c is unreadable")

    got = []
    with pytest.raises(ValueError, match="c is unreadable"):
        for x in prefetch(source()):
            got.append(x)
    assert got == ["a", "b"]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    it = prefetch(source(), depth=1)
    assert next(it) == 0
    it.close()
    assert closed.wait(2)
    assert not any(t.name == "xai-prefetch" and t.is_alive() for t in threading.enumerate())


class ListSink:
    def __init__(self, fail_on=None, delay=0.0):
        self.items, self.fail_on, self.delay = [], fail_on, delay

    def write(self, item):
        time.sleep(self.delay)
        if item == self.fail_on:
            raise OSError(28, "No space left on device")
        self.items.append(item)


def test_background_writes_keep_order_and_finish_on_exit():
    sink = ListSink(delay=0.01)
    with background_writes(sink) as out:
        for i in range(20):
            out.write(i)
        assert out is not sink                      # it really is the threaded writer
    assert sink.items == list(range(20))


def test_a_write_error_reaches_the_caller():
    sink = ListSink(fail_on=3)
    with pytest.raises(OSError, match="No space"):
        with background_writes(sink) as out:
            for i in range(50):
                out.write(i)
                time.sleep(0.005)
    assert sink.items == [0, 1, 2]


def test_records_made_before_a_failure_are_still_written():
    sink = ListSink(delay=0.05)
    with pytest.raises(RuntimeError, match="model failed"):
        with background_writes(sink) as out:
            out.write("r1")
            out.write("r2")
            raise RuntimeError("model failed")
    assert sink.items == ["r1", "r2"]


def test_threads_off_runs_inline(monkeypatch):
    monkeypatch.setenv("XAI_IO_THREADS", "0")
    sink = ListSink()
    with background_writes(sink) as out:
        assert out is sink
    before = threading.active_count()
    assert list(prefetch(iter([1, 2]))) == [1, 2]
    assert threading.active_count() == before


@pytest.mark.parametrize("device,env,on", [("cpu", None, False), ("cuda", None, True), ("cuda:1", None, True),
                                           ("mps", None, True), ("cpu", "1", True), ("cuda", "0", False)])
def test_commands_read_ahead_on_accelerators_only_unless_told(monkeypatch, device, env, on):
    """On a CPU the threads compete with torch's for the cores (1.23x wall time on 2 cores)."""
    from xaicli.io.background import wanted

    if env is None:
        monkeypatch.delenv("XAI_IO_THREADS", raising=False)
    else:
        monkeypatch.setenv("XAI_IO_THREADS", env)
    assert wanted(device) is on


def test_auto_follows_what_torch_finds(monkeypatch):
    import torch

    from xaicli.io.background import wanted

    monkeypatch.delenv("XAI_IO_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert wanted("auto") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert wanted("auto") is False


@pytest.mark.parametrize("threads", ["1", "0"])
def test_cli_an_unreadable_image_stops_the_run_after_the_records_before_it(cli, tmp_path, monkeypatch, threads):
    monkeypatch.setenv("XAI_IO_THREADS", threads)        # the accelerator's path (threads) and the CPU's
    from conftest import error_line
    from helpers_models import rgb_image, write_png

    write_png(tmp_path / "a.png", rgb_image(64, 64, seed=1))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)        # cut short
    write_png(tmp_path / "c.png", rgb_image(64, 64, seed=2))
    out = tmp_path / "out"
    args = ["cam", "-m", "builtin:shapes-cls", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png",
            "-o", f"{out}/"]
    line = error_line(cli(args), 1)
    assert "b.png" in line
    assert sorted(p.name for p in out.glob("*.npz")) == ["a.npz"]
    r = cli(args + ["--skip-unreadable"])
    assert r.exit_code == 0 and "b.png" in r.stderr
    assert sorted(p.name for p in out.glob("*.npz")) == ["a.npz", "c.npz"]
