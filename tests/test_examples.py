"""Every script in examples/ runs end to end, on the built-in models or tiny test-made ones,
tiny images and few IG steps, and makes what its header promises."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import npz_members
from helpers_models import rgb_image, save_tiny_convnext, save_tiny_vit, write_png

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FAST = {"STEPS": "4", "DPI": "30", "SAMPLES": "2"}

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="the examples are bash scripts")


def run(script: str, *args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **FAST, **(env or {}),
                "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(["bash", str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _scans(folder: Path, count: int, crop: int | None = None, first_seed: int = 0) -> Path:
    """Demo scans, cropped to crop x crop (faster) from samples whose blob lies in the crop."""
    from xaicli.models.builtin.shapes import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    seed, made = first_seed, 0
    while made < count:
        img, mask, _ = make_sample(seed, "segmentation")
        seed += 1
        if crop and mask[4:crop - 4, 4:crop - 4].sum() < 30:
            continue
        write_png(folder / f"scan_{made}.png", img[:crop, :crop] if crop else img)
        made += 1
    return folder


def _rgb(folder: Path, count: int, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_png(folder / f"img_{i}.png", rgb_image(size, size, seed=i))
    return folder


def _tsv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines(), delimiter="\t"))


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _record(path: Path):
    from xaicli.io.record import Record

    return Record.from_bytes(path.read_bytes(), str(path))


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_every_example_is_strict_bash_and_tested():
    scripts = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".sh", ".sbatch") and p.name != "lib.sh")
    tested = {"ig_unetpp_baselines.sh", "cam_methods_layers.sh", "hf_convnext.sh", "ig_top3_hf.sh",
              "gray_cnn_ig.sh", "cron.sh", "timm_torchvision.sh", "slurm_array.sbatch"}  # the last in test_slurm.py
    assert set(scripts) == tested
    for name in scripts:
        text = (EXAMPLES / name).read_text()
        assert text.startswith("#!"), name
        assert "set -euo pipefail" in text, name
        assert os.access(EXAMPLES / name, os.X_OK), f"{name} is not executable"
        proc = subprocess.run(["bash", "-n", str(EXAMPLES / name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_1_ig_on_a_unetpp_with_four_baselines(tmp_path):
    out = tmp_path / "out"
    run("ig_unetpp_baselines.sh", "builtin:shapes-seg", _scans(tmp_path / "scans", 2, crop=64), out)
    focus = _tsv(out / "focus_by_baseline.tsv")
    assert [r["baseline"] for r in focus] == ["zero", "uniform", "blur", "mean"]
    assert all(float(r["focus_ratio"]) > 1 for r in focus)  # the blobs get the attribution
    rows = _csv(out / "batch.csv")
    per_record = [r for r in rows if not r["stat"]]
    assert len(per_record) == 2 * 4 and {r["id"] for r in per_record} == {"scan_0", "scan_1"}
    assert {r["stat"] for r in rows if r["stat"]} == {"mean", "std", "median", "min", "max"}
    rec = _record(out / "records" / "scan_0.npz")
    assert rec.map_keys() == [f"attr/integrated_gradients/{b}" for b in ("zero", "uniform", "blur", "mean")]
    assert _pngs(out / "panels") == ["scan_0__signed+overlay.png", "scan_1__signed+overlay.png"]


def test_2_cam_methods_at_five_layers(tmp_path):
    out = tmp_path / "out"
    run("cam_methods_layers.sh", "builtin:shapes-seg", _scans(tmp_path / "scans", 1, crop=64), out)
    layers = ["encoder_early", "encoder_mid", "encoder_last", "decoder_last", "seg_head"]
    methods = ["gradcam", "gradcam++", "scorecam", "layercam"]
    rec = _record(out / "records" / "scan_0.npz")
    assert sorted(rec.map_keys()) == sorted(f"cam/{m}/{la}" for m in methods for la in layers)
    stats = _tsv(out / "attention.tsv")
    assert sorted((r["method"], r["layer"]) for r in stats) == sorted((m, la) for m in methods for la in layers)
    assert all(r["mean"] and r["std"] for r in stats)
    figures = _pngs(out / "figures")
    assert "scan_0__grid.png" in figures
    for m in methods:
        for la in layers:
            assert f"scan_0__{m}__{la}__blob__overlay.png" in figures


def test_3_hf_convnext_checkpoint(tmp_path):
    model = save_tiny_convnext(tmp_path / "convnext")
    out = tmp_path / "out"
    run("hf_convnext.sh", model, _rgb(tmp_path / "imgs", 2), out)
    preds = [json.loads(s) for s in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["img_0", "img_1"]
    assert all(len(p["top3"]) == 3 and set(p["probabilities"]) == {"alpha", "beta", "gamma", "delta"} for p in preds)
    rec = _record(out / "records" / "img_0.npz")
    assert sorted(k.split("/")[1] for k in rec.map_keys()) == ["gradcam", "gradcam++", "layercam"]
    for key in rec.map_keys():  # every class has its map
        assert rec.arrays[key].shape == (4, 32, 32)
        assert [t["label"] for t in rec.map_info(key)["targets"]] == ["alpha", "beta", "gamma", "delta"]
    table = _csv(out / "table.csv")
    assert len(table) == 2 * 3 * 4
    assert _pngs(out / "figures") == ["img_0__grid.png", "img_1__grid.png"]


def test_4_ig_top3_on_vit_and_convnext(tmp_path):
    vit = save_tiny_vit(tmp_path / "vit")
    convnext = save_tiny_convnext(tmp_path / "convnext")
    out = tmp_path / "out"
    run("ig_top3_hf.sh", f"{vit},{convnext}/", _rgb(tmp_path / "imgs", 1), out)
    for name in ("vit", "convnext"):
        rec = _record(out / name / "records" / "img_0.npz")
        assert rec.map_keys() == [f"attr/integrated_gradients/{b}" for b in ("black", "white", "noise")]
        for key in rec.map_keys():
            assert rec.arrays[key].shape == (3, 3, 32, 32)                  # top 3 classes
            assert np.isfinite(rec.arrays[key]).all()
        overlays = _pngs(out / name / "overlays")
        assert len(overlays) == 3 * 3 and all(p.endswith("__overlay.png") for p in overlays)


def test_5_gray_cnn_with_a_uniform_baseline(tmp_path):
    out = tmp_path / "out"
    run("gray_cnn_ig.sh", "", _scans(tmp_path / "gray", 2, crop=32), out)  # "" : the script builds its CNN
    assert (out / "gray_cnn.pt").exists()
    rec = _record(out / "records" / "scan_0.npz")
    (key,) = rec.map_keys()
    assert key == "attr/integrated_gradients/uniform"
    assert rec.arrays[key].shape == (1, 1, 32, 32)                          # one target, one gray channel
    assert rec.map_info(key)["baseline_samples"] == 2
    assert _pngs(out / "signed") == ["scan_0__signed.png", "scan_1__signed.png"]
    model = (out / "gray_cnn.pt").read_bytes()
    run("gray_cnn_ig.sh", "", tmp_path / "gray", out)       # a rerun keeps the model its records name
    assert (out / "gray_cnn.pt").read_bytes() == model


def test_6_timm_folder_and_torchvision_state_dict_in_one_pipe(tmp_path):
    """The script's own models: a timm export folder and a torchvision state dict (with its --arch)."""
    import tarfile

    out = tmp_path / "out"
    run("timm_torchvision.sh", "", _rgb(tmp_path / "imgs", 2), out)
    for name, labels in (("timm_effnet", ["red", "green", "blue"]), ("resnet18", ["class_0", "class_1", "class_2"])):
        with tarfile.open(out / name / "records.tar") as t:
            recs = [_record_bytes(t.extractfile(m).read()) for m in npz_members(t)]
        assert sorted(r.id for r in recs) == ["img_0", "img_1"]
        for rec in recs:
            assert rec.map_keys() == ["attr/integrated_gradients/black", "cam/gradcam/last"]
            assert rec.meta["model"]["labels"] == labels
            pre = rec.meta["preprocessing"]
            assert pre["fit"] == "processor" and pre["crop"] is not None      # the library's own centre crop
        rows = _csv(out / name / "stats.csv")
        assert {r["map"] for r in rows} == {"attr/integrated_gradients/black", "cam/gradcam/last"}
        assert len(_pngs(out / name / "figures")) >= 2


