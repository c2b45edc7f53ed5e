"""xai render through the real entry point: files, names, stdout, errors, and no torch."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_record

FAST = ["--dpi", "20", "--panel-size", "1"]
KEYS = "method, layer, baseline, target, record, style"


def blob(h=16, w=16):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return np.exp(-((yy - h / 3) ** 2 + (xx - w / 3) ** 2) / (h / 2))


def mapped(record_id="r1", **kw):
    b = blob()
    info = {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
            "targets": [{"kind": "mask", "label": "blob", "index": 0}], "steps": 8, "delta": [0.01]}
    cam = {"kind": "cam", "method": "gradcam", "layer": "layer4",
           "targets": [{"kind": "mask", "label": "blob", "index": 0}]}
    return make_record(record_id, maps={"attr/integrated_gradients/black": (np.stack([b - 0.5] * 3)[None], info),
                                        "cam/gradcam/layer4": (b[None], cam)}, **kw)


def write(tmp_path: Path, *records) -> list[str]:
    paths = []
    for rec in records:
        p = tmp_path / f"{rec.id}.npz"
        p.write_bytes(rec.to_bytes())
        paths.append(str(p))
    return paths


def tar_of(*records) -> bytes:
    from xaicli.io.stream import TarWriter

    buf = io.BytesIO()
    w = TarWriter(buf)
    for rec in records:
        w.add_record(rec)
    w.close()
    return buf.getvalue()


def lines(result) -> list[str]:
    return result.output.splitlines()


def png_shape(path) -> tuple:
    import matplotlib.image

    return matplotlib.image.imread(path).shape


def assert_one_line_error(r, code, *words):
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.stderr.startswith("xai: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == b""
    for w in words:
        assert w in r.stderr, r.stderr


def test_writes_one_figure_per_record_and_prints_only_the_paths(cli, tmp_path):
    files = write(tmp_path, mapped("a"), mapped("b"))
    out = tmp_path / "figs" / "deep"                            # created with its parents
    r = cli(["render", *files, "-o", out, *FAST])
    assert r.exit_code == 0, r.stderr
    assert lines(r) == [str(out / "a.png"), str(out / "b.png")]
    for p in lines(r):
        h, w, _ = png_shape(p)
        assert h > 10 and w > 10
    manifest = [json.loads(x) for x in (out / "figures.jsonl").read_text().splitlines()]
    assert [(m["file"], m["id"], m["sha256"]) for m in manifest] == [("a.png", "a", "0" * 64), ("b.png", "b", "0" * 64)]


def test_two_images_records_with_one_id_do_not_overwrite_a_figure(cli, tmp_path):
    a, b = mapped("x"), mapped("x", seed=1)
    b.meta["source"] = {**b.meta["source"], "path": "/other/x.png", "sha256": "2" * 64}
    r = cli(["render", "-o", tmp_path / "figs", *FAST], input=tar_of(a, b))
    assert r.exit_code == 1 and "two records with id 'x' in one run, of different images" in r.stderr
    manifest = (tmp_path / "figs" / "figures.jsonl").read_text().splitlines()
    assert [json.loads(x)["source"] for x in manifest] == ["x.png"]    # the first, alone
    r = cli(["render", "-o", tmp_path / "again", *FAST], input=tar_of(a, a))   # the same record twice: fine
    assert r.exit_code == 0, r.stderr


def test_reads_a_tar_stream_on_stdin(cli, tmp_path):
    r = cli(["render", "-o", tmp_path, *FAST], input=tar_of(mapped("a"), mapped("b")))
    assert r.exit_code == 0, r.stderr
    assert [Path(p).name for p in lines(r)] == ["a.png", "b.png"]


def test_dpi_sets_the_pixel_size(cli, tmp_path):
    (f,) = write(tmp_path, mapped())
    shapes = []
    for dpi in ("20", "40"):
        r = cli(["render", f, "-o", tmp_path / dpi, "--dpi", dpi, "--panel-size", "1"])
        shapes.append(png_shape(lines(r)[0])[:2])
    (h1, w1), (h2, w2) = shapes
    assert abs(h2 - 2 * h1) <= 2 and abs(w2 - 2 * w1) <= 2


def test_split_grid_and_styles_name_the_files(cli, tmp_path):
    (f,) = write(tmp_path, mapped())
    r = cli(["render", f, "-o", tmp_path / "o", "--split", *FAST])
    assert [Path(p).name for p in lines(r)] == ["r1__integrated_gradients__black__blob.png",
                                                "r1__gradcam__layer4__blob.png"]
    r = cli(["render", f, "-o", tmp_path / "o", "--layout", "grid", "-s", "signed", "-s", "contours", *FAST])
    assert [Path(p).name for p in lines(r)] == ["r1__grid__signed+contours.png"]


@pytest.mark.parametrize("fmt,magic", [("pdf", b"%PDF"), ("svg", b"<svg")])
def test_vector_formats(cli, tmp_path, fmt, magic):
    (f,) = write(tmp_path, mapped())
    r = cli(["render", f, "-o", tmp_path / "o", "--format", fmt, *FAST])
    assert r.exit_code == 0, r.stderr
    (p,) = lines(r)
    assert p.endswith(f"r1.{fmt}") and magic in Path(p).read_bytes()[:2000]


def test_record_without_image_and_record_without_maps_render(cli, tmp_path):
    files = write(tmp_path, mapped("noimg", image=False), make_record("nomaps"))
    r = cli(["render", *files, "-o", tmp_path / "o", *FAST])
    assert r.exit_code == 0, r.stderr
    assert [Path(p).name for p in lines(r)] == ["noimg.png", "nomaps.png"]


def test_skip_existing_resumes_and_redraws_a_changed_source(cli, tmp_path):
    (f,) = write(tmp_path, mapped())
    out = tmp_path / "o"
    assert cli(["render", f, "-o", out, *FAST]).exit_code == 0
    before = (out / "r1.png").stat().st_mtime_ns
    r = cli(["render", f, "-o", out, "--skip-existing", *FAST])
    assert r.exit_code == 0 and r.stdout == b""
    assert (out / "r1.png").stat().st_mtime_ns == before
    changed = mapped()
    changed.meta["source"]["sha256"] = "f" * 64
    (tmp_path / "new").mkdir()
    (g,) = write(tmp_path / "new", changed)
    r = cli(["render", g, "-o", out, "--skip-existing", *FAST])
    assert lines(r) == [str(out / "r1.png")]
    # the same source, but the record gained a map (xai attribute recs/ -o recs/): drawn again
    grown = mapped()
    grown.meta["source"]["sha256"] = "f" * 64
    grown.add_map("attr/saliency/none", np.ones((1, 3, 16, 16), np.float32), {"kind": "attribution",
                  "method": "saliency", "baseline": None, "layer": None,
                  "targets": [{"kind": "mask", "label": "blob", "index": 0}]})
    (tmp_path / "grown").mkdir()
    (h,) = write(tmp_path / "grown", grown)
    assert lines(cli(["render", h, "-o", out, "--skip-existing", *FAST])) == [str(out / "r1.png")]
    assert cli(["render", h, "-o", out, "--skip-existing", *FAST]).stdout == b""


def test_render_sweeps_the_temp_file_of_a_killed_render(cli, tmp_path):
    import subprocess
    import sys

    from xaicli.io.atomic import temp_prefix

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o"
    out.mkdir()
    stale = out / (temp_prefix("r1.png").replace(f"-{os.getpid()}-", f"-{dead.pid}-") + "abcd1234.tmp")
    stale.write_bytes(b"half a png")
    (f,) = write(tmp_path, mapped())
    assert cli(["render", f, "-o", out, *FAST]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["figures.jsonl", "r1.png"]


# -- errors: one line on stderr, exit 1 or 2, no traceback, no partial file -------------

@pytest.mark.parametrize("args,code,words", [
    (["--style", "sparkle"], 2, ["sparkle", "overlay, heatmap, signed, abs, channels, contours"]),
    (["--format", "gif"], 2, ["gif", "png, pdf, svg"]),
    (["--cmap", "nocmap"], 2, ["nocmap", "turbo", "jet", "viridis"]),
    (["--signed-cmap", "nocmap"], 2, ["nocmap", "RdBu"]),
    (["--layout", "mosaic"], 2, ["mosaic", "panel, grid"]),
    (["--scale", "global"], 2, ["global", "panel, shared, row, col", "per-map = panel"]),
    (["--rows", "method", "--cols", "method"], 2, ["--rows and --cols both name method", KEYS]),
    (["--rows", "scan"], 2, ["'scan' is not a key", KEYS]),
    (["--cols", "layer", "--cols", "layer"], 2, ["--cols names layer twice", KEYS]),
    (["--layout", "panel", "--rows", "method"], 2, ["--layout grid"]),
    (["--split", "--rows", "record"], 2, ["--split"]),
    (["--layout", "grid", "--max-rows", "4"], 2, ["--max-rows", "--rows record"]),
    (["--rows", "record", "--max-rows", "0"], 2, ["--max-rows 0", "1 to 1000"]),
    (["--rows", "record", "--first", "0"], 2, ["--first 0"]),
    (["--first", "3"], 2, ["--first", "--rows record"]),
    (["--rows", "record", "--sort", "focus_ratio"], 2, ["--stats FILE.jsonl"]),
    (["--rows", "record", "--stats", "s.jsonl"], 2, ["--sort KEY"]),
    (["--dpi", "0"], 2, ["--dpi"]),
    (["--alpha", "1.5"], 2, ["--alpha"]),
    (["--clip", "0"], 2, ["--clip"]),
])
def test_bad_options_are_usage_errors_before_any_output(cli, tmp_path, args, code, words):
    (f,) = write(tmp_path, mapped())
    out = tmp_path / "o"
    r = cli(["render", f, "-o", out, *args])
    assert_one_line_error(r, code, *words)
    assert not out.exists()


def test_missing_output_folder_option(cli, tmp_path):
    (f,) = write(tmp_path, mapped())
    assert_one_line_error(cli(["render", f]), 2, "-o DIR")


def test_unwritable_output(cli, tmp_path):
    (f,) = write(tmp_path, mapped())
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_one_line_error(cli(["render", f, "-o", a_file]), 1, "not a folder")
    assert_one_line_error(cli(["render", f, "-o", a_file / "figs"]), 1, "cannot create output folder")


def test_empty_stdin_and_missing_file(cli, tmp_path):
    out = tmp_path / "o"
    assert_one_line_error(cli(["render", "-o", out], input=b""), 1, "stdin is empty")
    assert_one_line_error(cli(["render", tmp_path / "nope.npz", "-o", out]), 1, "nope.npz")
    assert not out.exists() or list(out.iterdir()) == []


def test_grid_without_maps_and_record_with_nothing_to_draw(cli, tmp_path):
    from xaicli.io.record import Record

    files = write(tmp_path, make_record("nomaps"), Record.new("empty"))
    out = tmp_path / "o"
    assert_one_line_error(cli(["render", files[0], "-o", out, "--layout", "grid"]), 1, "nomaps", "no maps")
    assert_one_line_error(cli(["render", files[1], "-o", out]), 1, "empty", "nothing to draw")
    assert list(out.iterdir()) == []


def test_a_failed_write_leaves_no_partial_file(cli, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def failing_savefig(self, f, **kw):
        f.write(b"\x89PNG half a figure")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    (f,) = write(tmp_path, mapped())
    out = tmp_path / "o"
    assert_one_line_error(cli(["render", f, "-o", out, *FAST]), 1, "r1.png", "No space left")
    assert list(out.iterdir()) == []                           # neither the figure nor its temp file


# -- no torch, no window ----------------------------------------------------------

def test_render_imports_no_torch_and_uses_agg(tmp_path):
    """The CPU host that renders never pays for torch; the backend is Agg even without MPLBACKEND."""
    (f,) = write(tmp_path, mapped())
    code = f"""
