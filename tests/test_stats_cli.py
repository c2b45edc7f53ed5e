"""`xai stats` end to end through the real entry point: formats, masks, errors, no torch."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_record
from xaicli.io.stream import TarWriter

IG = "attr/integrated_gradients/black"
CAM = "cam/gradcam/decoder"


def strict_json(line):
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def tar_of(records) -> bytes:
    buf = io.BytesIO()
    w = TarWriter(buf)
    for r in records:
        w.add_record(r)
    w.close()
    return buf.getvalue()


def seg_record(rid="s1", seed=0, nan=False):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    rng = np.random.default_rng(seed)
    attr = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)   # two targets
    cam = rng.random((1, 16, 16)).astype(np.float32)
    if nan:
        cam[0, 0, 0] = np.nan
    return make_record(rid, size=(16, 16), mask=mask, seed=seed, maps={
        IG: (attr, {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
                    "targets": [{"kind": "mask", "label": "blob", "index": 0},
                                {"kind": "mask", "label": "blob", "index": 0}], "delta": [0.1, 0.2]}),
        CAM: (cam, {"kind": "cam", "method": "gradcam", "layer": "decoder",
                    "targets": [{"kind": "mask", "label": "blob", "index": 0}]}),
    })


@pytest.fixture
def stream():
    return tar_of([seg_record("s1", 0), seg_record("s2", 1, nan=True)])


def lines(result):
    return [strict_json(line) for line in result.output.splitlines()]


def test_json_lines_one_object_per_record_map_target(cli, stream):
    r = cli(["stats"], input=stream)
    assert r.exit_code == 0, r.stderr
    rows = lines(r)
    assert [(x["id"], x["map"], x["target_index"]) for x in rows] == [
        ("s1", IG, 0), ("s1", IG, 0), ("s1", CAM, 0), ("s2", IG, 0), ("s2", IG, 0), ("s2", CAM, 0)]
    assert [x["delta"] for x in rows[:3]] == [0.1, 0.2, None]
    assert rows[0]["source"] == "s1.png" and rows[0]["area_fraction"] == 16 / 256
    assert rows[5]["nonfinite"] == 1 and rows[5]["roc_auc"] is None      # NaN → null, no crash
    assert r.stderr == ""


def test_csv_carries_the_same_numbers_as_json_lines(cli, stream):
    j = lines(cli(["stats", "--summary"], input=stream))
    r = cli(["stats", "--summary", "--format", "csv"], input=stream)
    assert r.exit_code == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.output)))
    assert len(table) == len(j) and list(table[0]) == list(j[0])
    for jr, cr in zip(j, table):
        for k, v in jr.items():
            if v is None:
                assert cr[k] == "", k
            elif isinstance(v, (int, float)):
                assert float(cr[k]) == v, k
            else:
                assert cr[k] == v, k


def test_summary_rows_aggregate_each_map_and_target(cli, stream):
    rows = lines(cli(["stats", "--summary", "--map", CAM], input=stream))
    per = [x for x in rows if x["stat"] is None]
    agg = {x["stat"]: x for x in rows if x["stat"] is not None}
    assert len(per) == 2 and set(agg) == {"mean", "std", "median", "min", "max"}
    means = [x["mean"] for x in per]
    assert agg["mean"]["mean"] == pytest.approx(sum(means) / 2)
    assert agg["max"]["mean"] == max(means) and agg["mean"]["n"] == 2 and agg["mean"]["id"] is None
    assert agg["mean"]["roc_auc"] == per[0]["roc_auc"]                   # the NaN record's null is left out


def test_metrics_selects_groups_and_names_in_registry_order(cli, stream):
    from xaicli.metrics import registry
    from xaicli.metrics.report import ID_COLUMNS

    default = lines(cli(["stats"], input=stream))
    r = cli(["stats", "--metrics", "localisation"], input=stream)
    assert r.exit_code == 0, r.stderr
    rows = lines(r)
    local = [k for m in registry.metrics().values() if m.group == "localisation" for k in m.keys]
    assert set(rows[0]) == set(ID_COLUMNS) | set(local)
    assert all(row[k] == d[k] for row, d in zip(rows, default) for k in row)
    # names, keys of a metric and groups mix; repeated and comma-separated; any order in, registry order out
    rows = lines(cli(["stats", "--metrics", "gt_roc_auc", "--metrics", "complexity,sparseness"], input=stream))
    assert [k for k in rows[0] if k not in ID_COLUMNS] == ["sparseness", "complexity", "roc_auc", "gt_roc_auc"]
    every_free = lines(cli(["stats", "--metrics", "statistics,complexity,localisation,delta"], input=stream))
    assert every_free == default                  # the default is every model-free metric


def test_markdown_is_one_row_per_map_with_mean_and_std(cli, stream):
    r = cli(["stats", "-f", "markdown", "--metrics", "localisation,complexity"], input=stream)
    assert r.exit_code == 0, r.stderr
    rows = lines(cli(["stats", "--metrics", "localisation,complexity"], input=stream))
    table = [[c.strip() for c in ln.strip("|").split("|")] for ln in r.output.splitlines()]
    head, body = table[0], table[2:]
    assert head[:3] == ["method", "map", "n"] and "roc_auc ↑" in head and "complexity ↓" in head
    assert "mean" not in " ".join(head) and "area_fraction" in head          # no value statistics unless asked
    assert [b[1] for b in body] == [f"`{IG}`", f"`{CAM}`"]
    for b in body:
        mine = [x for x in rows if f"`{x['map']}`" == b[1]]
        assert b[2] == str(len(mine))
        values = [x["roc_auc"] for x in mine if x["roc_auc"] is not None]
        want = f"{np.mean(values):.3g}" + (f" ± {np.std(values, ddof=1):.2g}" if len(values) > 1 else "")
        assert b[head.index("roc_auc ↑")] == want


def test_json_format_is_one_array(cli, stream):
    r = cli(["stats", "-f", "json", "--map", "cam/*"], input=stream)
    doc = json.loads(r.output)
    assert isinstance(doc, list) and [d["map"] for d in doc] == [CAM, CAM]


def test_mask_file_gives_gt_metrics_and_dice(cli, tmp_path):
    import imageio.v3 as iio

    gt = np.zeros((16, 16), np.uint8)
    gt[4:8, 4:12] = 255                  # 32 px; the predicted mask is [4:8, 4:8], 16 px, all shared
    iio.imwrite(tmp_path / "m.png", gt)
    rec = tmp_path / "s1.npz"
    rec.write_bytes(seg_record().to_bytes())
    rows = lines(cli(["stats", str(rec), "--mask", str(tmp_path / "m.png"), "--map", CAM]))
    assert rows[0]["gt_area_fraction"] == 32 / 256
    assert rows[0]["dice"] == pytest.approx(2 * 16 / (16 + 32)) and rows[0]["iou"] == pytest.approx(16 / 32)


def test_mask_folder_is_matched_by_record_id(cli, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((16, 16), bool)
    m[0, 0] = True
    np.save(masks / "s2.npy", m)
    r = cli(["stats", "--mask", str(masks), "--map", CAM],
            input=tar_of([seg_record("s1"), seg_record("s2", 1)]))
    rows = lines(r)
    assert rows[0]["gt_area_fraction"] is None and rows[1]["gt_area_fraction"] == 1 / 256
    assert "s1" in r.stderr                              # the missing mask is reported, not fatal


def test_mask_folder_matches_a_stem_that_the_id_made_safe(cli, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((16, 16), bool)
    m[:2] = True
    np.save(masks / "scan 001.npy", m)             # the image `scan 001.png` gets the id scan_001
    np.save(masks / "scan_002.npy", m[::-1])
    rows = lines(cli(["stats", "--mask", str(masks), "--map", CAM],
                     input=tar_of([seg_record("scan_001"), seg_record("scan_002", 1)])))
    assert [r["gt_area_fraction"] for r in rows] == [32 / 256, 32 / 256]


def test_masks_that_are_not_two_level_images_are_warned_about(cli, tmp_path):
    import imageio.v3 as iio

    rec = tmp_path / "s1.npz"
    rec.write_bytes(seg_record().to_bytes())
    edged = np.zeros((16, 16), np.uint8)
    edged[4:8, 4:8], edged[8, 4:8] = 255, 40                    # an antialiased lower edge
    iio.imwrite(tmp_path / "edged.png", edged)
    alpha = np.zeros((16, 16, 4), np.uint8)
    alpha[..., :3], alpha[4:8, 4:8, 3] = 255, 255               # the region only in the alpha channel
    iio.imwrite(tmp_path / "alpha.png", alpha)
    r = cli(["stats", rec, "--mask", tmp_path / "edged.png", "--map", CAM])
    assert lines(r)[0]["gt_area_fraction"] == 20 / 256 and "3 levels" in r.stderr
    r = cli(["stats", rec, "--mask", tmp_path / "alpha.png", "--map", CAM])
    assert lines(r)[0]["gt_area_fraction"] == 1.0 and "covers the whole image" in r.stderr
    iio.imwrite(tmp_path / "clean.png", (edged == 255).astype(np.uint8) * 255)
    assert cli(["stats", rec, "--mask", tmp_path / "clean.png", "--map", CAM]).stderr == ""


def test_output_file(cli, stream, tmp_path):
    r = cli(["stats", "-o", str(tmp_path / "t.csv"), "-f", "csv"], input=stream)
    assert r.exit_code == 0 and r.stdout == b""
    assert (tmp_path / "t.csv").read_text().startswith("id,source,task,map,")


@pytest.mark.parametrize("args, code, words", [
    (["--format", "xml"], 2, "--format"),
    (["--top-k", "0"], 2, "--top-k"),
    (["--top-k", "inf"], 2, "--top-k"),
    (["--randomize"], 2, "-m MODEL"),
    (["--randomize", "-m", "builtin:shapes-seg", "--rand-steps", "1"], 2, "at least 2 checkpoints"),
    (["--perturb-baseline", "pink"], 2, "--perturb-baseline"),
    (["--mask", "/nonexistent/m.png"], 1, "no such file"),
    (["/nonexistent/r.npz"], 1, "no such file"),
    (["--map", "attr/nothing*"], 2, "no map matches"),
    (["--metrics", "localisation,bogus"], 2, "unknown metric; use groups statistics, complexity, localisation"),
    (["--metrics", ""], 2, "unknown metric"),
    (["--metrics", "faithfulness"], 2, "pass -m MODEL"),
    (["--road-percentiles", "0,50"], 2, "--road-percentiles"),
    (["--metrics", "randomisation", "-m", "builtin:shapes-seg", "--rand-steps", "1"], 2, "at least 2 checkpoints"),
])
def test_user_errors_are_one_line(cli, stream, args, code, words):
    r = cli(["stats", *args], input=stream)
    assert r.exit_code == code
    assert r.stderr.count("\n") == 1 and words in r.stderr and r.stderr.startswith("xai: error:")
    assert r.stdout == b""


def test_record_without_maps_says_which_command_adds_them(cli):
    r = cli(["stats"], input=make_record().to_bytes())
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "xai attribute" in r.stderr and "xai cam" in r.stderr


def test_mask_of_another_size_is_an_error(cli, tmp_path):
    np.save(tmp_path / "m.npy", np.ones((8, 8), bool))
    r = cli(["stats", "--mask", str(tmp_path / "m.npy")], input=seg_record().to_bytes())
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "8x8" in r.stderr and "16x16" in r.stderr


def test_stats_without_a_model_imports_no_torch(tmp_path):
    path = tmp_path / "s1.npz"
    path.write_bytes(seg_record().to_bytes())
    code = ("import sys, io\n"
            "from xaicli.cli.app import run\n"
            "sys.stdout = io.StringIO()\n"
            f"rc = run(['stats', '--summary', '-f', 'csv', {str(path)!r}])\n"
            "out = sys.stdout.getvalue(); sys.stdout = sys.__stdout__\n"
            "assert rc == 0 and out.startswith('id,'), (rc, out)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_empty_predicted_mask_gives_nulls_not_a_crash(cli):
    cam = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    rec = make_record("e", size=(16, 16), mask=np.zeros((16, 16), np.uint8),
                      maps={CAM: (cam, {"targets": [{"kind": "mask", "label": "blob", "index": 0}]})})
    r = cli(["stats"], input=rec.to_bytes())
    assert r.exit_code == 0, r.stderr
    [row] = lines(r)
    assert row["area_fraction"] == 0.0
    for key in ("focus_ratio", "focus_fraction", "pointing_game", "mass_accuracy", "rank_accuracy",
                "topk_intersection", "roc_auc"):
        assert row[key] is None, key
    assert row["mean"] == pytest.approx(float(cam.astype(np.float64).mean()))


def test_default_metrics_are_todays_and_randomize_adds_the_cascade_only():
    from xaicli.metrics import registry

    def names(**kw):
        return [m.name for m in registry.resolve(None, **kw)]

    free = [m.name for m in registry.metrics().values() if not m.model and m.name != "completeness"]
    assert names(model=False) == free
    assert set(names(model=True)) == set(free) | {"deletion_insertion"}
    assert set(names(model=True, randomize=True)) == set(free) | {"deletion_insertion", "randomisation"}
    assert [m.name for m in registry.resolve(["randomisation"], model=True)] == ["randomisation", "random_logit", "efficient_mprt", "smooth_mprt"]