def _record_bytes(data: bytes):
    from xaicli.io.record import Record

    return Record.from_bytes(data, "member.npz")


def _torchscript_segmenter(path: Path) -> Path:
    """A tiny one-class segmenter: loading it imports torch only, not smp (seconds per run)."""
    import warnings

    import torch
    from helpers_models import tiny_segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny_segmenter(classes=1)), str(path))
    return path


def test_cron_does_only_new_scans(tmp_path):
    inbox, out = _scans(tmp_path / "inbox", 2, crop=64), tmp_path / "out"
    model = _torchscript_segmenter(tmp_path / "seg.pt")
    # torch.jit.load's deprecation warning would land in cron.log
    env = {"XAI_ARGS": "--steps 2", "PYTHONWARNINGS": "ignore::FutureWarning"}
    run("cron.sh", model, inbox, out, env=env)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.npz")}
    assert sorted(first) == ["scan_0.npz", "scan_1.npz"]
    report_before = (out / "report" / "index.html").stat().st_mtime_ns
    _scans(tmp_path / "more", 1, crop=64, first_seed=50)
    shutil.copyfile(tmp_path / "more" / "scan_0.png", inbox / "scan_new.png")
    run("cron.sh", model, inbox, out, env=env)
    log = [line for line in (out / "cron.log").read_text().splitlines() if not line.startswith("xai: WARNING")]
    assert log[0].endswith("2 new record(s); 2 in total") and log[1].endswith("1 new record(s); 3 in total"), log
    after = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.npz")}
    assert {k: after[k] for k in first} == first                          # old records untouched
    assert len([r for r in _csv(out / "stats.csv")]) == 3
    assert len(_pngs(out / "figures")) == 3
    page = (out / "report" / "index.html").read_text()
    assert all(f'"id":"{i}"' in page for i in ("scan_0", "scan_1", "scan_new"))
    thumbs = {p.name: p.stat().st_mtime_ns for p in (out / "report" / "thumbs").glob("scan_0*.png")}
    assert len(thumbs) == 2 and all(t <= report_before for t in thumbs.values())   # drawn by the first run only


