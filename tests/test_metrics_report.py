"""Rows of `xai stats`: which mask each metric uses, targets, nulls, aggregates, CSV = JSON."""

import csv
import io
import json
import math

import numpy as np
import pytest

from conftest import make_record
from xaicli.errors import XaiError
from xaicli.metrics import report

IG = "attr/integrated_gradients/black"


def ig_info(targets, **extra):
    return {"kind": "attribution", "method": "integrated_gradients", "baseline": "black", "layer": None,
            "targets": targets, **extra}


def square_mask(n=8):
    m = np.zeros((n, n), np.uint8)
    m[2:4, 2:4] = 1
    return m


def test_segmenter_row_uses_the_predicted_mask_and_channel_sum():
    mask = square_mask()
    attr = np.zeros((1, 3, 8, 8), np.float32)
    attr[0, 0][mask == 1] = 0.5
    attr[0, 2][mask == 1] = 0.5          # channel sum: 1 inside, 0 outside
    rec = make_record(size=(8, 8), mask=mask,
                      maps={IG: (attr, ig_info([{"kind": "mask", "label": "blob", "index": 0}], delta=[0.25]))})
    [mt] = report.iter_map_targets(rec)
    row = report.map_row(mt)
    assert list(row)[:len(report.COLUMNS)] == report.COLUMNS
    assert (row["method"], row["baseline"], row["layer"], row["target"], row["target_index"]) == \
        ("integrated_gradients", "black", None, "blob", 0)
    assert row["area_fraction"] == 4 / 64
    assert row["focus_ratio"] is None and row["focus_fraction"] == 1.0
    assert row["pointing_game"] == 1 and row["mass_accuracy"] == 1.0 and row["roc_auc"] == 1.0
    assert row["sum"] == pytest.approx(4.0) and row["sum_r"] == pytest.approx(2.0) and row["sum_g"] == 0.0
    assert row["delta"] == 0.25 and row["relative_delta"] is None
    assert row["gt_focus_ratio"] is None and row["dice"] is None


def test_multi_class_segmenter_region_is_the_target_class():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, :] = 1
    mask[3, :] = 2
    rec = make_record(size=(4, 4), mask=mask, labels=("bg", "a", "b"))
    rec.arrays["pred/logits"] = np.zeros((3, 4, 4), np.float32)
    cam = np.zeros((2, 4, 4), np.float32)
    cam[0, 0, :] = 1.0                   # target "a" (index 1): on row 0
    cam[1, 0, :] = 1.0                   # target "b" (index 2): also on row 0, but b is row 3
    rec.add_map("cam/gradcam/decoder", cam, {"kind": "cam", "method": "gradcam", "layer": "decoder",
                                             "targets": [{"kind": "mask", "label": "a", "index": 1},
                                                         {"kind": "mask", "label": "b", "index": 2}]})
    rows = [report.map_row(mt) for mt in report.iter_map_targets(rec)]
    assert [r["target"] for r in rows] == ["a", "b"]
    assert rows[0]["layer"] == "decoder" and rows[0]["baseline"] is None
    assert rows[0]["mass_accuracy"] == 1.0 and rows[1]["mass_accuracy"] == 0.0


def test_classifier_gets_mask_metrics_only_from_a_given_mask():
    cam = np.zeros((1, 8, 8), np.float32)
    cam[0, 2:4, 2:4] = 1.0
    rec = make_record(task="classification", size=(8, 8), labels=("x", "y"),
                      maps={"cam/gradcam/l": (cam, {"targets": [{"kind": "class", "label": "y", "index": 1}]})})
    [mt] = report.iter_map_targets(rec)
    row = report.map_row(mt)
    assert all(row[c] is None for c in report.REGION_METRICS)
    gt = report.ground_truth(rec, square_mask())
    row = report.map_row(mt, gt)
    assert row["gt_pointing_game"] == 1 and row["gt_area_fraction"] == 4 / 64
    assert row["dice"] is None                     # no predicted mask to compare
    assert row["kind"] == "cam" and row["method"] == "gradcam" and row["layer"] == "l"


