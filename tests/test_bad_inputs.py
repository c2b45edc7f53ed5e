"""Bad inputs against every command, in one matrix.

Each failure is one line on stderr (`xai: error: ...`), exit 1 (runtime) or 2 (usage), no
traceback, nothing on stdout, and no partial file: whatever is left in the output is a
complete record listed in its manifest (a folder run that failed on its third input keeps the
first two), never a half-written or temp file.

Rows: the foundation's list (tests/test_predict_cli.py), plus a NaN image, an image over
--max-pixels, a record without what the command needs; then `| head -c 100`, binary output
to a terminal (a pty), an unwritable output folder and a full disk (RLIMIT_FSIZE) as their
own tests.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_record, npz_members
from helpers_models import write_png

SEG = "builtin:shapes-seg"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
TESTS = Path(__file__).resolve().parent
COMMANDS = ["predict", "attribute", "cam", "stats", "render", "report"]
MODEL_COMMANDS = ["predict", "attribute", "cam"]
FAST = {"predict": [], "attribute": ["--steps", "2"], "cam": [], "stats": [], "render": ["--dpi", "40"],
        "report": ["--dpi", "20", "--thumb-size", "16"]}


def _npz(rec) -> bytes:
    return rec.to_bytes()


def _seg_image() -> np.ndarray:
    from xaicli.models.builtin.shapes import make_sample

    return make_sample(3, "segmentation")[0][:64, :64]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch
    from conftest import invoke
    from helpers_models import smp_unet_resnet18

    d = tmp_path_factory.mktemp("bad")
    good = write_png(d / "good.png", _seg_image())
    twin = write_png(d / "twin.png", _seg_image()[::-1])
    (d / "notes.txt").write_text("not an image\n")
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    import imageio.v3 as iio

    nan = np.full((64, 64), 0.5, np.float32)
    nan[10, 10] = np.nan
    iio.imwrite(d / "nan.tif", nan)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({"schema": "xai.record/2", "id": "future"})),
             image=np.zeros((32, 32), np.uint8))
    (d / "future.npz").write_bytes(buf.getvalue())
    stream = invoke(["predict", "-m", SEG, good, twin]).stdout
    with tarfile.open(fileobj=io.BytesIO(stream)) as t:
        second = npz_members(t)[1]
    no_image = invoke(["predict", "-m", SEG, good, "--no-image"]).stdout
    with tarfile.open(fileobj=io.BytesIO(no_image)) as t:
        (d / "no_image.npz").write_bytes(t.extractfile(npz_members(t)[0]).read())
    with tarfile.open(fileobj=io.BytesIO(stream)) as t:
        (d / "no_maps.npz").write_bytes(t.extractfile(npz_members(t)[0]).read())
    maps = {"attr/integrated_gradients/black": (np.ones((1, 3, 16, 16), np.float32), {"kind": "attribution"})}
    (d / "rec.npz").write_bytes(_npz(make_record("rec", maps=maps)))
    nan_map = np.ones((1, 3, 16, 16), np.float32)
    nan_map[0, 0, 3, 3] = np.nan
    (d / "nan_map.npz").write_bytes(_npz(make_record("nan_map", maps={
        "attr/integrated_gradients/black": (nan_map, {"kind": "attribution"})})))
    write_png(d / "img64.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    torch.save(smp_unet_resnet18(classes=2).state_dict(), d / "unet_r18.pth")
    return {"d": d, "good": good, "stream": stream, "cut_boundary": stream[:second.offset],
            "cut_member": stream[:second.offset_data + second.size // 2]}


def _case(name: str, command: str, f: dict):
    """(args, stdin bytes, expect) for this command, or None where the row does not apply."""
    d, good = f["d"], f["good"]
    model = command in MODEL_COMMANDS
    first = [good] if model else [d / "rec.npz"]
    m = ["-m", SEG] if model else []
    rows = {
        "missing input": (m + [*first, d / "missing.png"], None),
        "text file": (m + [*first, d / "notes.txt"], None),
        "garbage png": (m + [*first, d / "garbage.png"], None),
        "empty stdin": (m + ["-"], b""),
        "empty stdin, no args": (m, b""),
        "truncated at a member boundary": (m + ["-"], f["cut_boundary"]),
        "truncated mid-member": (m + ["-"], f["cut_member"]),
        "unknown schema": (m + [*first, d / "future.npz"], None),
        "NaN image": (m + [d / "nan.tif"], None) if model else ([d / "nan_map.npz"], None),
        "over --max-pixels": (m + [good, "--max-pixels", "100"], None) if model else None,
        "record without what it needs": ((m + [d / "no_image.npz"], None) if model else
                                         ([d / "no_maps.npz"] + (["--layout", "grid"] if command == "render" else []),
                                          None)),
    }
    if command not in ("render", "report"):  # the commands that load a model (stats: for faithfulness)
        target = [good] if model else [d / "rec.npz"]
        rows.update({
            "missing model dir": (["-m", d / "no_such_model", *target], None),
            "state dict not fitting --arch": (["-m", d / "unet_r18.pth", "--arch", "unet:resnet34",
                                               d / "img64.png" if model else d / "rec.npz"], None),
            "unknown --arch": (["-m", d / "unet_r18.pth", "--arch", "nosuchnet:resnet18", *target], None),
            "--device cuda without CUDA": (["-m", SEG, "--device", "cuda", *target], None),
        })
    row = rows.get(name)
    if row is None:
        return None
    args, data = row
    # NaN in a record's map is data, not an error: stats reports it (nonfinite, null metrics), render draws it.
    # A record without maps is a row of a report.
    expect = "ok" if (name == "NaN image" and not model) or (
        name == "record without what it needs" and command == "report") else "error"
    return [command, *FAST[command], *args], data, expect


ROWS = ["missing input", "text file", "garbage png", "empty stdin", "empty stdin, no args",
        "truncated at a member boundary", "truncated mid-member", "unknown schema", "missing model dir",
        "state dict not fitting --arch", "unknown --arch", "--device cuda without CUDA", "NaN image",
        "over --max-pixels", "record without what it needs"]


def _output(command: str, folder: Path) -> list[str]:
    return {"stats": ["-o", folder / "stats.jsonl"], "render": ["-o", folder / "figs"],
            "report": ["-o", folder / "report"]}.get(command, ["-o", f"{folder}/records/"])


def _messages(stderr: str) -> list[str]:
    """stderr lines but the warnings about inputs finished before the failure (e.g. IG's
    convergence warning at --steps 2): those are not part of the failure's message."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("xai: WARNING: ")]


