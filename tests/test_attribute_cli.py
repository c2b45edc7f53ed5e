"""`xai attribute` end to end through the real entry point: records, reuse of predictions,
maps equal to Captum on the same function, options, and one-line user errors."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from test_integrated_gradients import save_tiny_convnext, save_tiny_unetpp
from conftest import no_record_out, npz_members


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import imageio.v3 as iio

    root = tmp_path_factory.mktemp("attr_cli")
    rng = np.random.default_rng(0)
    seg_img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)     # not a multiple of 32: resized for smp
    cls_img = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    iio.imwrite(root / "seg.png", seg_img)
    iio.imwrite(root / "cls.png", cls_img)
    region = np.zeros((50, 70), np.uint8)
    region[10:30, 20:50] = 255
    iio.imwrite(root / "region.png", region)
    iio.imwrite(root / "small.png", region[:20])
    return {"root": root, "seg": str(save_tiny_unetpp(root / "unetpp")), "cls": str(save_tiny_convnext(root / "cnx")),
            "seg_img": seg_img, "cls_img": cls_img, "seg_png": str(root / "seg.png"), "cls_png": str(root / "cls.png"),
            "region": str(root / "region.png"), "small": str(root / "small.png")}


def records(stdout: bytes):
    from xaicli.io.record import Record

    out = []
    with tarfile.open(fileobj=io.BytesIO(stdout)) as t:
        for m in npz_members(t):
            out.append(Record.from_bytes(t.extractfile(m).read(), m.name))
    return out


def ok(result):
    assert result.exit_code == 0, result.stderr
    return records(result.stdout)


def error_line(result, code=None):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xai: error:"), result.stderr
    assert "Traceback" not in result.stderr
    no_record_out(result.stdout, lines[0])
    assert result.exit_code in ((1, 2) if code is None else (code,))
    return lines[0]


def captum_map(spec, image, weight, steps):
    """Captum IG on S(u) = Σ W·logits(normalize(u)) for the image's unit pixels, black baseline."""
    from captum.attr import IntegratedGradients

    from xaicli.models.loader import load_model

    ad = load_model(spec, device="cpu")
    u = ad.image_to_unit(image).contiguous()
    w = torch.as_tensor(weight)

    def score(x):
        return (ad.forward(ad.normalize(x)) * w).flatten(1).sum(1)

    return IntegratedGradients(score).attribute(u, torch.zeros_like(u), n_steps=steps)[0].numpy()


def test_segmentation_images_to_records_equal_captum(cli, files):
    from xaicli.explain.targets import Target

    (rec,) = ok(cli(["attribute", "-m", files["seg"], files["seg_png"], "--steps", "12"]))
    arr = rec.arrays["attr/integrated_gradients/black"]
    assert arr.dtype == np.float32 and arr.shape == (1, 3, 50, 70)            # (T, C, H, W) at image size
    info = rec.meta["maps"]["attr/integrated_gradients/black"]
    assert info["kind"] == "attribution" and info["method"] == "integrated_gradients" and info["layer"] is None
    assert info["baseline"] == "black" and info["steps"] == 12 and info["quadrature"] == "gausslegendre"
    assert info["tolerance"] is None and info["converged"] is None and info["steps_evaluated"] == 12   # fixed
    assert info["targets"][0]["kind"] == "mask" and info["targets"][0]["region"] == "predicted"
    assert len(info["delta"]) == len(info["relative_delta"]) == len(info["f_x"]) == len(info["f_baseline"]) == 1
    assert [h["command"] for h in rec.meta["history"]] == ["attribute"]
    assert "pred/mask" in rec.arrays and "prediction" in rec.meta                 # predicted here
    # the same map from Captum, on the target built from the record's own predicted mask
    mask = rec.arrays["pred/mask"].astype(bool)
    weight = Target("mask", 0, "foreground", mask).weight(1, (64, 64), (50, 70))
    ref = captum_map(files["seg"], files["seg_img"], weight, 12)
    assert np.abs(arr[0] - ref).max() <= 1e-4 * np.abs(ref).max()
    # the stored delta is the completeness gap of the stored map
    assert info["delta"][0] == pytest.approx(float(arr.astype(np.float64).sum()) - (info["f_x"][0] - info["f_baseline"][0]),
                                             abs=1e-4 * abs(info["f_x"][0] - info["f_baseline"][0]) + 1e-6)


