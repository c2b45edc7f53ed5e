"""Property-based tests (Hypothesis) of the record reader and validator, and of the commands
that read records: broken streams, broken meta and broken arrays never crash a reader.

The suite runs a short version (a fixed seed, a few cases per target). `make fuzz` runs the
campaign: XAI_FUZZ_EXAMPLES cases per target (10,000 by default, random seeds) and writes
the cases run, minutes and findings per target to XAI_FUZZ_REPORT (fuzz-report.json).
See tests/fuzz_records.py for the mutations and what a case must satisfy.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import time

import numpy as np
import pytest
from conftest import invoke, make_record
from fuzz_records import (Case, Hang, check, mutate_arrays, mutate_bytes, mutate_meta, npz_bytes, parts,
                          stream_of)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xaicli.errors import XaiError
from xaicli.io.ids import safe_id
from xaicli.io.inputs import read_stdin
from xaicli.io.record import Record
from xaicli.io.schema import schema

pytestmark = pytest.mark.usefixtures("one_thread")

CAMPAIGN = int(os.environ.get("XAI_FUZZ_EXAMPLES", "0"))
REPORT = os.environ.get("XAI_FUZZ_REPORT")
COUNTS: dict[str, dict] = {}
LAST_EXIT: dict[str, int] = {}


def examples(short: int):
    """The suite's few cases with a fixed seed; the campaign's many with random ones."""
    return settings(max_examples=CAMPAIGN or short, deadline=None, derandomize=not CAMPAIGN, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _count(target: str, finding: BaseException | None = None) -> None:
    c = COUNTS.setdefault(target, {"cases": 0, "findings": 0, "seconds": 0.0, "start": time.time(), "first": None})
    c["cases"] += 1
    exit_code = LAST_EXIT.pop("code", None)     # a command's case: 0 = read and processed, 1/2 = refused
    if exit_code is not None:
        c[f"exit {exit_code}"] = c.get(f"exit {exit_code}", 0) + 1
    c["seconds"] = round(time.time() - c["start"], 1)
    if finding is not None:
        c["findings"] += 1
        c["first"] = c["first"] or f"{type(finding).__name__}: {str(finding)[:300]}"
    if REPORT and (c["cases"] % 100 == 0 or finding is not None):
        _write_report()


def _write_report() -> None:
    with open(REPORT + ".tmp", "w") as f:
        json.dump({t: {k: v for k, v in c.items() if k != "start"} for t, c in COUNTS.items()}, f, indent=1)
    os.replace(REPORT + ".tmp", REPORT)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if REPORT:
        _write_report()


def counted(target: str):
    """Count each case of `target` (and each failing one as a finding) for the report."""
    def wrap(body):
        @functools.wraps(body)
        def run(*args, **kwargs):
            try:
                body(*args, **kwargs)
            except (Exception, Hang) as exc:      # not Hypothesis's own signals (BaseException)
                _count(target, exc)
                raise
            _count(target)
        return run
    return wrap


# -- seeds: valid records ----------------------------------------------------------------

def _synthetic() -> list[Record]:
    rng = np.random.default_rng(0)
    seg = make_record("seg", size=(8, 8), maps={
        "attr/integrated_gradients/black": (rng.normal(size=(1, 3, 8, 8)).astype(np.float32),
                                            {"targets": [{"kind": "mask", "index": 0, "label": "blob"}],
                                             "delta": [0.01], "relative_delta": [0.001], "steps": 8}),
        "cam/gradcam/layer": (rng.random((1, 8, 8), np.float32), {"targets": [{"kind": "mask", "index": 0}]})})
    seg.arrays["gt/mask"] = (rng.random((8, 8)) > 0.5).astype(np.uint8)
    cls = make_record("cls", task="classification", size=(8, 8), labels=("a", "b", "c"), maps={
        "attr/saliency/none": (rng.random((2, 3, 8, 8), np.float32),
                               {"targets": [{"kind": "class", "index": 2, "label": "c"},
                                            {"kind": "class", "index": 0, "label": "a"}]}),
        "cam/gradcam++/last": (rng.random((1, 8, 8), np.float32), {"targets": [{"kind": "class", "index": 1}]})})
    return [seg, cls]


SYNTHETIC = _synthetic()


@pytest.fixture(scope="module")
def model_seeds(tmp_path_factory):
    """Records of the built-in models (small images): what attribute and cam are fuzzed with."""
    from helpers_models import write_png

    from xaicli.models.builtin.shapes import make_sample

    folder = tmp_path_factory.mktemp("seeds")
    out = {}
    for task, model, step in (("segmentation", "builtin:shapes-seg", 3), ("classification", "builtin:shapes-cls", 2)):
        path = write_png(folder / f"{task[:3]}.png", make_sample(0, task)[0][::step, ::step])
        r = invoke(["predict", "-m", model, path])
        assert r.exit_code == 0, r.stderr
        out[task] = next(read_stdin(io.BytesIO(r.stdout)))
    return out


# -- the validator and the stream reader, as a library -----------------------------------

def _read(data: bytes, name: str = "rec.npz") -> Record | str:
    try:
        return Record.from_bytes(data, name)
    except XaiError as exc:
        return str(exc)


def _consume(record: Record) -> None:
    """What stats and render do with a record's content (no figure drawn): only XaiError may
    come out, naming the record."""
    from xaicli.metrics import report
    from xaicli.render import content, maps

    try:
        for mt in report.iter_map_targets(record):
            report.json_line(report.map_row(mt, report.ground_truth(record, None)))
        maps.views(record)
        content.header(record), content.pred_mask(record), content.gt_mask(record), content.top_classes(record)
    except XaiError as exc:
        assert "\n" not in str(exc) and record.id in str(exc), str(exc)


def _assert_names_field(error: str) -> None:
    assert "\n" not in error and error.startswith("rec.npz: "), error
    assert re.search(r'meta \$|array "|meta |member |\.npz has no', error), error


def _valid_or_named(data: bytes) -> None:
    got = _read(data)
    if isinstance(got, str):
        _assert_names_field(got)
    else:
        _consume(got)


@given(data=st.data())
@examples(60)
@counted("library: meta")
def test_validator_on_meta_of_every_json_type(data):
    meta, arrays = parts(data.draw(st.sampled_from(SYNTHETIC)))
    _valid_or_named(npz_bytes(mutate_meta(data.draw, meta), arrays))


@given(data=st.data())
@examples(60)
@counted("library: arrays")
def test_validator_on_flattened_emptied_and_retyped_arrays(data):
    meta, arrays = parts(data.draw(st.sampled_from(SYNTHETIC)))
    _valid_or_named(npz_bytes(meta, mutate_arrays(data.draw, arrays)))


@given(data=st.data())
@examples(60)
@counted("library: stream bytes")
def test_stream_reader_on_flipped_cut_and_inserted_bytes(data):
    stream = stream_of(*(r.to_bytes() for r in SYNTHETIC), names=["seg.npz", "cls.npz"])
    mutated = mutate_bytes(data.draw, stream)
    try:
        records = list(read_stdin(io.BytesIO(mutated)))
    except XaiError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("<stdin>"), str(exc)
        return
    for r in records:
        _consume(r)


@given(text=st.text(max_size=90) | st.from_regex(r"[A-Za-z0-9._+-]{1,85}", fullmatch=True))
@examples(200)
def test_the_id_pattern_of_the_schema_is_what_safe_id_makes(text):
    """The schema's id pattern (as jsonschema applies it: re.search) against an independent
    oracle: xai's own file-name rule, safe_id(text) == text."""
    pattern = schema()["properties"]["id"]["pattern"]
    assert bool(re.search(pattern, text)) == (safe_id(text) == text), text