def assert_one_line_error(code: int, stderr: str, stdout: bytes = b""):
    assert code in (1, 2), (code, stderr)
    lines = _messages(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("xai: error: ") and "Traceback" not in stderr, stderr
    assert "internal error" not in lines[0], lines[0]
    assert stdout == b""


def assert_no_partial_files(folder: Path):
    """Only complete outputs: records that load and are in the manifest, figures listed in
    figures.jsonl; no temp files, no output file of a failed stats run."""
    from xaicli.io.record import Record

    for p in folder.rglob("*"):
        if p.is_dir():
            continue
        assert not p.name.startswith("."), f"temp file left: {p}"
        if p.name == "manifest.jsonl":
            listed = {json.loads(s)["file"] for s in p.read_text().splitlines()}
            assert listed == {q.name for q in p.parent.glob("*.npz")}
        elif p.suffix == ".npz":
            Record.from_bytes(p.read_bytes(), str(p))
        elif p.name != "figures.jsonl" and p.parent.name not in ("figs", "figures", "thumbs"):
            raise AssertionError(f"unexpected output {p}")     # e.g. the index.html of a failed report


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("command", COMMANDS)
def test_matrix(cli, files, tmp_path, command, row):
    case = _case(row, command, files)
    if case is None:
        why = "reads no images" if row == "over --max-pixels" else "loads no model"
        pytest.skip(f"not applicable: xai {command} {why}")
    if row == "--device cuda without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this host has CUDA")
    args, data, expect = case
    r = cli([*args, *_output(args[0], tmp_path)], input=data)
    if expect == "ok":
        assert r.exit_code == 0, r.stderr
        if command == "stats":
            text = (tmp_path / "stats.jsonl").read_text()
            assert "NaN" not in text
            (row_,) = [json.loads(s) for s in text.splitlines()]
            assert row_["nonfinite"] == 1 and row_["sparseness"] is None
        if command == "report":
            assert r.output.strip() == str(tmp_path / "report" / "index.html")
        return
    if command == "render":
        # render prints each figure's path once the figure is complete: a run that fails on
        # its second record has printed the first one's, and that figure is whole.
        for line in r.output.splitlines():
            assert Path(line).is_file() and Path(line).read_bytes().startswith(b"\x89PNG"), line
        assert_one_line_error(r.exit_code, r.stderr)
    else:
        assert_one_line_error(r.exit_code, r.stderr, r.stdout)
    assert_no_partial_files(tmp_path)