def test_records_from_predict_reuse_the_prediction(cli, files):
    pred = cli(["predict", "-m", files["cls"], files["cls_png"]])
    assert pred.exit_code == 0, pred.stderr
    (before,) = records(pred.stdout)
    (rec,) = ok(cli(["attribute", "--target", "top2", "-M", "ig", "-M", "saliency", "--steps", "8"], input=pred.stdout))
    assert [h["command"] for h in rec.meta["history"]] == ["predict", "attribute"]
    np.testing.assert_array_equal(rec.arrays["pred/probs"], before.arrays["pred/probs"])
    ig = rec.arrays["attr/integrated_gradients/black"]
    assert ig.shape == (2, 3, 40, 36)
    order = np.argsort(-before.arrays["pred/probs"])[:2]
    info = rec.meta["maps"]["attr/integrated_gradients/black"]
    assert [t["index"] for t in info["targets"]] == [int(i) for i in order]
    ref = captum_map(files["cls"], files["cls_img"], np.eye(3, dtype=np.float32)[order[1]], 8)
    assert np.abs(ig[1] - ref).max() <= 1e-4 * np.abs(ref).max()
    sal = rec.meta["maps"]["attr/saliency/none"]
    assert sal["baseline"] is None and sal["steps"] is None and rec.arrays["attr/saliency/none"].min() >= 0


def test_several_baselines_and_seeded_noise(cli, files):
    # -b fixes the chunk: bit-identical reruns (a tuned chunk may differ between runs, and
    # batched kernels round differently at other batch sizes); on CUDA -b also asks for
    # deterministic kernels (run there with XAI_TEST_CUDA=1)
    args = ["attribute", "-m", files["cls"], files["cls_png"], "-B", "black", "-B", "zero", "-B", "noise",
            "-B", "blur", "--baseline-samples", "2", "--steps", "4", "-b", "4"]
    (a,) = ok(cli(args))
    (b,) = ok(cli(args))
    (c,) = ok(cli(args + ["--seed", "7"]))
    for key in ("black", "zero", "noise", "blur"):
        assert f"attr/integrated_gradients/{key}" in a.arrays
    noise = "attr/integrated_gradients/noise"
    np.testing.assert_array_equal(a.arrays[noise], b.arrays[noise])
    assert not np.array_equal(a.arrays[noise], c.arrays[noise])
    assert a.meta["maps"][noise]["baseline_samples"] == 2 and a.meta["maps"][noise]["seed"] == 0
    assert a.meta["maps"]["attr/integrated_gradients/zero"]["baseline_samples"] == 1
    assert a.meta["maps"]["attr/integrated_gradients/blur"]["blur_sigma"] == pytest.approx(36 / 16)


def test_tolerance_is_met_and_recorded(cli, files):
    (rec,) = ok(cli(["attribute", "-m", files["seg"], files["seg_png"], "--tolerance", "0.005", "-t", "all-pixels"]))
    info = rec.meta["maps"]["attr/integrated_gradients/black"]
    assert info["tolerance"] == 0.005 and info["converged"] == [True]
    assert info["relative_delta"][0] <= 0.005 and info["target_steps"][0] >= 16
    arr = rec.arrays["attr/integrated_gradients/black"].astype(np.float64)
    gap = info["f_x"][0] - info["f_baseline"][0]
    assert abs(arr.sum() - gap) <= 0.005 * abs(gap) * 1.001


def test_target_mask_region(cli, files):
    (rec,) = ok(cli(["attribute", "-m", files["seg"], files["seg_png"], "--target-mask", files["region"],
                     "--steps", "4", "-o", "-"]))
    t = rec.meta["maps"]["attr/integrated_gradients/black"]["targets"]
    assert t[0]["kind"] == "region" and t[0]["mask_pixels"] == 20 * 30 and t[0]["region"] == "region.png"


@pytest.fixture(scope="module")
def bad_records(files, tmp_path_factory):
    from conftest import invoke

    root = tmp_path_factory.mktemp("bad")
    no_image = invoke(["predict", "-m", files["cls"], files["cls_png"], "--no-image"])
    other = invoke(["predict", "-m", files["seg"], files["seg_png"]])
    (root / "noimg.tar").write_bytes(no_image.stdout)
    (root / "other.tar").write_bytes(other.stdout)
    return root


