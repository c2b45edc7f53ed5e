"""xai report without a browser: the page's data (metrics equal to xai stats, the summary to
--summary, --stats columns, model groups), bad inputs, --skip-existing, atomic pages, errors,
the script's language level and the imports (no torch). test_report_browser.py drives the page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import error_line, make_record

ROOT = Path(__file__).resolve().parent.parent
TARGET = [{"kind": "mask", "label": "blob", "index": 0}]
FAST = ["--dpi", "20", "--thumb-size", "24"]


def ig_info(**extra):
    return {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "targets": TARGET,
            "steps": 8, "delta": [0.01], "relative_delta": [0.02], **extra}


def cam_info(**extra):
    return {"kind": "cam", "method": "gradcam", "layer": "decoder_last", "targets": TARGET, **extra}


def mapped(rid: str, seed: int, **kw):
    """A segmentation record with an IG and a Grad-CAM map whose focus differs by seed."""
    rng = np.random.default_rng(seed)
    ig = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    ig[0, :, 4:8, 4:8] += 2.0 * seed               # more attribution inside the mask as seed grows
    cam = rng.random((1, 16, 16)).astype(np.float32)
    cam[0, 4:8, 4:8] += seed
    return make_record(rid, seed=seed, maps={"attr/integrated_gradients/black": (ig, ig_info()),
                                             "cam/gradcam/decoder_last": (cam, cam_info())}, **kw)


def write(folder: Path, *records) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for rec in records:
        p = folder / f"{rec.id}.npz"
        p.write_bytes(rec.to_bytes())
        out.append(p)
    return out


def page_data(index: Path) -> dict:
    text = index.read_text()
    m = re.search(r'<script type="application/json" id="xai-data">(.*?)</script>', text, re.S)
    assert m, "no data block in the page"
    return json.loads(m.group(1))


def cell(data: dict, rid: str, key: str, t: int = 0) -> dict | None:
    (row,) = [r for r in data["rows"] if r["id"] == rid]
    (j,) = [j for j, m in enumerate(data["maps"]) if m["id"] == f"{key}#{t}"]
    return row["m"][j]


def value(data: dict, rid: str, key: str, metric: str, t: int = 0):
    k = [m["key"] for m in data["metrics"]].index(metric)
    return cell(data, rid, key, t)["v"][k]


def report(cli, inputs, out: Path, *args) -> dict:
    r = cli(["report", *inputs, "-o", out, *FAST, *args])
    assert r.exit_code == 0, r.stderr
    assert r.output == f"{out / 'index.html'}\n"
    return page_data(out / "index.html")


# -- the numbers: xai stats's ---------------------------------------------------------------

def test_metrics_and_summary_are_the_numbers_of_xai_stats(cli, tmp_path):
    files = write(tmp_path / "recs", *[mapped(f"r{i}", i) for i in range(4)])
    data = report(cli, files, tmp_path / "rep")
    rows = [json.loads(s) for s in cli(["stats", *files]).output.splitlines()]
    assert len(rows) == 8
    names = [m["key"] for m in data["metrics"]]
    for metric in ("focus_ratio", "pointing_game", "roc_auc", "sparseness", "relative_delta"):
        assert metric in names
        for row in rows:
            got = value(data, row["id"], row["map"], metric)
            if row[metric] is None:
                assert got is None
            else:
                assert got == pytest.approx(row[metric], rel=1e-5), (row["id"], row["map"], metric)
    assert "mean" not in names and "gt_focus_ratio" not in names   # value statistics: via --stats; no gt here
    summary = [json.loads(s) for s in cli(["stats", *files, "--summary"]).output.splitlines()]
    (group,) = data["groups"]
    assert group["records"] == 4 and group["name"] == "test"
    for s in group["summary"]:
        mean = next(r for r in summary if r["stat"] == "mean" and r["map"] == s["map"])
        std = next(r for r in summary if r["stat"] == "std" and r["map"] == s["map"])
        assert s["n"] == 4 and s["target"] == "blob"
        for k, metric in enumerate(names):
            assert s["v"][k][0] == pytest.approx(mean[metric], rel=1e-5, abs=1e-12) if mean[metric] is not None \
                else s["v"][k][0] is None
            if std[metric] is not None:
                assert s["v"][k][1] == pytest.approx(std[metric], rel=1e-5, abs=1e-12)
    # the focus of the made-up maps grows with the seed: the table says so
    ratios = [value(data, f"r{i}", "attr/integrated_gradients/black", "focus_ratio") for i in range(4)]
    assert ratios == sorted(ratios) and ratios[0] < ratios[-1]


def test_stats_file_adds_columns_and_wins_over_computed_values(cli, tmp_path):
    files = write(tmp_path / "recs", *[mapped(f"r{i}", i) for i in range(3)])
    rows = [json.loads(s) for s in cli(["stats", *files]).output.splitlines()]
    for n, row in enumerate(rows):
        row["deletion_auc"] = 0.1 * n                    # what `xai stats -m` adds
        row["focus_ratio"] = 1000.0 + n                  # e.g. computed with other settings
    rows.append({**rows[0], "id": "not_in_input"})
    stats = tmp_path / "stats.jsonl"
    stats.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({**rows[0], "stat": "mean"}) + "\n")
    r = cli(["report", *files, "-o", tmp_path / "rep", *FAST, "--stats", stats])
    assert r.exit_code == 0, r.stderr
    assert "1 row(s) name a record, map or target that is not in the input" in r.stderr
    data = page_data(tmp_path / "rep" / "index.html")
    assert next(m for m in data["metrics"] if m["key"] == "deletion_auc")["shown"] is True
    for n, row in enumerate(rows[:-1]):
        assert value(data, row["id"], row["map"], "deletion_auc") == pytest.approx(0.1 * n)
        assert value(data, row["id"], row["map"], "focus_ratio") == 1000.0 + n
    assert "mean" in [m["key"] for m in data["metrics"]]          # every numeric column of the file
    # the JSON array of --format json reads the same
    doc = tmp_path / "stats.json"
    doc.write_text(json.dumps(rows[:-1]))
    again = report(cli, files, tmp_path / "rep2", "--stats", doc)
    assert again["rows"] == data["rows"]


def test_models_are_grouped_and_named(cli, tmp_path):
    a = mapped("a1", 1)
    b = mapped("b1", 2)
    c = mapped("c1", 3, task="classification", labels=("red", "green", "blue"))
    b.meta["model"] = {**b.meta["model"], "sha256": "2" * 64}          # same spec, other weights
    c.meta["model"] = {**c.meta["model"], "spec": "builtin:shapes-cls"}
    data = report(cli, write(tmp_path / "recs", a, b, c), tmp_path / "rep")
    names = [g["name"] for g in data["groups"]]
    assert names == [f"test (weights {'1' * 12})", f"test (weights {'2' * 12})", "builtin:shapes-cls"]
    assert [r["g"] for r in data["rows"]] == [0, 1, 2]
    assert [g["records"] for g in data["groups"]] == [1, 1, 1]
    assert data["groups"][1]["model"]["sha256"] == "2" * 64
    row = data["rows"][2]
    assert row["pk"] == "confidence" and row["cls"] == c.meta["prediction"]["label"]
    assert row["p"] == pytest.approx(c.meta["prediction"]["confidence"], rel=1e-5)
    seg = data["rows"][0]
    assert seg["pk"] == "area" and seg["cls"] == "blob"
    assert seg["p"] == pytest.approx(float(np.mean(a.arrays["pred/mask"] != 0)))


def test_prediction_of_a_multi_class_segmenter():
    from xaicli.report.table import prediction

    mask = np.zeros((10, 10), np.uint8)
    mask[:2] = 2                          # 20% dog, no cat, the rest background (class 0)
    rec = make_record("m", labels=("background", "cat", "dog"), mask=mask)
    rec.meta["prediction"] = {"area_fraction": {"background": 0.8, "cat": 0.0, "dog": 0.2}}
    assert prediction(rec) == {"cls": "dog", "p": 0.2, "pk": "area"}
    del rec.arrays["pred/mask"]           # from the fractions alone: all but class 0
    rec.meta["prediction"]["area_fraction"] = {"background": 0.0, "cat": 0.25, "dog": 0.2}
    assert prediction(rec) == {"cls": "cat, dog", "p": 0.45, "pk": "area"}


def test_provenance_lists_versions_and_parameters(cli, tmp_path):
    recs = [mapped(f"r{i}", i) for i in range(3)]
    for i, rec in enumerate(recs):
        rec.add_history("attribute", {"steps": 8 if i < 2 else 16, "baselines": ["black"]}, 1.0, "cpu")
    data = report(cli, write(tmp_path / "recs", *recs), tmp_path / "rep")
    (group,) = data["groups"]
    assert group["versions"] == [__import__("xaicli").__version__]
    (attribute,) = [s for s in group["steps"] if s["command"] == "attribute"]
    assert [(run["parameters"]["steps"], run["records"]) for run in attribute["runs"]] == [(8, 2), (16, 1)]
    assert group["model"]["spec"] == "test" and group["model"]["sha256"] == "1" * 64


# -- figures --------------------------------------------------------------------------------

def test_figures_are_render_figures_and_thumbnails_one_panel(cli, tmp_path):
    import imageio.v3 as iio

    (f,) = write(tmp_path / "recs", mapped("r1", 1))
    out = tmp_path / "rep"
    r = cli(["report", f, "-o", out, "--dpi", "50", "--thumb-size", "40"])
    assert r.exit_code == 0, r.stderr
    data = page_data(out / "index.html")
    (row,) = data["rows"]
    assert row["img"] == {"n": "r1.png", "t": True}
    assert [c["n"] for c in row["m"]] == ["r1__integrated_gradients__black__blob.png",
                                          "r1__gradcam__decoder_last__blob.png"]
    # the full figures are what `xai render` draws at the same dpi: the panel, and --split
    rendered = tmp_path / "rendered"
    assert cli(["render", f, "-o", rendered, "--dpi", "50"]).exit_code == 0
    assert cli(["render", f, "-o", rendered, "--dpi", "50", "--split"]).exit_code == 0
    for name in ["r1.png"] + [c["n"] for c in row["m"]]:
        assert np.array_equal(iio.imread(out / "figures" / name), iio.imread(rendered / name)), name
        assert iio.imread(out / "thumbs" / name).shape[:2] == (40, 40)


def test_record_without_maps_and_figures_that_cannot_be_drawn(cli, tmp_path):
    from xaicli.io.record import Record

    files = write(tmp_path / "recs", make_record("nomaps"), mapped("bad", 1), Record.new("empty"), mapped("good", 2))
    r = cli(["report", *files, "-o", tmp_path / "rep", *FAST])
    assert r.exit_code == 0, r.stderr
    data = page_data(tmp_path / "rep" / "index.html")
    assert [row["id"] for row in data["rows"]] == ["nomaps", "bad", "empty", "good"]
    nomaps = data["rows"][0]
    assert nomaps["img"] == {"n": "nomaps.png", "t": True} and nomaps["m"] == [None] * len(data["maps"])
    assert nomaps["cls"] == "blob"
    empty = data["rows"][2]
    assert "nothing to draw" in empty["img"]["e"]


def test_a_record_with_a_map_of_a_wrong_shape_is_refused_as_it_is_read(cli, tmp_path):
    """Such a map once became a cell with the reason; records are validated as they are read
    now (io/schema.py), so the report says which record and which array, in one line."""
    bad = mapped("bad", 1)
    bad.add_map("cam/gradcam/broken", np.ones(5, np.float32), cam_info(layer="broken"))   # not (T,H,W)
    files = write(tmp_path / "recs", bad, mapped("good", 2))
    line = error_line(cli(["report", *files, "-o", tmp_path / "rep", *FAST]), 1)
    assert 'bad.npz: array "cam/gradcam/broken" shape: expected (T,H,W), found (5,)' in line, line


# -- --skip-existing, atomic page ------------------------------------------------------------

def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))}


def test_skip_existing_draws_only_new_and_changed_figures(cli, tmp_path):
    recs = tmp_path / "recs"
    write(recs, mapped("r1", 1), mapped("r2", 2))
    out = tmp_path / "rep"
    report(cli, [recs], out)
    first = {**_mtimes(out / "figures"), **{f"t/{k}": v for k, v in _mtimes(out / "thumbs").items()}}
    assert len(first) == 2 * 3 * 2
    grown = mapped("r2", 2)
    grown.add_map("cam/gradcam++/decoder_last", grown.arrays["cam/gradcam/decoder_last"] * 2,
                  cam_info(method="gradcam++"))
    write(recs, grown, mapped("r3", 3))
    data = report(cli, [recs], out, "--skip-existing")
    after = {**_mtimes(out / "figures"), **{f"t/{k}": v for k, v in _mtimes(out / "thumbs").items()}}
    unchanged = {k for k in first if after[k] == first[k]}
    assert set(first) - unchanged == {"r2.png", "t/r2.png"}      # r2 gained a map: its panel, not its other maps
    assert {k for k in after if k not in first} == {
        "r2__gradcam++__decoder_last__blob.png", "t/r2__gradcam++__decoder_last__blob.png",
        *(f"{p}r3{s}" for p in ("", "t/") for s in (".png", "__integrated_gradients__black__blob.png",
                                                     "__gradcam__decoder_last__blob.png"))}
    assert [r["id"] for r in data["rows"]] == ["r1", "r2", "r3"]
    again = report(cli, [recs], out, "--skip-existing")
    assert again == data and _mtimes(out / "figures") == {k: v for k, v in after.items() if not k.startswith("t/")}
    report(cli, [recs], out, "--skip-existing", "--thumb-size", "32")      # other thumbnails: all redrawn
    assert all(_mtimes(out / "thumbs")[k[2:]] != v for k, v in after.items() if k.startswith("t/"))


def test_a_failed_run_keeps_the_previous_page(cli, tmp_path):
    recs = tmp_path / "recs"
    write(recs, mapped("r1", 1))
    out = tmp_path / "rep"
    report(cli, [recs], out)
    before = (out / "index.html").read_bytes()
    (recs / "r2.npz").write_bytes(b"PK\x03\x04 not a zip")
    r = cli(["report", recs, "-o", out, *FAST])
    assert "r2.npz" in error_line(r, 1)
    assert (out / "index.html").read_bytes() == before
    assert not [p for p in out.rglob(".*")], "temp file left"


def test_page_keeps_strings_as_data(cli, tmp_path):
    rec = mapped("r1", 1)
    rec.meta["source"]["path"] = "scans/</script><script>alert(1)</script><!--.png"
    (f,) = write(tmp_path / "recs", rec)
    out = tmp_path / "rep"
    r = cli(["report", f, "-o", out, *FAST, "--title", "Study <b>7</b> {{DATA}}"])
    assert r.exit_code == 0, r.stderr
    html = (out / "index.html").read_text()
    assert "<script>alert(1)" not in html and "<b>7</b>" not in html
    assert html.count("</script>") == 2                      # the data block's and the script's
    assert "<title>Study &lt;b&gt;7&lt;/b&gt; {{DATA}}</title>" in html
    data = page_data(out / "index.html")
    assert data["rows"][0]["src"] == rec.meta["source"]["path"] and data["title"] == "Study <b>7</b> {{DATA}}"


# -- the page's script: plain ES2017, no framework ----------------------------------------

def test_script_is_es2017_and_the_page_fetches_nothing():
    esprima = pytest.importorskip("esprima", reason="esprima (test extra) parses ES2017")
    from xaicli.report.page import ASSETS

    source = (ASSETS / "report.js").read_text()
    esprima.parseScript(source)                               # ES2017 grammar: no ?., ??, class fields
    for newer in ("a?.b", "a ?? b", "class A { x = 1 }"):      # the oracle does reject newer syntax
        with pytest.raises(Exception):
            esprima.parseScript(newer)
    assert not re.search(r"\b(fetch|XMLHttpRequest|import\s*\(|WebSocket|EventSource)\b", source)
    page = (ASSETS / "page.html").read_text() + (ASSETS / "report.css").read_text()
    assert not re.search(r"(src|href)=\"?(https?:)?//|@import|url\(", page)


# -- errors ------------------------------------------------------------------------------------

def test_errors_are_one_line(cli, tmp_path):
    (f,) = write(tmp_path / "recs", mapped("r1", 1))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "-o DIR" in error_line(cli(["report", f]), 2)
    assert "not a folder" in error_line(cli(["report", f, "-o", a_file]), 1)
    assert "cannot create output folder" in error_line(cli(["report", f, "-o", a_file / "rep"]), 1)
    assert "--dpi" in error_line(cli(["report", f, "-o", tmp_path / "o", "--dpi", "5"]), 2)
    assert "--thumb-size" in error_line(cli(["report", f, "-o", tmp_path / "o", "--thumb-size", "4"]), 2)
    assert "nope.jsonl" in error_line(cli(["report", f, "-o", tmp_path / "o", "--stats", tmp_path / "nope.jsonl"]), 1)
    csv = tmp_path / "stats.csv"
    assert cli(["stats", f, "--format", "csv", "-o", csv]).exit_code == 0
    assert "CSV" in error_line(cli(["report", f, "-o", tmp_path / "o", "--stats", csv]), 1)
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"id": "r1", "map": "attr/x"}\n{"id": \n')
    assert "junk.jsonl:2" in error_line(cli(["report", f, "-o", tmp_path / "o", "--stats", junk]), 1)
    assert "stdin is empty" in error_line(cli(["report", "-o", tmp_path / "o"], input=b""), 1)
    assert not (tmp_path / "o" / "index.html").exists()
    two = [mapped("r1", 1), mapped("r1", 2)]
    two[1].meta["source"] = {"path": "other.png", "sha256": "f" * 64}
    stream = tmp_path / "two"
    files = [write(stream / str(i), rec)[0] for i, rec in enumerate(two)]
    assert "two records with id 'r1'" in error_line(cli(["report", *files, "-o", tmp_path / "o2", *FAST]), 1)
    assert not (tmp_path / "o2" / "index.html").exists()


def test_report_reads_a_stream_on_stdin(cli, tmp_path):
    from xaicli.io.stream import TarWriter
    import io

    buf = io.BytesIO()
    writer = TarWriter(buf)
    for i in range(2):
        writer.add_record(mapped(f"s{i}", i))
    writer.close()
    r = cli(["report", "-o", tmp_path / "rep", *FAST], input=buf.getvalue())
    assert r.exit_code == 0, r.stderr
    assert [row["id"] for row in page_data(tmp_path / "rep" / "index.html")["rows"]] == ["s0", "s1"]


# -- no torch ------------------------------------------------------------------------------------

PROBE = """
import json, sys
from xaicli.cli.app import run
code = run(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'segmentation_models_pytorch',
                                                          'transformers', 'timm', 'pytorch_grad_cam', 'captum'})
sys.stderr.write('\\nPROBE ' + json.dumps({'code': code, 'heavy': heavy}) + '\\n')
"""


def test_report_imports_no_torch(tmp_path):
    (f,) = write(tmp_path / "recs", mapped("r1", 1))
    proc = subprocess.run([sys.executable, "-c", PROBE, "report", str(f), "-o", str(tmp_path / "rep"), *FAST],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    info = json.loads([ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")][-1][6:])
    assert info == {"code": 0, "heavy": []}, proc.stderr
    assert (tmp_path / "rep" / "index.html").exists()