# -- `| head -c 100`: the reader goes away; xai ends quietly with success --------------------

@pytest.fixture(scope="module")
def piped_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("piped")
    many = d / "many"
    many.mkdir()
    for i in range(3):
        write_png(many / f"s{i}.png", np.roll(_seg_image(), 9 * i, axis=1))
    maps = {f"cam/gradcam/l{j}": (np.random.default_rng(j).random((1, 16, 16), np.float32), {"kind": "cam"})
            for j in range(8)}
    recs = d / "recs"
    recs.mkdir()
    for i in range(10):  # 80 rows of stats: more than a pipe holds
        (recs / f"r{i:02d}.npz").write_bytes(_npz(make_record(f"r{i:02d}", maps=maps)))
    return many, recs


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "report"])   # report: one short line
def test_head_c_100_ends_quietly(piped_inputs, tmp_path, command):
    """`xai ... | head -c 100` with a real `head` process on the other end of a real pipe."""
    from xaicli.cli import app as app_module
    from xaicli.cli.state import settings

    many, recs = piped_inputs
    args = {"predict": ["predict", "-m", SEG, many],
            "attribute": ["attribute", "-m", SEG, "--steps", "2", many],
            "cam": ["cam", "-m", SEG, many],
            "stats": ["stats", recs],
            "render": ["render", recs, "-o", tmp_path / "figs", "--dpi", "20", "--split"]}[command]
    read_end, write_end = os.pipe()
    head = subprocess.Popen(["head", "-c", "100"], stdin=read_end, stdout=subprocess.PIPE)
    os.close(read_end)
    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"")))
    sys.stdout = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True)
    sys.stderr = err
    try:
        code = app_module.run([str(a) for a in args])
    finally:
        try:
            sys.stdout.close()
        except OSError:  # the data left in the buffer has nowhere to go: that is the point
            pass
        sys.stdin, sys.stdout, sys.stderr = saved
        settings.verbosity, settings.quiet, settings.debug = 0, False, False
    got, _ = head.communicate(timeout=60)
    assert len(got) == 100
    assert code == 0, err.getvalue()
    assert _messages(err.getvalue()) == [], err.getvalue()  # no error, no traceback, no "Broken pipe"


# -- binary output to a terminal: refused before any work; text output is fine ---------------

def _invoke_on_tty(args: list) -> tuple[int, str, bytes]:
    import pty

    from xaicli.cli import app as app_module
    from xaicli.cli.state import settings

    master, slave = pty.openpty()
    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"")))
    sys.stdout = io.TextIOWrapper(io.FileIO(slave, "w", closefd=False), write_through=True)
    sys.stderr = err
    try:
        code = app_module.run([str(a) for a in args])
        sys.stdout.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        settings.verbosity, settings.quiet, settings.debug = 0, False, False
    os.set_blocking(master, False)
    written = b""
    try:
        while True:
            written += os.read(master, 1 << 16)
    except (BlockingIOError, OSError):
        pass
    os.close(slave)
    os.close(master)
    return code, err.getvalue(), written


