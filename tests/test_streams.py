"""Streams: tar archives of `<id>.npz`, as readable by `tar` as by xai, strict about truncation."""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import failed_stream, make_record

from xaicli.errors import XaiError
from xaicli.io.inputs import read_stdin
from xaicli.io.outputs import StreamSink, open_sink
from xaicli.io.stream import TarWriter, read_tar

SEG = "builtin:shapes-seg"


def _stream(records) -> bytes:
    buf = io.BytesIO()
    w = TarWriter(buf)
    for r in records:
        w.add_record(r)
    w.close()
    return buf.getvalue()


def _records(n=3):
    return [make_record(f"r{i}", seed=i) for i in range(n)]


def _ids(data: bytes, name="<test>") -> list[str]:
    return [r.id for r in read_tar(io.BytesIO(data), name)]


def _member_offsets(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getmembers()


def _one_error_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("xai: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


# -- library ----------------------------------------------------------------------

def test_stream_round_trip_in_order_with_identical_arrays():
    recs = _records()
    back = list(read_tar(io.BytesIO(_stream(recs)), "s"))
    assert [r.id for r in back] == ["r0", "r1", "r2"]
    for a, b in zip(recs, back):
        assert a.meta == b.meta
        for k in a.arrays:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


def test_stream_is_a_standard_tar_of_npz_members():
    data = _stream(_records(2))
    assert len(data) % 10240 == 0  # padded to tar's record size, like GNU tar
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.getnames() == [".xai-stream.json", "r0.npz", "r1.npz", ".xai-stream-end.json"]
        with np.load(t.extractfile("r1.npz"), allow_pickle=False) as npz:
            assert json.loads(str(npz["meta"][()]))["id"] == "r1"


def test_concatenated_streams_read():
    a, b = _stream(_records(2)), _stream([make_record("z", seed=9)])
    assert _ids(a + b) == ["r0", "r1", "z"]
    assert _ids(a + a) == ["r0", "r1", "r0", "r1"]


@pytest.mark.parametrize("where", ["member boundary", "inside a header", "mid-member", "before the end marker",
                                   "inside the end marker"])
def test_truncated_stream_is_an_error(where):
    data = _stream(_records(2))
    m = _member_offsets(data)
    end = m[-1].offset_data + m[-1].size + (-m[-1].size) % 512
    cut = {"member boundary": m[1].offset, "inside a header": m[1].offset + 100,
           "mid-member": m[1].offset_data + m[1].size // 2, "before the end marker": end,
           "inside the end marker": end + 512}[where]
    with pytest.raises(XaiError, match="truncated"):
        _ids(data[:cut])


def test_stream_cut_at_the_first_member_reads_nothing_silently():
    data = _stream(_records(1))
    with pytest.raises(XaiError, match="truncated"):
        _ids(data[:_member_offsets(data)[0].offset_data + 10])


def _members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as t:
        return [m.name for m in t]


def _failed_stream(records, error: str = "boom") -> bytes:
    """What a writer that failed after `records` leaves: the start, the records, the failure member."""
    buf = io.BytesIO()
    with pytest.raises(XaiError):
        with StreamSink(buf) as sink:
            for r in records:
                sink.write(r)
            raise XaiError(error)
    return buf.getvalue()


def _killed(data: bytes) -> bytes:
    """A complete stream as a writer killed after its last record would have left it."""
    return data[:_member_offsets(data)[-1].offset]


def test_a_failed_writer_leaves_its_error_in_the_stream_and_readers_report_it():
    data = _failed_stream(_records(2), "scans/x.png: cannot read as an image")
    assert _members(data) == [".xai-stream.json", "r0.npz", "r1.npz", ".xai-stream-failed.json"]
    with pytest.raises(XaiError, match=r"failed after 2 records \(scans/x.png: cannot read as an image\)"):
        _ids(data)


@pytest.mark.parametrize("first", ["failed", "killed", "killed before its first record"])
def test_a_failed_or_killed_writer_is_reported_after_cat(first):
    good = _stream(_records(2))
    bad = {"failed": _failed_stream([make_record("z")]), "killed": _killed(_stream([make_record("z")])),
           "killed before its first record": _killed(_stream([]))}[first]
    with pytest.raises(XaiError) as err:
        _ids(bad + good)
    assert ("failed after 1 records (boom)" if first == "failed" else "without its end member and another "
            "stream begins") in str(err.value)
    with pytest.raises(XaiError, match="failed after|without its end member at the end of the input"):
        _ids(good + bad)


def test_plain_tars_without_markers_read_alone_and_joined_with_streams(tmp_path):
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as t:
        for r in _records(2):
            data = r.to_bytes()
            info = tarfile.TarInfo(f"{r.id}.npz")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    plain = plain.getvalue()
    xai = _stream([make_record("z")])
    assert _ids(plain) == ["r0", "r1"]
    assert _ids(plain + xai + plain) == ["r0", "r1", "z", "r0", "r1"]
    assert _ids(xai + plain) == ["z", "r0", "r1"]
    with pytest.raises(XaiError, match="without its end member"):   # a plain tar cannot hide a killed stream
        _ids(_killed(xai) + plain)


def test_an_end_member_that_disagrees_is_an_error():
    data = _stream(_records(2))
    m = _member_offsets(data)
    dropped = data[:m[1].offset] + data[m[2].offset:]               # r0 removed from the middle
    with pytest.raises(XaiError, match="holds 1 records but its writer wrote 2"):
        _ids(dropped)
    with pytest.raises(XaiError, match="end member without its start"):
        _ids(data[m[1].offset:])                                       # start member cut off


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_gnu_tar_lists_and_extracts_a_stream_without_a_warning(tmp_path):
    data = _stream(_records(2))
    listed = subprocess.run(["tar", "tvf", "-"], input=data, capture_output=True, check=True)
    assert listed.stderr == b"" and [line.split()[-1] for line in listed.stdout.decode().splitlines()] == \
        [".xai-stream.json", "r0.npz", "r1.npz", ".xai-stream-end.json"]
    out = subprocess.run(["tar", "xf", "-"], input=data, cwd=tmp_path, capture_output=True, check=True)
    assert out.stderr == b""
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["r0.npz", "r1.npz"]


def test_garbage_on_stdin_is_an_error():
    with pytest.raises(XaiError):
        list(read_stdin(io.BytesIO(b"hello, this is not a tar stream" * 40)))
    with pytest.raises(XaiError, match="empty"):
        list(read_stdin(io.BytesIO(b"")))


def test_a_single_npz_on_stdin_reads():
    rec = make_record("solo")
    assert [r.id for r in read_stdin(io.BytesIO(rec.to_bytes()))] == ["solo"]


def test_tar_written_by_gnu_tar_reads(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("no tar")
    for r in _records(2):
        (tmp_path / f"{r.id}.npz").write_bytes(r.to_bytes())
    subprocess.run(["tar", "cf", "s.tar", "r0.npz", "r1.npz"], cwd=tmp_path, check=True)
    assert _ids((tmp_path / "s.tar").read_bytes()) == ["r0", "r1"]


# -- sinks ---------------------------------------------------------------------------

def test_dir_output_writes_one_npz_per_record_and_a_manifest(tmp_path):
    out = tmp_path / "out"
    with open_sink(str(out) + "/") as sink:
        for r in _records(2):
            sink.write(r)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "r0.npz", "r1.npz"]
    lines = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(e["id"], e["file"]) for e in lines] == [("r0", "r0.npz"), ("r1", "r1.npz")]
    with np.load(out / "r1.npz", allow_pickle=False) as npz:
        assert json.loads(str(npz["meta"][()]))["id"] == "r1"


def test_tar_file_output_appears_only_on_success(tmp_path):
    target = tmp_path / "s.tar"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError):
        with open_sink(str(target)) as sink:
            sink.write(make_record("a"))
            assert target.read_bytes() == b"old contents"  # not replaced while writing
            raise RuntimeError("the command failed midway")
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]  # no temp file left
    with open_sink(str(target)) as sink:
        sink.write(make_record("a"))
    assert _ids(target.read_bytes()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]


