"""Shared test helpers: run the real CLI entry point in-process, build records."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The references (Captum, grad-cam, closed forms) run on the CPU, and the tolerances were
# set against CPU kernels; on a GPU host `--device auto` would put the CLI on CUDA, whose
# kernels round differently (a max-pool U-Net++ moved 6e-4 of its max on an H200). So the
# suite hides the GPUs, before torch initialises CUDA and for its subprocesses, unless
# XAI_TEST_CUDA=1. bench/check_cuda.py checks the CUDA path against the CPU.
if os.environ.get("XAI_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    one thread beats two here, by far on a busy 2-core machine (OpenMP spin-waits; a shapes-seg
    forward ran 5x slower with two)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout.decode(errors="replace")


def invoke(args: list[str], input: bytes | None = None) -> Result:
    """Run `xai ARGS` through `xaicli.cli.app.run`, exactly as the console script does."""
    from xaicli.cli import app as app_module
    from xaicli.cli.state import settings

    out, err = io.BytesIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(input or b"")))
    stdout = io.TextIOWrapper(out, write_through=True)
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, err
    try:
        code = app_module.run([str(a) for a in args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        settings.verbosity, settings.quiet, settings.debug = 0, False, False
    stdout.flush()
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return invoke


def error_line(r: Result, code: int | None = None) -> str:
    """The one `xai: error:` line of a failed run (exit `code` when given): no traceback, no
    internal error, nothing on stdout but, from a command that had begun its record stream,
    that stream's failure member carrying the same error (no record)."""
    lines = r.stderr.strip().splitlines()
    if code is not None:
        assert r.exit_code == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("xai: error: "), r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    no_record_out(r.stdout, lines[0])
    return lines[0]


def no_record_out(stdout: bytes, line: str | None = None) -> None:
    """A failed command left no record on stdout: nothing, or, from a command that had begun its
    record stream, only that stream's failure member, carrying the error `line` (io/stream.py)."""
    if stdout:
        error = failed_stream(stdout)
        assert line is None or line == "xai: error: " + error, (line, error)


def failed_stream(data: bytes) -> str:
    """The error in the failure member of a stream that holds nothing else (io/stream.py)."""
    import json
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert [name for name, _ in members] == [".xai-stream.json", ".xai-stream-failed.json"], members
    return json.loads(members[1][1])["error"]


def make_record(record_id: str = "r1", *, task: str = "segmentation", size=(16, 16), channels: int = 3,
                maps: dict | None = None, image: bool = True, mask: np.ndarray | None = None,
                labels=("blob",), seed: int = 0):
    """A synthetic record with the layout of the README (for tests of model-free commands)."""
    from xaicli.io.record import Record

    rng = np.random.default_rng(seed)
    h, w = size
    rec = Record.new(record_id, {"path": f"{record_id}.png", "sha256": "0" * 64, "shape": [h, w, 3], "dtype": "uint8"})
    rec.meta["task"] = task
    rec.meta["model"] = {"spec": "test", "sha256": "1" * 64, "arch": "test", "labels": list(labels), "format": "test"}
    if image:
        rec.arrays["image"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if task == "segmentation":
        m = mask if mask is not None else np.zeros((h, w), np.uint8)
        if mask is None:
            m[h // 4: h // 2, w // 4: w // 2] = 1
        rec.arrays["pred/mask"] = m.astype(np.uint8)
        rec.arrays["pred/probs"] = m[None].astype(np.float32)
        rec.arrays["pred/logits"] = (m[None].astype(np.float32) * 8 - 4)
        rec.meta["prediction"] = {"threshold": 0.5, "area_fraction": {labels[0]: float(m.mean())}}
    else:
        k = len(labels)
        logits = rng.normal(size=k).astype(np.float32)
        p = np.exp(logits) / np.exp(logits).sum()
        rec.arrays["pred/logits"], rec.arrays["pred/probs"] = logits, p.astype(np.float32)
        i = int(p.argmax())
        rec.meta["prediction"] = {"index": i, "label": labels[i], "confidence": float(p[i]),
                                  "top": [{"index": int(j), "label": labels[j], "prob": float(p[j])}
                                          for j in np.argsort(-p)[:3]]}
    for key, (arr, info) in (maps or {}).items():
        rec.add_map(key, arr, info)
    return rec


def npz_members(tar) -> list:
    """The record members of an open tar (xai's streams also hold start and end members)."""
    return [m for m in tar.getmembers() if m.name.endswith(".npz")]