@pytest.mark.parametrize("case,args", [
    ("bad baseline name", ["-B", "grey"]),
    ("missing baseline file", ["-B", "nowhere/base.png"]),
    ("bad target", ["-t", "top0"]),
    ("unknown label", ["-t", "zebra"]),
    ("bad quadrature", ["--quadrature", "simpson"]),
    ("bad method", ["-M", "lime"]),
    ("target mask on a classifier", ["--target-mask", "REGION"]),
])
def test_usage_errors_on_a_classifier(cli, files, case, args):
    args = [files["region"] if a == "REGION" else a for a in args]
    line = error_line(cli(["attribute", "-m", files["cls"], files["cls_png"], *args]), 2)
    assert args[-1].split("/")[0] in line or case in ("target mask on a classifier",)


def test_target_mask_size_mismatch(cli, files):
    line = error_line(cli(["attribute", "-m", files["seg"], files["seg_png"], "--target-mask", files["small"]]))
    assert "differs" in line


def test_segmenter_rejects_classifier_targets(cli, files):
    error_line(cli(["attribute", "-m", files["seg"], files["seg_png"], "-t", "top1"]), 2)


def test_record_without_image(cli, files, bad_records):
    line = error_line(cli(["attribute", str(bad_records / "noimg.tar")]), 1)
    assert "no image" in line


def test_record_from_another_model(cli, files, bad_records):
    line = error_line(cli(["attribute", "-m", files["cls"], str(bad_records / "other.tar")]), 1)
    assert "another model" in line


def test_help_lists_the_options(cli):
    r = cli(["attribute", "--help"])
    assert r.exit_code == 0
    for opt in ("--baseline", "--quadrature", "--tolerance", "--target-mask", "--baseline-samples", "--noise-std"):
        assert opt in r.output


# -- the demo classifier (64x64 RGB): baseline files, --max-steps, --blur-sigma ---------------

CLS = "builtin:shapes-cls"


@pytest.fixture(scope="module")
def demo_png(tmp_path_factory):
    from helpers_models import write_png

    from xaicli.models.builtin.shapes import make_sample

    img, _, _ = make_sample(3, "classification")
    assert img.shape == (64, 64, 3)
    return str(write_png(tmp_path_factory.mktemp("attr_demo") / "obj.png", img)), img


def map_info(rec, key):
    return rec.arrays[key], rec.meta["maps"][key]


@pytest.mark.usefixtures("one_thread")
def test_baseline_files_sharing_a_stem_are_one_map_each(cli, demo_png, tmp_path, monkeypatch):
    """ba/x.npy and bb/x.npy were one map `file-x` (the second dropped): now each has its own key,
    the stem plus 8 hex of sha1(absolute path), and its own baseline (zeros = black, ones = white)."""
    import hashlib
    import os

    monkeypatch.chdir(tmp_path)
    for d, value in (("ba", 0.0), ("bb", 1.0)):
        (tmp_path / d).mkdir()
        np.save(f"{d}/x.npy", np.full((64, 64, 3), value, np.float32))
    (rec,) = ok(cli(["attribute", "-m", CLS, demo_png[0], "--steps", "4", "-b", "4", "-B", "ba/x.npy",
                     "-B", "bb/x.npy", "-B", "black", "-B", "white", "-B", "./ba/x.npy"]))
    key = {d: "attr/integrated_gradients/file-x-"
              + hashlib.sha1(os.path.join(os.getcwd(), d, "x.npy").encode()).hexdigest()[:8] for d in ("ba", "bb")}
    assert sorted(k for k in rec.arrays if k.startswith("attr/")) == sorted(
        [key["ba"], key["bb"], "attr/integrated_gradients/black", "attr/integrated_gradients/white"])
    for d, same in (("ba", "black"), ("bb", "white")):
        arr, info = map_info(rec, key[d])
        ref, ref_info = map_info(rec, f"attr/integrated_gradients/{same}")
        assert info["baseline"] == "file" and info["baseline_path"] == f"{d}/x.npy"
        assert np.abs(arr - ref).max() <= 1e-6 * np.abs(ref).max()
        assert info["f_baseline"][0] == pytest.approx(ref_info["f_baseline"][0], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name,array,words", [
    ("int64_255", np.full((64, 64, 3), 255), ["int64 integers", "uint8 (0-255)"]),   # was read as 16-bit: black
    ("int64_m1", np.full((64, 64, 3), -1), ["int64 integers", "uint16 (0-65535)"]),  # wrapped to white
    ("nan", np.full((64, 64, 3), np.nan, np.float32), ["12288 of 12288 values are NaN or infinite"]),
    ("inf", np.where(np.eye(64)[..., None], np.inf, 0.5).repeat(3, 2), ["192 of 12288 values are NaN"]),
    ("twos", np.full((64, 64, 3), 2.0, np.float32), ["span [2, 2]", "outside [0, 1]"]),
])
def test_baseline_npy_of_unknown_scale_or_non_finite_is_refused(cli, demo_png, tmp_path, name, array, words):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    line = error_line(cli(["attribute", "-m", CLS, demo_png[0], "--steps", "2", "-B", str(path)]), 2)
    assert str(path) in line
    for w in words:
        assert w in line, line


