"""Hypothesis strategies and checks for tests/test_fuzz.py: the three ways to break a record
(its stream's bytes, its meta, its arrays) and what every command's answer must satisfy.

A case is run as the user would run it (`conftest.invoke`, the console script's entry) in a
fresh folder: inputs in `in/`, outputs in `out/`, the folder as working directory. It passes
when the command either succeeds or fails with exit 1 or 2 and one `xai: error:` line (no
traceback, no internal error) that names the record and, for a broken record, the field;
when it ends within CASE_SECONDS; and when nothing was written outside `out/`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
from conftest import invoke
from hypothesis import strategies as st

from xaicli.io.record import Record

CASE_SECONDS = 300
DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64",
          "complex64", ">f4", ">u2", "<U3", "S3"]
KEYS = ["image", "pred/logits", "pred/probs", "pred/mask", "gt/mask", "attr/x/y", "cam/x/y", "extra"]
# Words that name a part of a record in an error line (besides a JSON path or an array key).
FIELD_WORDS = re.compile(r'meta \$|array "|maps|image|model|mask|targets|schema|meta|\.npy|classes|source')

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


# -- mutations ---------------------------------------------------------------------------

def npz_bytes(meta, arrays: dict) -> bytes:
    """A record's bytes written with numpy alone (not Record.to_bytes, which would refuse some)."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    return buf.getvalue()


def mutate_meta(draw, meta: dict):
    """Replace, delete or add one value anywhere in meta, by a JSON value of any type."""
    meta = copy.deepcopy(meta)
    parent, key, node = None, None, meta
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 9)) < 8:
        parent, key = node, draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        node = parent[key]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    value = draw(json_values)
    if parent is None:                       # the root itself
        return value if action == "replace" else {**meta, draw(st.text(max_size=8)): value}
    if action == "replace":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif isinstance(node, dict):
        node[draw(st.text(max_size=8))] = value
    elif isinstance(node, list):
        node.insert(draw(st.integers(0, len(node))), value)
    else:
        parent[key] = [node, value]
    return meta


def mutate_arrays(draw, arrays: dict) -> dict:
    """One or two arrays flattened, emptied, of another dtype, reshaped, removed, or filled
    with extremes (two at once reach combinations one cannot: a 2-D image and a 2-D map)."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 2))):
        arrays = _mutate_array(draw, arrays)
    return arrays


def _mutate_array(draw, arrays: dict) -> dict:
    key = draw(st.sampled_from(sorted(set(arrays) | set(KEYS))))
    a = arrays.get(key, np.ones((1, 4, 4), np.float32))
    action = draw(st.sampled_from(["flatten", "empty", "dtype", "transpose", "add axis", "drop axis", "drop",
                                   "nonfinite", "extreme", "crop"]))
    if action == "flatten":
        a = a.reshape(-1)
    elif action == "empty":
        shape = list(a.shape) or [1]
        shape[draw(st.integers(0, len(shape) - 1))] = 0
        a = np.zeros(shape, a.dtype)
    elif action == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")       # complex to real, float to int
                a = a.astype(dtype)
        except (ValueError, TypeError, OverflowError):   # strings to numbers (or out of range): zeros
            a = np.zeros(a.shape, dtype)
    elif action == "transpose":
        a = a.T
    elif action == "add axis":
        a = a[None]
    elif action == "drop axis" and a.ndim:
        a = a[0] if a.shape[0] else np.zeros(a.shape[1:], a.dtype)
    elif action == "drop":
        arrays.pop(key, None)
        return arrays
    elif action == "nonfinite" and a.dtype.kind == "f" and a.size:
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif action == "extreme" and a.dtype.kind in "fiu" and a.size:
        a = np.full_like(a, np.finfo(a.dtype).max if a.dtype.kind == "f" else np.iinfo(a.dtype).max)
    elif action == "crop" and a.ndim:
        a = a[tuple(slice(0, max(0, n - 1)) if i == a.ndim - 1 else slice(None) for i, n in enumerate(a.shape))]
    arrays[key] = a
    return arrays


def mutate_bytes(draw, data: bytes) -> bytes:
    """One to three of: a bit flipped, the bytes cut, bytes inserted, a range deleted or repeated."""
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete", "repeat"]))
        if action == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
        elif action == "cut":
            data = data[:at]
        elif action == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=600)) + data[at:]
        else:
            n = draw(st.integers(1, 2048))
            data = data[:at] + data[at + n:] if action == "delete" else data[:at + n] + data[at:]
    return data


# -- running a case ------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that the CLI's `except Exception` lets it through."""


class Case:
    """A fresh folder with `in/` and `out/`, the working directory while the command runs."""

    def __init__(self, root: Path):
        self.dir = Path(tempfile.mkdtemp(dir=root))
        (self.dir / "in").mkdir()
        self.input_files: set[str] = set()

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / "in" / name
        path.write_bytes(data)
        self.input_files.add(f"in/{name}")
        return path

    def run(self, args: list, stdin: bytes | None = None):
        def alarm(signum, frame):
            raise Hang(f"no answer within {CASE_SECONDS} s: {args}")

        here = os.getcwd()
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(CASE_SECONDS)
        os.chdir(self.dir)
        try:
            return invoke([str(a) for a in args], input=stdin)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(here)

    def written_outside_out(self) -> list[str]:
        found = [str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file()]
        return sorted(f for f in found if not f.startswith("out/") and f not in self.input_files)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def check(result, case: Case, names: tuple[str, ...], broken_record: bool) -> None:
    """The answer of one case: see the module doc. `names`: how the error may name the record."""
    err = result.stderr
    assert "Traceback" not in err and "internal error" not in err, err
    assert result.exit_code in (0, 1, 2), (result.exit_code, err)
    lines = err.strip().splitlines()
    assert all(line.startswith("xai: ") for line in lines), err
    errors = [line for line in lines if line.startswith("xai: error: ")]
    if result.exit_code:
        assert len(errors) == 1 and lines[-1] == errors[0], err
        assert any(n in errors[0] for n in names), (names, errors[0])
        if broken_record:
            assert FIELD_WORDS.search(errors[0]), errors[0]
    else:
        assert not errors, err
    assert case.written_outside_out() == [], case.written_outside_out()


def stream_of(*records: bytes, names=None) -> bytes:
    """An xai stream of record bytes (start and end members included)."""
    from xaicli.io.stream import TarWriter

    buf = io.BytesIO()
    w = TarWriter(buf)
    for i, data in enumerate(records):
        w.add(names[i] if names else f"r{i}.npz", data)
    w.close()
    return buf.getvalue()


def parts(record: Record) -> tuple[dict, dict]:
    return copy.deepcopy(record.meta), dict(record.arrays)