@given(major=st.integers(0, 99), minor=st.none() | st.integers(0, 10 ** 6))
@examples(30)
def test_minor_versions_read_and_other_majors_are_refused_by_name(major, minor):
    meta, arrays = parts(SYNTHETIC[0])
    meta["schema"] = f"xai.record/{major}" + ("" if minor is None else f".{minor}")
    meta["added_in_a_minor_version"] = {"any": ["thing"]}
    meta["maps"]["cam/gradcam/layer"]["stride"] = [2, 2]
    got = _read(npz_bytes(meta, arrays))
    if major == 1:
        assert isinstance(got, Record), got
    else:
        assert meta["schema"] in got and "this xai reads xai.record/1 and its minor versions" in got, got


# -- the commands ------------------------------------------------------------------------

COMMANDS = {   # command → (arguments around the input, seeds, cases in the suite per kind)
    "stats": (lambda i: ["stats", i, "-o", "out/stats.jsonl"], "synthetic", 6),
    "render": (lambda i: ["render", i, "-o", "out/", "--dpi", "20"], "synthetic", 2),
    "attribute": (lambda i: ["attribute", "-m", "builtin:shapes-seg", "--steps", "1", i, "-o", "out/"],
                  "segmentation", 1),
    "cam": (lambda i: ["cam", "-m", "builtin:shapes-cls", i, "-o", "out/"], "classification", 1),
}


def _command_case(command: str, kind: str, data, seeds: list[Record], tmp_path) -> None:
    args, _, _ = COMMANDS[command]
    case = Case(tmp_path)
    (case.dir / "out").mkdir()
    try:
        if kind == "stream bytes":
            stream = stream_of(*(r.to_bytes() for r in seeds), names=[f"{r.id}.npz" for r in seeds])
            result = case.run(args("-"), stdin=mutate_bytes(data.draw, stream))
            names = ("<stdin>", *(r.id for r in seeds))
        else:
            meta, arrays = parts(data.draw(st.sampled_from(seeds)))
            if kind == "meta":
                meta = mutate_meta(data.draw, meta)
            else:
                arrays = mutate_arrays(data.draw, arrays)
            path = case.write("rec.npz", npz_bytes(meta, arrays))
            rid = meta.get("id") if isinstance(meta, dict) else None
            names = ("rec.npz", *([rid] if isinstance(rid, str) and rid else []))
            result = case.run(args(path))
        LAST_EXIT["code"] = result.exit_code
        check(result, case, names, broken_record=kind != "stream bytes")
    finally:
        case.close()


@pytest.mark.parametrize("kind", ["stream bytes", "meta", "arrays"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_answer_broken_records_with_one_line(command, kind, model_seeds, tmp_path):
    """No internal error, traceback, hang, or file outside -o, whatever the record holds."""
    _, which, short = COMMANDS[command]
    seeds = SYNTHETIC if which == "synthetic" else [model_seeds[which]]

    @given(data=st.data())
    @examples(short)
    @counted(f"{command}: {kind}")
    def one(data):
        _command_case(command, kind, data, seeds, tmp_path)

    one()
