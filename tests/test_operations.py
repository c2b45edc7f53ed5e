"""Operations (#7): shards, --skip-existing over a growing folder, interrupted runs, the
manifest, predict --json -o FILE. SLURM itself: test_slurm.py; the examples: test_examples.py."""

from __future__ import annotations

import hashlib
import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, no_record_out
from helpers_models import write_png

from xaicli.errors import XaiError, XaiUsageError
from xaicli.io.record import Record
from xaicli.io.atomic import append_line, sweep_stale_temps, temp_prefix
from xaicli.io.ids import Shard, parse_shard, shard_of
from xaicli.io.inputs import resolve
from xaicli.io.outputs import MANIFEST, DirSink, LinesSink, json_dumps_strict

SEG = "builtin:shapes-seg"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _scans(folder: Path, count: int, start: int = 0, size: int | None = None) -> list[Path]:
    from xaicli.models.builtin.shapes import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        img = make_sample(i, "segmentation")[0]
        if size:
            img = np.tile(img, (size // img.shape[0] + 1, size // img.shape[1] + 1))[:size, :size]
        paths.append(write_png(folder / f"scan_{i:03d}.png", img))
    return paths


def _manifest(folder: Path) -> list[dict]:
    p = folder / MANIFEST
    return [json.loads(s) for s in p.read_text().splitlines()] if p.exists() else []


def _strict(text: str) -> list:
    """Parse JSON Lines refusing NaN / Infinity (which json.loads accepts by default)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return [json.loads(s, parse_constant=refuse) for s in text.splitlines()]


# -- the shard hash --------------------------------------------------------------------------

def test_shard_is_sha1_of_the_record_id_modulo_n():
    for rid in ("scan_001", "a", "Ünïcode-id", "x" * 80):
        want = int.from_bytes(hashlib.sha1(rid.encode()).digest()[:8], "big")
        assert [shard_of(rid, n) for n in (1, 2, 3, 7, 64)] == [want % n for n in (1, 2, 3, 7, 64)]
    # Pinned values: changing the hash would silently reshuffle array jobs that are half done.
    assert [shard_of(f"scan_{i:03d}", 4) for i in range(8)] == [3, 2, 3, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_partition_every_id_set(n):
    ids = [f"img_{i}" for i in range(300)] + ["a", "b", "scan_001-1a2b3c4d"]
    shards = [[i for i in ids if i in Shard(k, n)] for k in range(n)]
    assert sorted(sum(shards, [])) == sorted(ids)                    # union: everything, no repeats
    if n > 1:
        assert all(len(s) > 0 for s in shards)                      # and actually split


def test_shard_assignment_does_not_depend_on_the_process():
    ids = [f"scan_{i:03d}" for i in range(50)]
    code = ("import json,sys; from xaicli.io.ids import shard_of; "
            "print(json.dumps([shard_of(i, 5) for i in json.loads(sys.argv[1])]))")
    got = []
    for seed in ("1", "2"):  # a different str hash() salt each time
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                              env={**ENV, "PYTHONHASHSEED": seed}, timeout=60, check=True)
        got.append(json.loads(proc.stdout))
    assert got[0] == got[1] == [shard_of(i, 5) for i in ids]


def test_parse_shard():
    assert parse_shard(None) is None
    s = parse_shard("2/5")
    assert (s.index, s.count) == (2, 5)
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert (parse_shard("slurm", env).index, parse_shard("slurm", env).count) == (3, 4)
    # --array=1-4 and --array=0-6:2: still shards 0..3 of 4
    assert parse_shard("slurm", {**env, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1"}).index == 0
    step = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_STEP": "2"}
    assert parse_shard("slurm", step).index == 3
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("slurm", {})
    with pytest.raises(ValueError, match="--array"):  # --array=1,5,9: not evenly spaced from 0
        parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"})


def test_a_task_resubmitted_alone_keeps_its_shard():
    """sbatch --array=5 after a 16-task array: SLURM says one task, min = max = 5."""
    alone = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "5",
             "SLURM_ARRAY_TASK_MAX": "5", "SLURM_ARRAY_TASK_STEP": "1"}
    with pytest.raises(ValueError, match="one task .id 5.* slurm/N"):   # plain slurm would take every input
        parse_shard("slurm", alone)
    s = parse_shard("slurm/16", alone)
    assert (s.index, s.count) == (5, 16)
    assert parse_shard("slurm/16", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "16"}).index == 5
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}).count == 1
    for bad, words in (("slurm/4", "not in 0..3"), ("slurm/x", "slurm/N")):
        with pytest.raises(ValueError, match=words):
            parse_shard(bad, alone)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID is not set"):
        parse_shard("slurm/4", {})


def test_resolve_applies_the_shard_after_assigning_ids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _scans(a, 3)
    _scans(b, 3)  # same stems in both folders: ids get the path hash, over the whole list
    full = [i.id for i in resolve([str(a), str(b)], records=False)]
    parts = [[i.id for i in resolve([str(a), str(b)], records=False, shard=f"{k}/3")] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(full) and len(set(full)) == 6
    assert all(shard_of(i, 3) == k for k, part in enumerate(parts) for i in part)
    assert resolve([str(a), str(b)], records=False, shard="1/3").count == len(parts[1])
    with pytest.raises(XaiUsageError, match="K/N"):
        resolve([str(a)], shard="x")


def test_the_same_file_named_twice_is_read_once(tmp_path):
    (p,) = _scans(tmp_path / "d", 1)
    other = _scans(tmp_path / "e", 1)[0]
    items = resolve([str(p), str(tmp_path / "d" / "." / p.name), str(tmp_path / "d"), str(other)], records=False)
    ids = [i.id for i in items]
    assert len(ids) == 2 and len(set(ids)) == 2  # p once, and `other` (same stem, another file)


# -- CLI: shards of images and of record streams ---------------------------------------------

@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    _scans(folder, 6)
    return folder


def test_cli_shards_split_a_folder_with_no_overlap(cli, scans, tmp_path):
    seen = []
    for k in range(3):
        r = cli(["predict", "-m", SEG, "--json", scans, "--shard", f"{k}/3"])
        assert r.exit_code == 0, r.stderr
        ids = [row["id"] for row in _strict(r.output)]
        assert all(shard_of(i, 3) == k for i in ids)
        seen += ids
    assert sorted(seen) == [f"scan_{i:03d}" for i in range(6)]


def test_cli_shards_a_record_stream_by_record_id(cli, scans):
    stream = cli(["predict", "-m", SEG, scans]).stdout
    seen = []
    for k in range(2):
        r = cli(["predict", "--json", "-", "--shard", f"{k}/2"], input=stream)
        assert r.exit_code == 0, r.stderr
        seen += [row["id"] for row in _strict(r.output)]
    assert sorted(seen) == [f"scan_{i:03d}" for i in range(6)]


def test_cli_shard_errors_are_usage_errors(cli, scans):
    for spec, env in (("4/4", {}), ("slurm", {})):
        r = cli(["predict", "-m", SEG, scans, "--shard", spec])
        assert r.exit_code == 2 and r.stderr.startswith("xai: error: --shard") and r.stdout == b"", r.stderr


# -- --skip-existing: a cron job over a growing folder ----------------------------------------

def _stat(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}


def test_skip_existing_does_new_and_changed_scans_only(cli, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    _scans(inbox, 3)
    assert cli(["predict", "-m", SEG, inbox, "-o", f"{out}/", "--skip-existing"]).exit_code == 0
    first = _stat(out)
    assert sorted(first) == ["scan_000.npz", "scan_001.npz", "scan_002.npz"] and len(_manifest(out)) == 3
    time.sleep(0.01)
    _scans(inbox, 2, start=3)                                   # two new scans arrive
    from xaicli.models.builtin.shapes import make_sample
    write_png(inbox / "scan_001.png", make_sample(99, "segmentation")[0])   # and one is replaced
    r = cli(["-v", "predict", "-m", SEG, inbox, "-o", out, "--skip-existing"])
    assert r.exit_code == 0, r.stderr
    redone = [e["id"] for e in _manifest(out)[3:]]
    assert sorted(redone) == ["scan_001", "scan_003", "scan_004"]
    after = _stat(out)
    assert after["scan_000.npz"] == first["scan_000.npz"] and after["scan_002.npz"] == first["scan_002.npz"]
    assert "scan_000: output exists, skipped" in r.stderr
    # nothing new: nothing done, and the model is not even loaded
    r = cli(["-v", "predict", "-m", SEG, inbox, "-o", out, "--skip-existing"])
    assert r.exit_code == 0 and len(_manifest(out)) == 6 and "loaded" not in r.stderr


def test_skip_existing_redoes_what_a_crash_left_incomplete(cli, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    _scans(inbox, 4)
    assert cli(["predict", "-m", SEG, inbox, "-o", f"{out}/"]).exit_code == 0
    lines = (out / MANIFEST).read_text().splitlines()
    # scan_000: record file, no manifest line (killed between rename and append)
    # scan_001: manifest line, file gone;  scan_002: its line cut short by a full disk
    (out / MANIFEST).write_text(lines[3] + "\n" + lines[1] + "\n" + lines[2][:25])
    (out / "scan_001.npz").unlink()
    r = cli(["predict", "-m", SEG, inbox, "-o", out, "--skip-existing"])
    assert r.exit_code == 0, r.stderr
    entries = _manifest_lenient(out)
    assert sorted(e["id"] for e in entries[2:]) == ["scan_000", "scan_001", "scan_002"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] + [f"scan_{i:03d}.npz" for i in range(4)]


def _manifest_lenient(folder: Path) -> list[dict]:
    out = []
    for line in (folder / MANIFEST).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_skip_existing_is_keyed_by_the_command(tmp_path):
    from conftest import make_record

    rec = make_record("r1")
    rec.add_history("predict", {}, 0.1)
    sink = DirSink(tmp_path / "out", command="predict")
    with sink:
        sink.write(rec)
    sha = rec.meta["source"]["sha256"]
    assert DirSink(tmp_path / "out", command="predict").exists("r1", sha)
    assert not DirSink(tmp_path / "out", command="predict").exists("r1", "f" * 64)   # the image changed
    # `xai attribute recs/ -o recs/ --skip-existing` over predict's records still adds the maps
    assert not DirSink(tmp_path / "out", command="attribute").exists("r1", sha)
    rec.add_history("attribute", {}, 0.1)
    rec.add_history("cam", {}, 0.1)
    with DirSink(tmp_path / "out", command="cam") as sink:
        sink.write(rec)
    assert DirSink(tmp_path / "out", command="attribute").exists("r1", sha)   # went through attribute
    assert DirSink(tmp_path / "out").exists("r1", sha)


@pytest.mark.parametrize("output", [None, "out.tar"])
def test_skip_existing_without_a_folder_is_a_usage_error(cli, scans, tmp_path, output):
    extra = ["-o", tmp_path / output] if output else []
    r = cli(["predict", "-m", SEG, scans, "--skip-existing", *extra])
    assert r.exit_code == 2 and "needs -o DIR/" in r.stderr
    no_record_out(r.stdout, r.stderr.strip())
    assert list(tmp_path.iterdir()) == []


# -- predict --json -o FILE --------------------------------------------------------------------

def test_predict_json_goes_to_the_output_file(cli, scans, tmp_path):
    target = tmp_path / "preds.jsonl"
    r = cli(["predict", "-m", SEG, "--json", scans, "-o", target])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == b""
    rows = _strict(target.read_text())
    assert [row["id"] for row in rows] == [f"scan_{i:03d}" for i in range(6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


def test_predict_json_failure_keeps_the_old_file(cli, scans, tmp_path):
    target = tmp_path / "preds.jsonl"
    target.write_text("yesterday\n")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    r = cli(["predict", "-m", SEG, "--json", scans, tmp_path / "bad.png", "-o", target])
    assert r.exit_code == 1 and r.stderr.startswith("xai: error:")
    assert target.read_text() == "yesterday\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "preds.jsonl"]


def test_predict_json_skip_existing_appends_new_images_only(cli, tmp_path):
    inbox, target = tmp_path / "inbox", tmp_path / "preds.jsonl"
    _scans(inbox, 2)
    assert cli(["predict", "-m", SEG, "--json", inbox, "-o", target, "--skip-existing"]).exit_code == 0
    first = target.read_text()
    _scans(inbox, 1, start=2)
    r = cli(["-v", "predict", "-m", SEG, "--json", inbox, "-o", target, "--skip-existing"])
    assert r.exit_code == 0, r.stderr
    text = target.read_text()
    assert text.startswith(first) and [row["id"] for row in _strict(text)] == ["scan_000", "scan_001", "scan_002"]
    assert r.stderr.count("skipped") == 2


def test_json_lines_are_strict_json(cli, tmp_path):
    import torch
    from helpers_models import rgb_image, tiny_classifier

    model = tiny_classifier()
    with torch.no_grad():
        model.fc.bias[0] = float("nan")  # every probability NaN
    path = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    write_png(tmp_path / "img.png", rgb_image())
    r = cli(["predict", "-m", path, "--json", tmp_path / "img.png"])
    assert r.exit_code == 0, r.stderr
    (row,) = _strict(r.output)
    assert row["confidence"] is None and row["top3"][0]["prob"] is None
    assert b"NaN" not in r.stdout
    assert json_dumps_strict({"a": float("inf"), "b": [float("nan"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'


def test_lines_sink_refuses_a_folder(tmp_path):
    with pytest.raises(XaiUsageError, match="file"):
        LinesSink(str(tmp_path))


# -- interruptions -----------------------------------------------------------------------------

def _xai(*args) -> list[str]:
    return [sys.executable, "-m", "xaicli", *map(str, args)]


def _signal_midrun(args, out: Path, sig: int) -> tuple[subprocess.Popen, bytes]:
    """Start the run, signal it once two records exist, and return it with its stderr.

    The child gets SIGINT's default action back: a shell starts background jobs (`make test &`)
    with SIGINT ignored, Python then keeps ignoring it, and the run ignored our Ctrl-C."""
    proc = subprocess.Popen(_xai(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while time.time() - t0 < 120 and len(list(out.glob("*.npz"))) < 2 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert len(list(out.glob("*.npz"))) < N_BIG, "the run ended before the signal landed"
    return proc, err


def _records(folder: Path) -> dict[str, dict]:
    from xaicli.io.record import Record

    out = {}
    for p in sorted(folder.glob("*.npz")):
        rec = Record.from_bytes(p.read_bytes(), str(p))  # every file a complete record
        out[p.name] = {k: v for k, v in rec.arrays.items()}
    return out


N_BIG = 12


@pytest.fixture(scope="module")
def big_scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    _scans(folder, N_BIG, size=288)  # big enough that a run is still writing when it is killed
    return folder


@pytest.fixture(scope="module")
def reference(big_scans, tmp_path_factory):
    """What one uninterrupted run makes."""
    out = tmp_path_factory.mktemp("ref") / "out"
    r = invoke(["predict", "-m", SEG, big_scans, "-o", f"{out}/", "-b", "1"])
    assert r.exit_code == 0, r.stderr
    return out


def _assert_same_as_reference(out: Path, reference: Path):
    got, want = _records(out), _records(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert sorted(got[name]) == sorted(want[name])
        for key in want[name]:
            np.testing.assert_allclose(got[name][key], want[name][key], atol=1e-5, err_msg=f"{name} {key}")
    ids = {e["id"] for e in _manifest_lenient(out)}
    assert ids == {n[:-4] for n in want}


def test_kill_9_midrun_then_rerun_makes_exactly_the_uninterrupted_set(big_scans, reference, tmp_path):
    out = tmp_path / "out"
    args = ["predict", "-m", SEG, big_scans, "-o", f"{out}/", "-b", "1", "--skip-existing"]
    proc, _ = _signal_midrun(args, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in out.glob("*.npz"))
    assert 2 <= len(done) < N_BIG
    _records(out)  # every visible record is complete
    # What kill -9 can leave: a hidden temp file of the dead process (never under a final name),
    # and the lock file of the id it was making (no process holds it: the rerun sweeps it).
    assert all(p.name.startswith(".") and p.name.endswith((".tmp", ".npz.lock")) for p in out.iterdir()
               if p.name != MANIFEST and not p.name.endswith(".npz"))
    rerun = invoke(args)  # in-process: the same entry point, without a second torch import
    assert rerun.exit_code == 0, rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST] + [f"scan_{i:03d}.npz" for i in range(N_BIG)])
    _assert_same_as_reference(out, reference)
    redone = [e["id"] for e in _manifest_lenient(out)]
    assert len(redone) - len(set(redone)) <= 1  # at most the record caught between rename and append


def test_ctrl_c_midrun_exits_130_and_leaves_no_partial_file(big_scans, reference, tmp_path):
    out = tmp_path / "out"
    args = ["predict", "-m", SEG, big_scans, "-o", f"{out}/", "-b", "1", "--skip-existing"]
    proc, err = _signal_midrun(args, out, signal.SIGINT)
    assert proc.returncode == 130, err
    lines = err.decode().strip().splitlines()
    assert lines == ["xai: error: interrupted"], err  # one line saying why, never a traceback
    names = sorted(p.name for p in out.iterdir())
    assert all(n == MANIFEST or n.endswith(".npz") for n in names), names  # no temp file at all
    _records(out)
    rerun = invoke(args)
    assert rerun.exit_code == 0, rerun.stderr
    _assert_same_as_reference(out, reference)


@pytest.mark.parametrize("debug", [False, True])
def test_errors_python_ignores_print_nothing_unless_debug(debug):
    """An object failing in __del__ (an image reader interrupted by Ctrl-C did) must not
    print a traceback past our one-line error; --debug still shows it."""
    code = ("import sys\n"
            "from xaicli.cli import app\n"
            "from xaicli.cli.state import settings\n"
            f"settings.debug = {debug}\n"
            "sys.exit = lambda code=0: None\n"
            "app.main(['--version'])\n"                      # installs the hook, as the console script does
            "class Reader:\n"
            "    def __del__(self):\n"
            "        raise AttributeError('images_to_write')\n"
            "Reader()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ("Exception ignored" in r.stderr) is debug, r.stderr


def test_stale_temp_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temp_prefix("a.npz")
    stale = tmp_path / mine.replace(f"-{os.getpid()}-", f"-{dead.pid}-").__add__("abcd1234.tmp")
    live = tmp_path / mine.replace(f"-{os.getpid()}-", f"-{os.getppid()}-").__add__("abcd1234.tmp")
    other_host = tmp_path / f".b.npz.xai-otherhost-{dead.pid}-abcd1234.tmp"
    foreign = tmp_path / ".notes.tmp"
    for p in (stale, live, other_host, foreign):
        p.write_bytes(b"partial")
    DirSink(tmp_path)
    assert not stale.exists()
    assert live.exists() and other_host.exists() and foreign.exists()
    assert sweep_stale_temps(tmp_path) == []
    assert socket.gethostname()  # the host part of the name is this host's


def test_a_line_cut_by_a_full_disk_does_not_swallow_the_next(tmp_path):
    m = tmp_path / MANIFEST
    m.write_text('{"id": "a", "sha256": "1"}\n{"id": "b", "fi')
    sink = DirSink(tmp_path)
    from conftest import make_record

    with sink:
        sink.write(make_record("c"))
    assert m.read_text().splitlines()[1:] == ['{"id": "b", "fi', json.dumps(_manifest_lenient(tmp_path)[-1])]
    assert [e["id"] for e in _manifest_lenient(tmp_path)] == ["a", "c"]


def _append_many(path: str, tag: str) -> None:
    for i in range(300):
        append_line(path, json.dumps({"id": f"{tag}{i}", "pad": "x" * 200}))


def test_concurrent_manifest_appends_never_interleave(tmp_path):
    import multiprocessing as mp

    m = str(tmp_path / MANIFEST)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(m, t)) for t in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    entries = [json.loads(s) for s in Path(m).read_text().splitlines()]
    assert len(entries) == 1200 and len({e["id"] for e in entries}) == 1200


def test_dir_output_that_is_a_file_is_an_error(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(XaiError, match="not a folder"):
        DirSink(f)


def test_attribute_in_place_over_predict_records_with_skip_existing(cli, tmp_path):
    """The folder of `xai predict` records, enriched in place: skipping is per command."""
    inbox, recs = tmp_path / "inbox", tmp_path / "recs"
    _scans(inbox, 1)
    assert cli(["predict", "-m", SEG, inbox, "-o", f"{recs}/"]).exit_code == 0
    args = ["attribute", recs, "-o", recs, "--steps", "2", "--skip-existing"]
    r = cli(args)
    assert r.exit_code == 0, r.stderr
    entries = _manifest(recs)
    assert [e["command"] for e in entries] == ["predict", "attribute"]
    assert entries[-1]["maps"] == ["attr/integrated_gradients/black"]
    r = cli(["-v", *args])  # done now: skipped
    assert r.exit_code == 0 and len(_manifest(recs)) == 2 and "skipped" in r.stderr


def test_two_commands_over_one_inbox_add_to_each_others_records(cli, scans, tmp_path):
    """Two cron lines, attribute and cam, from the same images into one folder: each adds its
    maps to the record the other made instead of replacing it (and dropping its maps)."""
    out = f"{tmp_path}/out/"
    for _ in range(2):
        for cmd in (["attribute", "--steps", "2"], ["cam"]):
            r = cli([*cmd, "-m", "builtin:shapes-seg", scans, "-o", out, "--skip-existing"])
            assert r.exit_code == 0, r.stderr
    for path in sorted(Path(out).glob("*.npz")):
        rec = Record.from_bytes(path.read_bytes())
        assert rec.map_keys() == ["attr/integrated_gradients/black", "cam/gradcam/decoder_last"], path
        assert [h["command"] for h in rec.meta["history"]] == ["attribute", "cam"]
    lines = (Path(out) / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 6                                   # the second round skipped everything


def test_json_lines_skip_existing_replaces_the_line_of_a_changed_image(cli, scans, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "p.jsonl"
    inbox.mkdir()
    for name in ("scan_000.png", "scan_001.png"):
        (inbox / name).write_bytes((scans / name).read_bytes())
    args = ["predict", "-m", "builtin:shapes-seg", "--json", inbox, "-o", out, "--skip-existing"]
    assert cli(args).exit_code == 0
    (inbox / "scan_001.png").write_bytes((scans / "scan_002.png").read_bytes())     # the scan was replaced
    assert cli(args).exit_code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["scan_000", "scan_001"]
    assert lines[1]["sha256"] == hashlib.sha256((scans / "scan_002.png").read_bytes()).hexdigest()


# -- overlapping runs (advisory locks per record id, io/locks.py) ---------------------------

def test_overlapping_cron_runs_make_each_record_once(tmp_path):
    """4 `xai attribute inbox/ -o out/ --skip-existing` started together over 24 scans: 24
    records, 24 manifest lines, and 24 records made in all (each run's -v log names every
    record it made: `attribute: <id> made in ...`), so no record was computed twice."""
    inbox, out, n = tmp_path / "inbox", tmp_path / "out", 24
    _scans(inbox, n)
    args = _xai("-v", "attribute", "-m", SEG, "--steps", "2", inbox, "-o", f"{out}/", "--skip-existing")
    runs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV) for _ in range(4)]
    logs = [p.communicate(timeout=600)[1].decode() for p in runs]
    assert [p.returncode for p in runs] == [0] * 4, logs
    made = [re.findall(r"^xai: INFO: attribute: (\S+) made in ", log, re.M) for log in logs]
    ids = sorted(i for m in made for i in m)
    assert ids == sorted(f"scan_{i:03d}" for i in range(n)), [len(m) for m in made]   # each made once
    assert sum(1 for m in made if m) >= 2, "the runs did not overlap: one made everything"
    manifest = _manifest(out)
    assert len(manifest) == n and len({e["id"] for e in manifest}) == n
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST] + [f"scan_{i:03d}.npz" for i in range(n)])
    for path in out.glob("*.npz"):
        assert [h["command"] for h in Record.from_bytes(path.read_bytes()).meta["history"]] == ["attribute"]


def test_a_lock_of_a_killed_process_is_taken_over_and_a_live_one_is_not(tmp_path):
    from xaicli.io.locks import IdLocks

    locks = IdLocks(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(locks.path('a'))!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'otherhost 1234')\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert locks.acquire("a") is False                   # live: not taken, not waited for
        assert locks.holder("a") == "otherhost 1234"
    finally:
        holder.kill()
        holder.wait()
    assert locks.acquire("a") is True                        # kill -9 released it: taken over at once
    assert locks.path("a").read_text().split()[1] == str(os.getpid())
    locks.release("a")
    assert not locks.path("a").exists()                      # no lock file left behind


def test_an_id_another_run_holds_is_left_to_it_without_waiting(tmp_path):
    """A run finds scan_000 locked by another run (this test, holding the lock all along):
    it makes the others, tries scan_000 once more at the end, leaves it to the run that
    holds it, and ends at once (exit 0). When that run has made it, the next run skips all."""
    from xaicli.io.locks import IdLocks

    inbox, out, made_elsewhere = tmp_path / "inbox", tmp_path / "out", tmp_path / "elsewhere"
    _scans(inbox, 3)
    assert invoke(["predict", "-m", SEG, inbox / "scan_000.png", "-o", f"{made_elsewhere}/"]).exit_code == 0
    out.mkdir()
    other = IdLocks(out)
    assert other.acquire("scan_000")
    args = ["-v", "predict", "-m", SEG, inbox, "-o", f"{out}/", "--skip-existing"]
    r = invoke(args)
    assert r.exit_code == 0, r.stderr
    assert sorted(re.findall(r"predict: (\S+) made in", r.stderr)) == ["scan_001", "scan_002"], r.stderr
    assert f"scan_000: another run ({socket.gethostname()} {os.getpid()}) is making it; tried again" in r.stderr
    assert "scan_000: left to the other run" in r.stderr
    assert sorted(e["id"] for e in _manifest(out)) == ["scan_001", "scan_002"]
    with DirSink(out, "predict") as sink:                        # the other run makes scan_000, lets go
        sink.write(Record.from_bytes((made_elsewhere / "scan_000.npz").read_bytes()))
    other.release("scan_000")
    r = invoke(args)
    assert r.exit_code == 0 and "made in" not in r.stderr and r.stderr.count("output exists, skipped") == 3
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "scan_000.npz", "scan_001.npz", "scan_002.npz"]


def test_lock_files_nobody_holds_are_swept_and_held_ones_kept(tmp_path):
    from xaicli.io.locks import IdLocks

    (tmp_path / ".a.npz.lock").write_text("deadhost 1\n")       # left by a killed run
    held = IdLocks(tmp_path)
    assert held.acquire("b")                                    # another run's, alive
    DirSink(tmp_path, "predict")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.npz.lock"]
    held.release("b")