import sys
import xaicli.cli.render
assert "matplotlib" not in sys.modules, "xaicli.cli.render imports matplotlib at module top"
from xaicli.cli.app import run
rc = run(["render", {f!r}, "-o", {str(tmp_path / "o")!r}, "--dpi", "20", "--panel-size", "1"])
assert rc == 0, rc
loaded = sorted(m for m in ("torch", "torchvision", "captum", "pytorch_grad_cam") if m in sys.modules)
assert not loaded, loaded
import matplotlib
assert matplotlib.get_backend().lower() == "agg", matplotlib.get_backend()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "r1.png").exists()


def test_help_documents_names_and_styles(cli):
    r = cli(["render", "--help"])
    assert r.exit_code == 0
    for word in ("<id>[__<method>__<layer or baseline>__<target>]", "contours", "--skip-existing", "--scale"):
        assert word in r.output


def test_cli_lists_match_the_library():
    from xaicli.cli import render as cli_render
    from xaicli.render import FORMATS, KEYS, LAYOUTS, SCALES, STYLES

    assert cli_render.STYLES == STYLES and cli_render.FORMATS == FORMATS
    assert cli_render.LAYOUTS == LAYOUTS and cli_render.SCALES == SCALES and cli_render.KEYS == KEYS


# -- figures of many records ----------------------------------------------------------