def test_record_gt_mask_is_used_and_dice_iou_computed():
    pred = square_mask()
    gt = np.zeros((8, 8), np.uint8)
    gt[2:4, 2:6] = 1                           # 8 pixels, 4 shared with the prediction
    rec = make_record(size=(8, 8), mask=pred,
                      maps={"cam/gradcam/l": (pred[None].astype(np.float32), {})})
    rec.arrays["gt/mask"] = gt
    [mt] = report.iter_map_targets(rec)
    row = report.map_row(mt, report.ground_truth(rec, None))
    assert row["dice"] == pytest.approx(2 * 4 / 12) and row["iou"] == pytest.approx(4 / 8)
    assert row["gt_mass_accuracy"] == 1.0 and row["gt_area_fraction"] == 8 / 64
    # |a| inside gt: 4 ones over 8 pixels → mean 0.5; outside: 0 → infinite → null
    assert row["gt_focus_ratio"] is None
    assert row["gt_focus_fraction"] == 1.0


def test_nan_map_gives_nulls_not_a_crash():
    mask = square_mask()
    cam = np.ones((1, 8, 8), np.float32)
    cam[0, 0, 0] = np.nan
    rec = make_record(size=(8, 8), mask=mask, maps={"cam/gradcam/l": (cam, {})})
    [mt] = report.iter_map_targets(rec)
    row = report.map_row(mt)
    assert row["nonfinite"] == 1 and row["mean"] == 1.0
    for c in ("sparseness", "complexity", "focus_ratio", "pointing_game", "roc_auc"):
        assert row[c] is None, c
    json.loads(report.json_line(row), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_record_without_maps_names_the_commands_that_add_them():
    with pytest.raises(XaiError, match="xai attribute.*xai cam"):
        list(report.iter_map_targets(make_record()))


def test_summary_by_hand():
    rows = [{"id": "a", "map": "m", "target": "t", "target_index": 0, "mean": 1.0, "focus_ratio": None},
            {"id": "b", "map": "m", "target": "t", "target_index": 0, "mean": 3.0, "focus_ratio": 2.0},
            {"id": "c", "map": "m", "target": "t", "target_index": 0, "mean": 8.0, "focus_ratio": None}]
    s = {r["stat"]: r for r in report.summarise(rows)}
    assert s["mean"]["mean"] == 4.0 and s["median"]["mean"] == 3.0
    assert s["min"]["mean"] == 1.0 and s["max"]["mean"] == 8.0
    assert s["std"]["mean"] == pytest.approx(math.sqrt(((1 - 4) ** 2 + (3 - 4) ** 2 + (8 - 4) ** 2) / 2))
    assert s["mean"]["focus_ratio"] == 2.0 and s["std"]["focus_ratio"] is None   # one value: no std
    assert s["mean"]["n"] == 3 and s["mean"]["id"] is None and s["mean"]["map"] == "m"


def test_summary_keeps_targets_of_another_kind_apart():
    """A predicted mask and all pixels share the label and index of the class, not the numbers."""
    rows = [{"id": i, "map": "m", "target": "blob", "target_index": 0, "target_kind": kind, "focus_ratio": v}
            for i, (kind, v) in enumerate([("mask", 40.0), ("all-pixels", 3.0), ("mask", 42.0), ("all-pixels", 5.0)])]
    means = {r["target_kind"]: r["focus_ratio"] for r in report.summarise(rows) if r["stat"] == "mean"}
    assert means == {"mask": 41.0, "all-pixels": 4.0}


def test_csv_and_json_lines_carry_the_same_numbers():
    rows = [{"id": "a", "x": 0.1 + 0.2, "y": None, "z": 1}, {"id": "b", "x": 1e-300, "w": 2.5}]
    table = list(csv.DictReader(io.StringIO(report.csv_text(rows))))
    assert list(table[0]) == ["id", "x", "y", "z", "w"]
    for r, c in zip(rows, table):
        j = json.loads(report.json_line(r))
        for k in c:
            assert (c[k] == "") == (j.get(k) is None)
            if isinstance(j.get(k), float):
                assert float(c[k]) == j[k]