BASELINES = ("black", "zero", "white", "mean", "blur", "noise", "uniform")


@pytest.mark.usefixtures("one_thread")
# The segmenter takes black and blur only: its 7 maps took 60 s (black alone 351 points), the classifier covers all 7.
@pytest.mark.parametrize("spec,task,count,baselines", [(CLS, "classification", 3, BASELINES),
                                                       ("builtin:shapes-seg", "segmentation", 1, ("black", "blur"))])
def test_default_run_meets_one_percent_completeness(cli, tmp_path, spec, task, count, baselines):
    """No --steps, no --tolerance: per target, the adaptive quadrature refines until |Σ map − (S(x) − S(x'))|
    ≤ 1% of |S(x) − S(x')| and its estimated map error ≤ 1% (or the target says converged: false). Checked
    on the stored map itself, with S(x) from the record's own logits and, for the black baseline, S(x')
    from a forward of the model."""
    from xaicli.models.builtin.shapes import write_samples
    from xaicli.models.loader import load_model

    paths = write_samples(tmp_path, count, task)
    args = ["attribute", "-m", spec, *map(str, paths), "-t", "top2" if task == "classification" else "predicted"]
    res = cli(args + [a for b in baselines for a in ("-B", b)])
    ad = load_model(spec, device="cpu")
    for rec in ok(res):
        assert rec.meta["history"][-1]["parameters"]["tolerance"] == 0.01
        logits = rec.arrays["pred/logits"].astype(np.float64)
        for b in baselines:
            arr, info = map_info(rec, f"attr/integrated_gradients/{b}")
            assert info["tolerance"] == 0.01 and info["accuracy"] == 0.01 and info["quadrature"] == "adaptive"
            assert min(info["target_steps"]) >= 9 and info["steps"] <= 512
            for t, target in enumerate(info["targets"]):
                gap = info["f_x"][t] - info["f_baseline"][t]
                rel = abs(arr[t].astype(np.float64).sum() - gap) / abs(gap)
                assert rel == pytest.approx(info["relative_delta"][t], rel=1e-3, abs=1e-6)
                assert info["converged"][t] == (rel <= 0.01 and info["estimated_error"][t] <= 0.01)
                assert rel <= 0.01 or "did not reach --tolerance 0.01" in res.stderr
                if task == "classification":
                    assert info["f_x"][t] == pytest.approx(logits[target["index"]], rel=1e-5, abs=1e-5)
            if b == "black" and task == "classification":
                with torch.no_grad():
                    f0 = ad.forward(ad.normalize(torch.zeros(1, 3, 64, 64)))[0].double().numpy()
                assert info["f_baseline"] == pytest.approx([f0[t["index"]] for t in info["targets"]], abs=1e-4)
    assert "relative delta" not in res.stderr or "did not reach" in res.stderr


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("args,steps,evaluated", [
    (["--max-steps", "8", "--quadrature", "gl"], 8, 8),  # the first try (16) starts at the cap
    (["--max-steps", "12", "--steps", "4"], 12, 4 + 8 + 12),
    (["--max-steps", "4", "--steps", "4"], 4, 4),
])
def test_max_steps_caps_every_map(cli, demo_png, args, steps, evaluated):
    """A tolerance no float32 map meets: the steps run to --max-steps and never beyond (16 were run)."""
    res = cli(["attribute", "-m", CLS, demo_png[0], "--tolerance", "1e-12", "-B", "black", "-B", "white", *args])
    for rec in ok(res):
        for key in ("attr/integrated_gradients/black", "attr/integrated_gradients/white"):
            info = rec.meta["maps"][key]
            assert info["steps"] == steps and info["target_steps"] == [steps] and info["converged"] == [False]
            assert info["steps_evaluated"] == evaluated
        assert rec.meta["history"][-1]["parameters"]["steps"] == (8 if args[1] == "8" else 4)
    assert f"within --max-steps {args[1]}" in res.stderr


