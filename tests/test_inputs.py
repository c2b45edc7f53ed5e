"""Resolving command-line inputs: files, directories, records, streams and stdin."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_record
from helpers_models import write_png

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.inputs import ImageInput, resolve
from xaicli.io.stream import TarWriter


def _png(path: Path, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(path, np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8))


def _kinds(inputs):
    return [(type(i).__name__, i.id) for i in inputs]


def test_directory_expands_to_images_in_sorted_order(tmp_path):
    d = tmp_path / "imgs"
    for name in ["c.png", "a.PNG", "b10.jpg", "b2.tif", "z.dcm"]:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"x")
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"x")
    (d / "sub").mkdir()
    _png(d / "sub" / "deeper.png")
    items = list(resolve([str(d)], records=False))
    assert [i.path.name for i in items] == sorted(["a.PNG", "b10.jpg", "b2.tif", "c.png", "z.dcm"])
    assert all(isinstance(i, ImageInput) for i in items)


def test_explicit_files_keep_command_line_order(tmp_path):
    b, a = _png(tmp_path / "b.png"), _png(tmp_path / "a.png")
    assert [i.id for i in resolve([str(b), str(a)])] == ["b", "a"]


def test_missing_input_fails_before_anything_is_produced(tmp_path):
    good = _png(tmp_path / "good.png")
    with pytest.raises(XaiError, match="no such file"):
        resolve([str(good), str(tmp_path / "missing.png")])


def test_directory_without_inputs_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(XaiError, match="holds no"):
        resolve([str(tmp_path)])


def test_records_and_streams_are_told_apart_from_images(tmp_path):
    img = _png(tmp_path / "img.png")
    rec = tmp_path / "rec.npz"
    rec.write_bytes(make_record("rec").to_bytes())
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add_record(make_record("s1"))
    w.add_record(make_record("s2"))
    w.close()
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    inputs = resolve([str(img), str(rec), str(tmp_path / "s.tar")])
    assert inputs.count is None  # a stream's length is unknown until read
    assert _kinds(inputs) == [("ImageInput", "img"), ("Record", "rec"), ("Record", "s1"), ("Record", "s2")]
    assert resolve([str(img), str(rec)]).count == 2


def test_an_images_only_command_refuses_records_and_stdin(tmp_path):
    rec = tmp_path / "rec.npz"
    rec.write_bytes(make_record("rec").to_bytes())
    with pytest.raises(XaiUsageError):
        resolve([str(rec)], records=False)
    with pytest.raises(XaiUsageError):
        resolve(["-"], records=False)


def test_a_records_only_command_refuses_images(tmp_path):
    img = _png(tmp_path / "img.png")
    with pytest.raises(XaiUsageError, match="reads records"):
        resolve([str(img)], images=False)


def test_no_arguments_reads_stdin_unless_it_is_a_terminal():
    data = make_record("piped").to_bytes()
    assert [r.id for r in resolve([], stdin=io.BufferedReader(io.BytesIO(data)))] == ["piped"]

    class Tty(io.BytesIO):
        def isatty(self):
            return True

    with pytest.raises(XaiUsageError, match="no input"):
        resolve([], stdin=Tty())


def test_empty_stdin_is_an_error():
    with pytest.raises(XaiError, match="empty"):
        list(resolve(["-"], stdin=io.BufferedReader(io.BytesIO(b""))))


def test_same_basename_in_two_folders_gives_distinct_ids(tmp_path):
    a, b = _png(tmp_path / "a" / "x.png", 1), _png(tmp_path / "b" / "x.png", 2)
    ids = [i.id for i in resolve([str(a), str(b)])]
    assert len(set(ids)) == 2 and all(i.startswith("x") for i in ids)


def test_same_basename_gives_distinct_record_files_through_the_cli(cli, tmp_path):
    a, b = _png(tmp_path / "a" / "x.png", 1), _png(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    r = cli(["predict", "-m", "builtin:shapes-seg", "-o", f"{out}/", a, b])
    assert r.exit_code == 0, r.stderr
    npz = sorted(p for p in out.iterdir() if p.suffix == ".npz")
    assert len(npz) == 2
    sources = set()
    for p in npz:
        with np.load(p, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
        assert p.name == f"{meta['id']}.npz"
        sources.add(meta["source"]["path"])
    assert sources == {str(a), str(b)}


# -- an input that is the command's own output is skipped, as grep and tar do --------------------

CLS = "builtin:shapes-cls"


def _stream_ids(data: bytes) -> list[str]:
    import tarfile

    from conftest import npz_members

    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [m.name for m in npz_members(t)]


def test_resolve_skips_the_file_stdout_writes(tmp_path, monkeypatch, caplog):
    import sys

    d = tmp_path / "scans"
    _png(d / "a.png")
    with open(d / "out.tar", "wb") as out:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))      # `> scans/out.tar`
        with caplog.at_level("WARNING", logger="xai"):
            named = _kinds(resolve([str(d), str(d / "out.tar")], output=None))
        with pytest.raises(XaiError, match="empty file"):      # a command that writes no records reads it
            _kinds(resolve([str(d)]))
    assert named == [("ImageInput", "a")]
    assert "out.tar: is this command's output (stdout); not read as an input" in caplog.text


def test_stdout_redirected_into_the_input_folder(tmp_path):
    """`xai predict scans/ > scans/out.tar`: the shell makes out.tar first, so the folder lists it."""
    import os
    import subprocess
    import sys

    d = tmp_path / "scans"
    _png(d / "a.png", 1), _png(d / "b.png", 2)
    with open(d / "out.tar", "wb") as out:
        proc = subprocess.run([sys.executable, "-m", "xaicli", "predict", "-m", CLS, str(d)], stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert f"{d / 'out.tar'}: is this command's output (stdout); not read as an input" in proc.stderr
    assert _stream_ids((d / "out.tar").read_bytes()) == ["a.npz", "b.npz"]


def test_an_earlier_output_in_the_input_folder_is_skipped_but_a_named_one_is_updated(cli, tmp_path):
    d = tmp_path / "scans"
    _png(d / "a.png", 1), _png(d / "b.png", 2)
    first = cli(["predict", "-m", CLS, str(d), "-o", str(d / "out.tar")])
    assert first.exit_code == 0 and "not read as an input" not in first.stderr
    again = cli(["predict", "-m", CLS, str(d), "-o", str(d / "out.tar")])   # out.tar is in scans/ now
    assert again.exit_code == 0, again.stderr
    assert f"{d / 'out.tar'}: is this command's output (-o {d / 'out.tar'}); not read" in again.stderr
    assert _stream_ids((d / "out.tar").read_bytes()) == ["a.npz", "b.npz"]
    # named as the input, -o FILE is its earlier version (the new one goes to a temp file first)
    update = cli(["predict", str(d / "out.tar"), "-o", str(d / "out.tar")])
    assert update.exit_code == 0 and "not read as an input" not in update.stderr, update.stderr
    assert _stream_ids((d / "out.tar").read_bytes()) == ["a.npz", "b.npz"]
