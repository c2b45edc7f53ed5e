"""Records: one `.npz` per image, readable by plain numpy, strict about its schema."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from conftest import no_record_out

from xaicli.errors import XaiError
from xaicli.io.ids import ids_for_paths, safe_id
from xaicli.io.record import Record


def _record() -> Record:
    rec = Record.new("scan_001", {"path": "scans/scan_001.png", "sha256": "ab" * 32, "shape": [4, 5], "dtype": "uint8"})
    rec.meta["task"] = "segmentation"
    rec.arrays["image"] = np.arange(20, dtype=np.uint8).reshape(4, 5)
    rec.arrays["pred/logits"] = np.linspace(-3, 3, 20, dtype=np.float32).reshape(1, 4, 5)
    rec.arrays["pred/probs"] = 1 / (1 + np.exp(-rec.arrays["pred/logits"]))
    rec.arrays["pred/mask"] = (rec.arrays["pred/logits"][0] > 0).astype(np.uint8)
    rec.add_map("attr/integrated_gradients/black", np.full((1, 1, 4, 5), 0.25, np.float32),
                {"kind": "attribution", "delta": [0.001]})
    return rec


def _npz_bytes(meta: dict, **arrays) -> bytes:
    """An .npz written with numpy alone (not with the code under test)."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    return buf.getvalue()


def test_record_round_trip_keeps_arrays_dtypes_and_meta():
    rec = _record()
    back = Record.from_bytes(rec.to_bytes())
    assert back.meta["id"] == "scan_001" and back.meta["source"]["sha256"] == "ab" * 32
    assert set(back.arrays) == set(rec.arrays)
    for key, arr in rec.arrays.items():
        assert back.arrays[key].dtype == arr.dtype, key
        np.testing.assert_array_equal(back.arrays[key], arr)
    assert back.map_keys() == ["attr/integrated_gradients/black"]
    assert back.map_info("attr/integrated_gradients/black")["delta"] == [0.001]


def test_record_is_a_plain_npz_without_pickles():
    data = _record().to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert "meta" in npz.files and "image" in npz.files
        assert npz["meta"].shape == () and npz["meta"].dtype.kind == "U"
        meta = json.loads(str(npz["meta"][()]))
        assert meta["schema"] == "xai.record/1"
        assert npz["pred/logits"].dtype == np.float32


def test_non_finite_numbers_become_json_null():
    rec = _record()
    rec.meta["prediction"] = {"score": float("nan"), "top": [float("inf"), 1.5]}
    with np.load(io.BytesIO(rec.to_bytes()), allow_pickle=False) as npz:
        text = str(npz["meta"][()])
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["prediction"] == {"score": None, "top": [None, 1.5]}


def test_object_arrays_are_refused_when_writing():
    rec = _record()
    rec.arrays["bad"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError, match="pickle"):
        rec.to_bytes()


def test_unknown_schema_version_is_rejected_naming_it():
    data = _npz_bytes({"schema": "xai.record/2", "id": "x"}, image=np.zeros((2, 2), np.uint8))
    with pytest.raises(XaiError, match=r"xai\.record/2"):
        Record.from_bytes(data, "future.npz")


@pytest.mark.parametrize("meta", [{"id": "x"}, {"schema": "something/1", "id": "x"}])
def test_npz_that_is_not_a_record_is_rejected(meta):
    with pytest.raises(XaiError, match="not an xai record"):
        Record.from_bytes(_npz_bytes(meta), "other.npz")


def test_npz_without_meta_or_with_pickles_or_garbage_is_rejected():
    buf = io.BytesIO()
    np.savez(buf, image=np.zeros(3))
    with pytest.raises(XaiError, match="no 'meta'"):
        Record.from_bytes(buf.getvalue(), "plain.npz")
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({"schema": "xai.record/1", "id": "x"})),
             evil=np.array([object()], dtype=object))
    with pytest.raises(XaiError, match="pickled"):
        Record.from_bytes(buf.getvalue(), "evil.npz")
    with pytest.raises(XaiError, match="not a readable"):
        Record.from_bytes(b"PK\x03\x04 definitely not a zip", "junk.npz")