def test_tar_file_output_into_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(XaiError, match="does not exist"):
        open_sink(str(tmp_path / "nope" / "s.tar"))


# -- through the CLI -------------------------------------------------------------

@pytest.fixture(scope="module")
def seg_images(tmp_path_factory):
    from xaicli.models.builtin.shapes import write_samples

    folder = tmp_path_factory.mktemp("seg")
    write_samples(folder, 2, "segmentation")
    return folder


@pytest.fixture(scope="module")
def seg_stream(seg_images):
    from conftest import invoke

    r = invoke(["predict", "-m", SEG, str(seg_images)])
    assert r.exit_code == 0, r.stderr
    return r.stdout


def test_cli_reads_its_own_stream_and_concatenations(cli, seg_stream):
    r = cli(["predict", "-m", SEG, "-"], input=seg_stream + seg_stream)
    assert r.exit_code == 0, r.stderr
    assert _ids(r.stdout) == ["seg_000", "seg_001", "seg_000", "seg_001"]


def test_cli_reads_streams_from_tar_files_and_cat(cli, seg_stream, tmp_path):
    (tmp_path / "a.tar").write_bytes(seg_stream)
    with tarfile.open(fileobj=io.BytesIO(seg_stream)) as t, tarfile.open(tmp_path / "b.tar", "w") as b:
        b.addfile(t.getmember("seg_000.npz"), t.extractfile("seg_000.npz"))   # a plain tar, as `tar cf` makes
    cat = subprocess.run(["cat", tmp_path / "a.tar", tmp_path / "b.tar"], capture_output=True, check=True).stdout
    r = cli(["predict", "-m", SEG], input=cat)
    assert r.exit_code == 0, r.stderr
    assert _ids(r.stdout) == ["seg_000", "seg_001", "seg_000"]
    r = cli(["predict", "-m", SEG, tmp_path / "b.tar", tmp_path / "a.tar"])
    assert _ids(r.stdout) == ["seg_000", "seg_000", "seg_001"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_tar_xf_gives_plain_npz_files_that_xai_reads_back(cli, seg_stream, tmp_path):
    subprocess.run(["tar", "xf", "-"], input=seg_stream, cwd=tmp_path, check=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [".xai-stream-end.json", ".xai-stream.json", "seg_000.npz", "seg_001.npz"]
    with np.load(tmp_path / "seg_000.npz", allow_pickle=False) as npz:
        assert npz["image"].shape == (96, 96) and npz["pred/mask"].shape == (96, 96)
    r = cli(["predict", "-m", SEG, "--json", tmp_path])
    assert r.exit_code == 0, r.stderr
    assert [json.loads(s)["id"] for s in r.output.splitlines()] == ["seg_000", "seg_001"]
    r = cli(["predict", "-m", SEG, tmp_path / "seg_001.npz"])
    assert _ids(r.stdout) == ["seg_001"]


@pytest.mark.parametrize("where", ["member boundary", "mid-member"])
def test_cli_truncated_stream_is_a_one_line_error(cli, seg_stream, where):
    m = _member_offsets(seg_stream)[1]
    cut = m.offset if where == "member boundary" else m.offset_data + m.size // 2
    r = cli(["predict", "-m", SEG, "-"], input=seg_stream[:cut])
    assert r.exit_code == 1
    line = _one_error_line(r)
    assert "truncated" in line
    assert "xai: error: " + failed_stream(r.stdout) == line     # no record out, and the reason passed on


def test_cat_of_a_failed_producers_stream_and_a_good_one_is_an_error(cli, seg_images, tmp_path):
    """The case of issue 17: `cat fail.tar good.tar | xai stats` was accepted."""
    broken = tmp_path / "zz_broken.png"
    broken.write_bytes((seg_images / "seg_001.png").read_bytes()[:200])
    args = ["attribute", "-m", SEG, "--method", "saliency"]
    fail = cli([*args, seg_images / "seg_000.png", broken])
    assert fail.exit_code == 1 and "zz_broken.png" in fail.stderr
    assert _members(fail.stdout) == [".xai-stream.json", "seg_000.npz", ".xai-stream-failed.json"]
    good = cli([*args, seg_images / "seg_001.png"])
    assert good.exit_code == 0, good.stderr
    assert len(cli(["stats"], input=good.stdout).output.splitlines()) == 1
    r = cli(["stats"], input=fail.stdout + good.stdout)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "<stdin>: the command that wrote this stream failed after 1 records" in lines[0]
    assert "zz_broken.png: cannot read as an image" in lines[0], lines[0]


def test_cli_dir_output(cli, seg_images, tmp_path):
    out = tmp_path / "recs"
    r = cli(["predict", "-m", SEG, "-o", f"{out}/", seg_images])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == b""
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "seg_000.npz", "seg_001.npz"]
    manifest = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["file"] for e in manifest] == ["seg_000.npz", "seg_001.npz"]
    assert manifest[0]["source"] == str(seg_images / "seg_000.png")