def leaky(record_id, leak, **kw):
    """A record whose map is 1 inside the predicted mask and `leak` outside: focus ratio 1 / leak."""
    rec = make_record(record_id, **kw)
    inside = rec.arrays["pred/mask"].astype(np.float32)
    cam = {"kind": "cam", "method": "gradcam", "layer": "layer4",
           "targets": [{"kind": "mask", "label": "blob", "index": 0}]}
    info = {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
            "targets": [{"kind": "mask", "label": "blob", "index": 0}], "steps": 8, "delta": [0.01]}
    plane = inside + leak * (1 - inside)
    rec.add_map("attr/integrated_gradients/black", np.stack([plane / 3] * 3)[None], info)
    rec.add_map("cam/gradcam/layer4", plane[None], cam)
    return rec


LEAKS = {"a": 0.5, "b": 0.1, "c": 0.25, "d": 0.05, "e": 0.2, "f": 1 / 3}    # focus ratios 2, 10, 4, 20, 5, 3


def manifest(out) -> list[dict]:
    return [json.loads(x) for x in (out / "figures.jsonl").read_text().splitlines()]


def test_six_records_by_two_methods_in_one_figure_or_in_parts_of_max_rows(cli, tmp_path):
    stream = tar_of(*(leaky(k, v) for k, v in LEAKS.items()))
    out = tmp_path / "one"
    r = cli(["render", "-o", out, "--rows", "record", "--cols", "method", *FAST], input=stream)
    assert r.exit_code == 0, r.stderr
    assert lines(r) == [str(out / "records__rows-record__cols-method__1.png")]
    (entry,) = manifest(out)
    assert entry["id"] is None and entry["ids"] == list(LEAKS) and entry["record"]
    r = cli(["render", "-o", tmp_path / "parts", "--rows", "record", "--cols", "method", "--max-rows", "4", *FAST],
            input=stream)
    assert [Path(p).name for p in lines(r)] == ["records__rows-record__cols-method__1.png",
                                                "records__rows-record__cols-method__2.png"]
    assert [m["ids"] for m in manifest(tmp_path / "parts")] == [list("abcd"), list("ef")]
    (h1, w1, _), (h2, w2, _) = (png_shape(p) for p in lines(r))
    assert w1 == w2 and h1 > 1.6 * h2                       # 4 rows and 2 rows of the same columns