def test_unknown_schema_record_file_is_a_one_line_cli_error(cli, tmp_path):
    path = tmp_path / "future.npz"
    path.write_bytes(_npz_bytes({"schema": "xai.record/2", "id": "future"}, image=np.zeros((32, 32), np.uint8)))
    for args, data in (([str(path)], None), (["-"], path.read_bytes())):
        r = cli(["predict", "-m", "builtin:shapes-seg", *args], input=data)
        assert r.exit_code == 1
        lines = r.stderr.strip().splitlines()
        no_record_out(r.stdout, lines[-1])
        assert len(lines) == 1 and lines[0].startswith("xai: error:") and "xai.record/2" in lines[0]


# -- ids ------------------------------------------------------------------------

SAFE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$")


@pytest.mark.parametrize("name", ["scan 001 (copy)", "../../etc/passwd", "..", ".", "", "-rf", "--help",
                                  "über/ß", "a\nb", "x" * 300, "C:\\data\\img", ".hidden"])
def test_ids_are_safe_file_names(name):
    sid = safe_id(name)
    assert SAFE.match(sid), sid
    assert sid not in (".", "..") and "/" not in sid and len(sid) <= 80


def test_ids_unique_when_inputs_share_a_basename(tmp_path):
    from pathlib import Path

    paths = [Path("a/x.png"), Path("b/x.png"), Path("b/x.jpg"), Path("c/y.png")]
    ids = ids_for_paths(paths)
    assert len(set(ids)) == len(ids)
    assert ids[3] == "y"  # a name without a twin keeps its stem
    assert all(i.startswith("x-") for i in ids[:3])
    # stable: the same path gets the same id when the set of colliding inputs changes
    assert ids_for_paths([Path("a/x.png"), Path("d/x.png")])[0] == ids[0]


def test_ids_unique_when_long_names_share_a_prefix():
    from pathlib import Path

    stem = "p" * 100
    ids = ids_for_paths([Path(f"{stem}1.png"), Path(f"{stem}2.png")])
    assert len(set(ids)) == 2 and all(len(i) <= 80 for i in ids)


def test_reading_validating_and_writing_records_imports_no_torch(tmp_path):
    """io/ stays torch-free with jsonschema and the locks: a CPU host that only analyses
    records pays for neither (a fresh interpreter, since this one may have torch)."""
    import subprocess
    import sys

    from conftest import make_record

    from xaicli.io.stream import TarWriter

    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add_record(make_record("a"))
    w.close()
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    code = ("import sys\n"
            "from xaicli.io.inputs import resolve\n"
            "from xaicli.io.outputs import open_sink\n"
            f"records = list(resolve([{str(tmp_path / 's.tar')!r}], images=False))\n"
            f"with open_sink({str(tmp_path / 'out')!r} + '/') as sink:\n"
            "    sink.lock('a'); [sink.write(r) for r in records]\n"
            "assert 'jsonschema' in sys.modules and [r.id for r in records] == ['a']\n"
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_minor_version_with_added_fields_reads_and_keeps_them(cli, tmp_path):
    """xai.record/1.3 with fields this xai does not know (top level, source, model,
    preprocessing, a map entry, prediction, history): read by stats and render, and written
    back with its tag and fields, as a command that adds to the record writes it."""
    from conftest import make_record

    rec = make_record("r1", maps={"cam/occlusion/x": (np.ones((1, 16, 16), np.float32),
                                                      {"window": [8, 8], "stride": 4, "conservation": None})})
    meta = json.loads(json.dumps(rec.meta))
    meta["schema"] = "xai.record/1.3"
    meta["added"] = {"in": ["a", "minor", "version"]}
    meta["source"]["window"] = {"center": 40, "width": 400}
    meta["model"]["new"] = 1
    meta["preprocessing"] = {"fit": "processor", "crop": [0, 0, 16, 16], "processor": {"do_resize": False},
                             "size": [16, 16]}
    meta["prediction"]["calibrated"] = True
    meta["history"] = [{"command": "predict", "version": "1.9.0", "parameters": {}, "gpu": "H200"}]
    path = tmp_path / "r1.npz"
    path.write_bytes(_npz_bytes(meta, **rec.arrays))
    r = cli(["stats", path])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.output)["map"] == "cam/occlusion/x"
    out = tmp_path / "out"
    r = cli(["render", path, "-o", out, "--dpi", "20"])
    assert r.exit_code == 0, r.stderr
    back = Record.from_bytes(Record.from_bytes(path.read_bytes()).to_bytes())
    assert back.meta == meta