@pytest.mark.parametrize("command", COMMANDS)
def test_binary_output_to_a_terminal(files, tmp_path, command):
    d = files["d"]
    args = {"predict": ["predict", "-m", SEG, files["good"]],
            "attribute": ["attribute", "-m", SEG, "--steps", "2", files["good"]],
            "cam": ["cam", "-m", SEG, files["good"]],
            "stats": ["stats", d / "rec.npz"],
            "render": ["render", d / "rec.npz", "-o", tmp_path / "figs", "--dpi", "20"],
            "report": ["report", d / "rec.npz", "-o", tmp_path / "report", "--dpi", "20"]}[command]
    code, err, written = _invoke_on_tty(args)
    if command in MODEL_COMMANDS:  # a record stream is binary: refused, with where to put it instead
        assert code == 2, err
        assert_one_line_error(code, err)
        assert "terminal" in err and "-o" in err
        assert written == b""
    else:  # JSON Lines and figure paths are text: a terminal is a fine place for them
        assert code == 0, err
        assert written.strip(), command
        assert b"PK" not in written


# -- unwritable output folder, full disk ------------------------------------------------------

DRIVER = """
import json, os, resource, sys
sys.path.insert(0, {tests!r})
import matplotlib.pyplot  # build the font cache before any file-size limit
from conftest import invoke
results = []
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for name, args, fsize in json.load(open(sys.argv[1])):
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, hard))
    try:
        r = invoke(args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    results.append({{"name": name, "code": r.exit_code, "stderr": r.stderr, "stdout": len(r.stdout)}})
print(json.dumps(results))
"""


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into. Permissions do it for a normal user; root writes
    anywhere, so for root it is a read-only tmpfs (skipped where root may not mount)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        os.chmod(ro, 0o555)
        yield ro
        os.chmod(ro, 0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "xai-test-ro", str(ro)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs ({mount.stderr.strip()}): "
                    "no folder is unwritable for root")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def _run_driver(folder: Path, cases: list) -> dict[str, dict]:
    (folder / "cases.json").write_text(json.dumps(cases))
    (folder / "driver.py").write_text(DRIVER.format(tests=str(TESTS)))
    proc = subprocess.run([sys.executable, str(folder / "driver.py"), str(folder / "cases.json")],
                          capture_output=True, text=True, env={**ENV, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["name"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}


def test_unwritable_output_folder_and_full_disk(files, tmp_path, read_only_dir):
    """Every command, into a folder it may not write, and into one where files may not grow
    past 20 kB (RLIMIT_FSIZE: write(2) fails with EFBIG, as it fails with ENOSPC on a full
    disk), in one interpreter (torch imported once)."""
    d = files["d"]
    maps = {f"cam/gradcam/l{j}": (np.random.default_rng(j).random((1, 16, 16), np.float32), {"kind": "cam"})
            for j in range(30)}
    (tmp_path / "many_maps.npz").write_bytes(_npz(make_record("many", maps=maps)))  # ~40 kB of stats
    limit = 20_000  # bytes per file: less than one record, one figure, or the stats
    cases = []
    for command in COMMANDS:
        inp = [files["good"]] if command in MODEL_COMMANDS else [
            tmp_path / "many_maps.npz" if command == "stats" else d / "rec.npz"]
        m = ["-m", SEG] if command in MODEL_COMMANDS else []
        for what, folder, fsize in (("unwritable", read_only_dir, 0), ("disk full", tmp_path / "rw" / command, limit)):
            folder.mkdir(parents=True, exist_ok=True)
            out = {"stats": ["-o", folder / "stats.jsonl"], "render": ["-o", folder / "figs", "--dpi", "300"],
                   "report": ["-o", folder / "report", "--dpi", "300"]}.get(command, ["-o", f"{folder}/"])
            cases.append([f"{command} {what}", [str(a) for a in [command, *FAST[command], *m, *inp, *out]], fsize])
    results = _run_driver(tmp_path, cases)
    assert len(results) == 2 * len(COMMANDS)
    for name, r in results.items():
        assert r["code"] in (1, 2), (name, r)
        assert r["stdout"] == 0, name
        lines = _messages(r["stderr"])
        assert len(lines) == 1 and lines[0].startswith("xai: error: "), (name, r["stderr"])
        assert "Traceback" not in r["stderr"] and "internal error" not in lines[0], (name, r["stderr"])
        if name.endswith("disk full"):
            assert "File too large" in lines[0] or "No space" in lines[0], (name, lines[0])
        else:
            assert "writ" in lines[0] or "Read-only" in lines[0] or "Permission" in lines[0], (name, lines[0])
    assert list(read_only_dir.iterdir()) == []
    assert_no_partial_files(tmp_path / "rw")