def test_cron_goes_on_past_a_scan_it_cannot_read_and_waits_on_an_empty_inbox(tmp_path):
    model = _torchscript_segmenter(tmp_path / "seg.pt")
    env = {"XAI_ARGS": "--steps 2", "PYTHONWARNINGS": "ignore::FutureWarning"}
    (tmp_path / "empty").mkdir()
    run("cron.sh", model, tmp_path / "empty", tmp_path / "eout", env=env)
    assert (tmp_path / "eout" / "cron.log").read_text().strip().endswith("holds no scans yet; nothing to do")
    inbox, out = _scans(tmp_path / "inbox", 2, crop=64), tmp_path / "out"
    whole = (inbox / "scan_1.png").read_bytes()
    (inbox / "scan_1.png").write_bytes(whole[:300])                  # still being copied
    run("cron.sh", model, inbox, out, env=env)
    log = (out / "cron.log").read_text()
    assert "skipped: " in log and "scan_1.png" in log and log.strip().endswith("1 new record(s); 1 in total")
    (inbox / "scan_1.png").write_bytes(whole)                         # the copy finished
    run("cron.sh", model, inbox, out, env=env)
    assert sorted(p.name for p in (out / "records").glob("*.npz")) == ["scan_0.npz", "scan_1.npz"]
    assert len(_pngs(out / "figures")) == 2