def test_cli_tar_file_output(cli, seg_images, tmp_path):
    out = tmp_path / "s.tar"
    r = cli(["predict", "-m", SEG, "-o", out, seg_images / "seg_001.png"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == b""
    assert _ids(out.read_bytes()) == ["seg_001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]


def test_binary_output_to_a_terminal_is_refused_with_a_hint(seg_images):
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "xaicli", "predict", "-m", SEG, str(seg_images / "seg_000.png")],
                              stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(slave)
    written = b""
    try:
        os.set_blocking(master, False)
        written = os.read(master, 1 << 16)
    except (BlockingIOError, OSError):
        pass
    finally:
        os.close(master)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xai: error:") and "terminal" in lines[0], err
    assert "-o" in lines[0]  # the hint: where to put it instead
    assert b"PK" not in written and len(written) == 0


class _ClosedPipe(io.RawIOBase):
    """A stdout whose reader went away (`| head`): every write raises EPIPE."""

    def writable(self):
        return True

    def write(self, b):
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_ends_quietly_with_success(seg_images):
    from xaicli.cli import app as app_module

    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"")))
    sys.stdout, sys.stderr = io.TextIOWrapper(io.BufferedWriter(_ClosedPipe())), err
    try:
        code = app_module.run(["predict", "-m", SEG, str(seg_images)])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    assert code == 0
    assert err.getvalue() == ""