@pytest.mark.usefixtures("one_thread")
def test_default_run_reports_the_cap_per_target(cli, demo_png):
    """--max-steps alone caps the default adaptive run (9 points: its first cut); each target says
    whether it met 1% (completeness and estimated map error)."""
    res = cli(["attribute", "-m", CLS, demo_png[0], "-t", "all", "--max-steps", "9", "-B", "noise"])
    (rec,) = ok(res)
    info = rec.meta["maps"]["attr/integrated_gradients/noise"]
    assert info["tolerance"] == 0.01 and max(info["target_steps"]) == 9 and len(info["converged"]) == 3
    assert info["converged"] == [r <= 0.01 and e <= 0.01 for r, e in zip(info["relative_delta"],
                                                                         info["estimated_error"])]
    assert not all(info["converged"])
    assert "did not reach --tolerance 0.01 and --accuracy 0.01 within --max-steps 9" in res.stderr


@pytest.mark.parametrize("args,words", [
    (["--steps", "4", "--tolerance", "0.01", "--max-steps", "3"], ["--steps 4 exceeds --max-steps 3"]),
    (["--tolerance", "0.1", "--max-steps", "1", "--quadrature", "riemann-trapezoid"],
     ["--max-steps 1", "at least 2"]),
    (["--tolerance", "inf"], ["--tolerance inf", "finite"]),
    (["--quadrature", "adaptive", "--steps", "8"], ["--steps 8 with --quadrature adaptive", "--max-steps"]),
    (["--max-steps", "8"], ["--max-steps 8", "9 points"]),
    (["--accuracy", "nan"], ["--accuracy", "greater than or equal to 0"]),
    (["-B", "blur", "--blur-sigma", "inf"], ["--blur-sigma inf", "finite"]),      # was an internal OverflowError
    (["-B", "blur", "--blur-sigma", "nan"], ["--blur-sigma nan", "finite"]),
    (["-B", "blur", "--blur-sigma", "0"], ["--blur-sigma 0:", "unchanged"]),     # was an all-zero map, exit 0
    (["-B", "blur", "--blur-sigma", "0.16"], ["--blur-sigma 0.16:", "at least"]),  # radius round(0.48) = 0
    (["-B", "blur", "--blur-sigma", "-1"], ["--blur-sigma -1:"]),
    (["-B", "noise", "--noise-std", "inf"], ["--noise-std inf", "finite"]),
])
def test_option_values_refused_before_any_work(cli, demo_png, args, words):
    line = error_line(cli(["attribute", "-m", CLS, demo_png[0], *args]), 2)
    for w in words:
        assert w in line, line


@pytest.mark.usefixtures("one_thread")
def test_blur_far_wider_than_the_image_is_its_corner_mean(cli, demo_png, tmp_path):
    """As sigma grows, a replicated-edge blur tends to the mean of the image's four corners (per
    channel): sigma 1e12 (6e12 taps before) is that constant image, given here as a float .npy."""
    path, img = demo_png
    unit = img.astype(np.float64) / 255
    corners = unit[[0, 0, -1, -1], [0, -1, 0, -1]].mean(0)                   # (3,)
    np.save(tmp_path / "corners.npy", np.broadcast_to(corners, (64, 64, 3)).astype(np.float32))
    (rec,) = ok(cli(["attribute", "-m", CLS, path, "--steps", "4", "-b", "4", "-B", "blur", "--blur-sigma", "1e12",
                     "-B", str(tmp_path / "corners.npy")]))
    blur, info = map_info(rec, "attr/integrated_gradients/blur")
    ref, ref_info = map_info(rec, "attr/integrated_gradients/file-corners")
    assert info["blur_sigma"] == 1e12
    assert np.abs(blur - ref).max() <= 1e-4 * np.abs(ref).max()
    assert info["f_baseline"][0] == pytest.approx(ref_info["f_baseline"][0], rel=1e-5, abs=1e-5)