def test_records_sorted_by_a_stats_key_and_the_first_n(cli, tmp_path):
    files = write(tmp_path, *(leaky(k, v) for k, v in LEAKS.items()))
    stats = tmp_path / "stats.jsonl"
    r = cli(["stats", *files[:5], "-o", stats])             # "f" gets no stats rows
    assert r.exit_code == 0, r.stderr
    grid = ["--rows", "record", "--cols", "method", "--stats", stats, *FAST]
    r = cli(["render", *files, "-o", tmp_path / "up", "--sort", "focus_ratio", *grid])
    assert r.exit_code == 0, r.stderr
    assert manifest(tmp_path / "up")[0]["ids"] == ["a", "c", "e", "b", "d", "f"]    # 2, 4, 5, 10, 20, none
    assert "1 of 6 records have no value" in r.stderr and "f" in r.stderr
    r = cli(["render", *files, "-o", tmp_path / "down", "--sort", "-focus_ratio", "--first", "3", *grid])
    assert r.exit_code == 0, r.stderr
    assert manifest(tmp_path / "down")[0]["ids"] == ["d", "b", "e"]


def test_bad_stats_files_and_keys(cli, tmp_path):
    (f,) = write(tmp_path, leaky("a", 0.5))
    stats = tmp_path / "stats.jsonl"
    assert cli(["stats", f, "-o", stats]).exit_code == 0
    grid = ["render", f, "-o", tmp_path / "o", "--rows", "record"]
    assert_one_line_error(cli([*grid, "--stats", stats, "--sort", "focus"]), 2, "--sort focus", "focus_ratio",
                          "pointing_game")
    assert_one_line_error(cli([*grid, "--stats", tmp_path / "none.jsonl", "--sort", "x"]), 1, "none.jsonl",
                          "cannot read")
    csv = tmp_path / "stats.csv"
    csv.write_text("id,map,focus_ratio\na,attr/x,2\n")
    assert_one_line_error(cli([*grid, "--stats", csv, "--sort", "focus_ratio"]), 2, "not JSON Lines")
    assert not (tmp_path / "o").exists()


