"""Input and output faults found by probing the CLI as a user would: each is one line on
stderr, exit 1 or 2, and leaves nothing partial (see test_bad_inputs.py for the matrix)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import Result, error_line, make_record

from xaicli.errors import XaiError
from xaicli.io.outputs import LinesSink, StreamSink, open_sink
from xaicli.io.record import Record
from xaicli.io.stream import TarWriter

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def _record_file(tmp_path: Path, name: str = "r1") -> Path:
    path = tmp_path / f"{name}.npz"
    rec = make_record(name, maps={"attr/ig": (np.ones((1, 3, 16, 16), np.float32), {"method": "ig"})})
    path.write_bytes(rec.to_bytes())
    return path


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    w = TarWriter(buf)
    for name, data in members.items():
        w.add(name, data)
    w.close()
    return buf.getvalue()


def _with_meta(rec: Record, drop: tuple = (), **changes) -> bytes:
    """The record's bytes with meta fields replaced or dropped, bypassing Record's writer."""
    meta = {k: v for k, v in {**rec.meta, **changes}.items() if k not in drop}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **rec.arrays)
    return buf.getvalue()


# -- usage errors -----------------------------------------------------------------------

@pytest.mark.parametrize("args, hint", [
    (["stats", "--bogus", "x.npz"], "No such option: --bogus; see 'xai stats --help'"),
    (["render", "x.npz", "-o", "f/", "--dpi", "abc"], "'--dpi'"),
    (["predict", "-m", "builtin:shapes-seg", "x.png", "-o"], "'-o' requires an argument"),
    (["frobnicate"], "No such command 'frobnicate'; see 'xai --help'"),
])
def test_click_usage_errors_are_one_line(cli, args, hint):
    r = cli(args)
    assert r.exit_code == 2
    assert hint in error_line(r)
    assert r.stdout == b""


def test_a_command_without_arguments_still_shows_its_help(cli):
    r = cli([])
    assert "Usage: xai" in r.stderr + r.output and "predict" in r.stderr + r.output


# -- writing --------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_stdout_is_one_line(tmp_path):
    rec = _record_file(tmp_path)
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "xaicli", "stats", str(rec)], stdout=full, stderr=subprocess.PIPE,
                           text=True, env=ENV, timeout=120)
    assert r.returncode == 1
    assert "cannot write to stdout (No space left on device)" in error_line(Result(r.returncode, b"", r.stderr))


def test_output_through_a_link_replaces_the_target_and_keeps_the_link(cli, tmp_path):
    rec = _record_file(tmp_path)
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "stats.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    r = cli(["stats", rec, "--format", "csv", "-o", link])
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().splitlines()[0].startswith("id,")


def test_output_to_a_fifo_writes_into_it(cli, tmp_path):
    rec = _record_file(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    r = cli(["stats", rec, "--format", "csv", "-o", fifo])
    reader.join(timeout=60)
    assert r.exit_code == 0, r.stderr
    assert fifo.is_fifo(), "the named pipe was replaced by a file"
    assert got and got[0].decode().startswith("id,")


@pytest.mark.skipif(not os.path.islink("/dev/stdout"), reason="no /dev/stdout link")
def test_output_to_dev_stdout_reaches_the_pipe(tmp_path):
    rec = _record_file(tmp_path)
    r = subprocess.run([sys.executable, "-m", "xaicli", "stats", str(rec), "-f", "csv", "-o", "/dev/stdout"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("id,") and os.path.islink("/dev/stdout")


def test_a_record_stream_into_a_fifo_keeps_it_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.tar"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with open_sink(str(fifo)) as sink:
        sink.write(make_record("a"))
    reader.join(timeout=60)
    assert fifo.is_fifo()
    with tarfile.open(fileobj=io.BytesIO(got[0])) as tar:
        assert tar.getnames() == [".xai-stream.json", "a.npz", ".xai-stream-end.json"]


def test_stats_refuses_a_folder_as_output_before_reading(cli, tmp_path):
    rec = _record_file(tmp_path)
    r = cli(["stats", rec, "-o", f"{tmp_path}/newdir/"])
    assert r.exit_code == 2
    assert "not a folder" in error_line(r)
    assert not (tmp_path / "newdir").exists()


def test_two_images_records_with_one_id_are_refused_in_a_folder(tmp_path):
    a, b = make_record("x"), make_record("x")
    b.meta["source"] = {**b.meta["source"], "path": "/elsewhere/x.png", "sha256": "2" * 64}
    with pytest.raises(XaiError, match="two records with id 'x' in one run, of different images"):
        with open_sink(str(tmp_path / "out") + "/") as sink:
            sink.write(a)
            sink.write(b)
    assert [p.name for p in (tmp_path / "out").glob("*.npz")] == ["x.npz"]
    assert np.array_equal(Record.from_bytes((tmp_path / "out" / "x.npz").read_bytes()).image, a.image)


def test_the_same_record_twice_passes_through_a_stream():
    out = io.BytesIO()
    with StreamSink(out) as sink:
        sink.write(make_record("x"))
        sink.write(make_record("x"))
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert [n for n in tar.getnames() if n.endswith(".npz")] == ["x.npz", "x.npz"]


def test_an_unreadable_jsonl_to_extend_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "pred.jsonl"
    path.write_text('{"id": "a"}\n')

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(XaiError, match="cannot read it to skip what it holds"):
        LinesSink(str(path), keep_existing=True)


# -- reading --------------------------------------------------------------------------

def test_an_unlistable_folder_is_one_line(cli, tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    _record_file(folder)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    r = cli(["stats", folder])
    assert r.exit_code == 1
    assert "cannot list the folder (Permission denied)" in error_line(r)


def test_a_tar_of_images_is_an_error_not_an_empty_success(cli, tmp_path):
    from helpers_models import write_png

    png = tmp_path / "scan.png"
    write_png(png, np.zeros((8, 8), np.uint8))
    r = cli(["stats"], input=_tar({"scan.png": png.read_bytes()}))
    assert r.exit_code == 1
    assert "tar holds no .npz records (first member: scan.png)" in error_line(r)
    assert r.stdout == b""


def test_an_empty_stream_is_nothing_to_do(cli):
    r = cli(["stats"], input=_tar({}))
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"", "")


def test_records_joined_with_cat_on_stdin_are_refused(cli, tmp_path):
    both = make_record("a").to_bytes() + make_record("b").to_bytes()
    r = cli(["stats"], input=both)
    assert r.exit_code == 1
    assert "records joined with cat?" in error_line(r)


@pytest.mark.parametrize("content", ["npy", "png"])
def test_a_file_named_npz_that_is_no_zip(cli, tmp_path, content):
    path = tmp_path / "fake.npz"
    if content == "npy":
        np.save(tmp_path / "arr.npy", np.zeros(3))
        path.write_bytes((tmp_path / "arr.npy").read_bytes())
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    r = cli(["stats", path])
    assert r.exit_code == 1
    assert "not an .npz record (not a zip archive)" in error_line(r)


@pytest.mark.parametrize("bad_id", ["../escaped", "/tmp/abs", "", "a\nb", ".hidden", "-rf", 7])
def test_record_ids_that_are_no_safe_file_name_are_refused(tmp_path, bad_id):
    with pytest.raises(XaiError, match=r"evil.npz: meta \$\.id: expected a (file-name-safe id|string)"):
        Record.from_bytes(_with_meta(make_record("r1"), id=bad_id), "evil.npz")


def test_an_unsafe_id_writes_nothing_outside_the_output(cli, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "evil.npz").write_bytes(_with_meta(make_record("r1"), id="../escaped"))
    r = cli(["render", tmp_path / "in", "-o", tmp_path / "out/", "--dpi", "40"])
    assert r.exit_code == 1
    error_line(r)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == ["in/evil.npz"]


BROKEN = {   # what the probe of issue 17 fed stats and render, and the field each error must name
    "no id": ((("id",), {}), {}, "meta $.id: missing"),
    "maps a list": (((), {"maps": []}), {}, "meta $.maps: expected an object, found an array"),
    "source null": (((), {"source": None}), {}, "meta $.source: expected an object, found null"),
    "source a string": (((), {"source": "scan.png"}), {}, 'meta $.source: expected an object, found the string'),
    "history an object": (((), {"history": {}}), {}, "meta $.history: expected an array, found an object"),
    "a map entry a number": (((), {"maps": {"attr/x/y": 3}}), {}, 'meta $.maps["attr/x/y"]: expected an object'),
    "image flattened": (((), {}), {"image": lambda a: a.reshape(-1)}, 'array "image" shape: expected (H,W)'),
    "image of floats": (((), {}), {"image": lambda a: a.astype(np.float32)}, 'array "image" dtype: expected one of'),
    "map flattened": (((), {}), {"attr/x/y": lambda a: a.reshape(-1)}, 'array "attr/x/y" shape: expected (T,C,H,W)'),
    "map emptied": (((), {}), {"attr/x/y": lambda a: a[:0]}, 'array "attr/x/y" shape: expected (T,C,H,W)'),
    "map of integers": (((), {}), {"attr/x/y": lambda a: a.astype(np.int64)}, 'array "attr/x/y" dtype: expected float'),
}


@pytest.mark.parametrize("command", ["stats", "render"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_record_is_one_line_naming_the_record_and_the_field(cli, tmp_path, case, command):
    (drop, changes), arrays, field = BROKEN[case]
    rec = make_record("r1", maps={"attr/x/y": (np.ones((1, 3, 16, 16), np.float32), {"method": "x"})})
    for key, change in arrays.items():
        rec.arrays[key] = change(rec.arrays[key])
    (tmp_path / "bad.npz").write_bytes(_with_meta(rec, drop, **changes))
    args = [command, tmp_path / "bad.npz"] + (["-o", tmp_path / "figs", "--dpi", "20"] if command == "render" else [])
    line = error_line(cli(args), 1)
    assert line.startswith(f"xai: error: {tmp_path / 'bad.npz'}: {field}"), line
    assert line.endswith("; re-create the record with xai"), line


def test_skip_unreadable_goes_on_past_a_bad_image(cli, tmp_path):
    from helpers_models import write_png
    from xaicli.models.builtin.shapes import make_sample

    for i in range(2):
        write_png(tmp_path / f"s{i}.png", make_sample(i, "segmentation")[0])
    whole = (tmp_path / "s1.png").read_bytes()
    (tmp_path / "s1.png").write_bytes(whole[:300])
    args = ["predict", "-m", "builtin:shapes-seg", "--json", tmp_path]
    r = cli(args)
    assert r.exit_code == 1 and "s1.png: cannot read as an image" in error_line(r)
    r = cli([*args, "--skip-unreadable"])
    assert r.exit_code == 0
    assert [json.loads(line)["id"] for line in r.output.splitlines()] == ["s0"]
    assert r.stderr.startswith("xai: WARNING: skipped: ") and "s1.png" in r.stderr
    r = cli(["predict", "-m", "/nonexistent/model", "--skip-unreadable", "--json", tmp_path])   # no model: still fatal
    assert r.exit_code != 0


def test_a_prediction_without_its_probabilities_is_refused_naming_the_member(cli, tmp_path):
    """Found by make fuzz: `cam` took a record with pred/logits but no pred/probs for predicted
    and failed with KeyError. Logits and probabilities come together."""
    rec = make_record("r1", task="classification", labels=("a", "b"))
    del rec.arrays["pred/probs"]
    (tmp_path / "r1.npz").write_bytes(_with_meta(rec))
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", tmp_path / "r1.npz"]), 1)
    assert 'r1.npz: array "pred/probs": missing, which "pred/logits" needs' in line