def test_a_grid_key_the_records_do_not_have(cli, tmp_path):
    (f,) = write(tmp_path, make_record(maps={"cam/gradcam/layer4": (blob()[None], {
        "kind": "cam", "method": "gradcam", "layer": "layer4", "targets": [{"kind": "mask", "label": "blob"}]})}))
    r = cli(["render", f, "-o", tmp_path / "o", "--rows", "baseline"])
    assert_one_line_error(r, 2, "--rows baseline", "no map of record r1 has a baseline",
                          "valid here: method, layer, target, record, style")


def test_skip_existing_for_a_figure_of_many_records(cli, tmp_path):
    recs = [leaky(k, v) for k, v in list(LEAKS.items())[:3]]
    out = tmp_path / "o"
    args = ["render", "-o", out, "--rows", "record", "--cols", "method", "--max-rows", "2", "--skip-existing", *FAST]
    assert len(lines(cli(args, input=tar_of(*recs)))) == 2
    assert cli(args, input=tar_of(*recs)).stdout == b""                     # nothing changed: nothing drawn
    changed = leaky("c", 0.25)
    changed.meta["source"]["sha256"] = "e" * 64
    recs[2] = changed                                                       # in part 2; part 1's scales see it
    assert len(lines(cli(args, input=tar_of(*recs)))) == 2
    assert cli(args, input=tar_of(*recs)).stdout == b""
    assert len(lines(cli(args, input=tar_of(*recs[::-1])))) == 2           # another order: both parts again
