"""Occlusion against Captum's `Occlusion` on the same score, window, stride and baseline, on a small
CNN, smp U-Net++ and a HF ConvNeXt; through the library and the CLI; its user errors; and
`--method all`, `stats --randomize` and `render` on its maps.

`tiny_models` and `captum_score` are shared with the other method tests (test_method_*.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from conftest import error_line
from helpers_models import stream_records
from test_integrated_gradients import save_tiny_convnext, save_tiny_unetpp

from xaicli.explain import attribute as engine
from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_models(root) -> dict:
    """name -> (adapter, image, targets): a small CNN (two classes), smp U-Net++ at 64x64 (its
    predicted region) and a HF ConvNeXt from a config (two classes)."""
    from helpers_models import tiny_classifier

    from xaicli.explain.targets import resolve_classification, resolve_segmentation
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.loader import load_model
    from xaicli.models.preprocess import Preprocessing

    rng = np.random.default_rng(0)
    cnn = tiny_classifier()
    for p in cnn.parameters():
        p.requires_grad_(False)
    cnn = ModelAdapter(LogitsModule(cnn), "classification", ["a", "b", "c"], Preprocessing(size=(24, 24)),
                       torch.device("cpu"))
    out = {}
    for name, ad, shape in (("cnn", cnn, (20, 28, 3)),
                            ("unetpp", load_model(str(save_tiny_unetpp(root / "unetpp")), device="cpu"), (64, 64, 3)),
                            ("convnext", load_model(str(save_tiny_convnext(root / "cnx")), device="cpu"),
                             (40, 48, 3))):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        with torch.no_grad():
            logits = ad.forward(ad.normalize(ad.image_to_unit(image)))
        if ad.task == "segmentation":
            prob = torch.sigmoid(ad.to_image_size(logits, shape[:2]))[0, 0]
            targets = resolve_segmentation(["predicted"], ad.labels, (prob > prob.median()).numpy().astype(np.uint8))
        else:
            targets = resolve_classification(["top2"], ad.labels, torch.softmax(logits, 1)[0].numpy())
        out[name] = (ad, image, targets)
    return out


def captum_score(ad, image, target):
    """S(u) = Σ W·logits(normalize(u)) per row of u, written out here (the function Captum explains)."""
    unit = ad.image_to_unit(image).contiguous()
    with torch.no_grad():
        out_hw = tuple(ad.forward(ad.normalize(unit)).shape[-2:]) if ad.task == "segmentation" else None
    w = target.weight(ad.num_classes, out_hw, tuple(image.shape[:2]))
    return unit, lambda u: (ad.forward(ad.normalize(u)) * w).flatten(1).sum(1)


def settled(**kw):
    from xaicli.explain.attribution import settle

    return settle({**registry.option_defaults("attribution"), **kw})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("occlusion"))


def captum_occlusion(ad, image, target, baseline, window, stride):
    from captum.attr import Occlusion

    unit, score = captum_score(ad, image, target)
    c = unit.shape[1]
    return Occlusion(score).attribute(unit, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                      baselines=baseline)[0].numpy()


@pytest.mark.parametrize("name,window,stride,baselines", [
    ("cnn", 5, 3, ["black", "blur"]),            # across 28 px the last window is cut at the border
    ("unetpp", 16, 8, ["blur"]),
    ("convnext", 12, 12, ["white"]),
])
def test_equals_captum_occlusion(models, name, window, stride, baselines):
    from xaicli.explain.baselines import parse_baselines

    ad, image, targets = models[name]
    method = registry.lookup("attribution", "occlusion")
    maps = engine.explain(ad, image, targets, [method], parse_baselines(baselines), settled(
        occlusion_window=window, occlusion_stride=stride, blur_sigma=2.0), key="r")
    for m, bname in zip(maps, baselines):
        assert m.key == f"attr/occlusion/{bname}" and m.values.shape == (len(targets), 3, *image.shape[:2])
        assert m.info["occlusion_window"] == window and m.info["occlusion_stride"] == stride
        base = _baseline(ad, image, bname)
        for t, target in enumerate(targets):
            ref = captum_occlusion(ad, image, target, base, window, stride)
            close(m.values[t], ref, m.info["f_x"][t])


def close(ours, ref, f_x):
    """Equal to 1e-5 of the larger of the map's largest value and |S(x)|: each value is a difference of
    scores, so float32 rounding of S (batched forwards round unlike Captum's one-by-one) bounds its error."""
    assert np.abs(ref).max() > 0
    assert np.abs(ours - ref).max() <= 1e-5 * max(np.abs(ref).max(), abs(f_x))


def _baseline(ad, image, name):
    from xaicli.explain.baselines import make_baselines, parse_baseline

    unit = ad.image_to_unit(image)
    return make_baselines(parse_baseline(name), unit, mean=ad.preprocessing.mean, blur_sigma=2.0,
                          to_unit=ad.image_to_unit)


def test_random_baseline_draws_are_averaged_and_defaults_follow_the_image(models):
    """--baseline noise --baseline-samples 2: the mean of Captum's maps over the two draws; no window
    given: 1/8 of the shorter side, stride half of it, stored in the meta."""
    from xaicli.explain.baselines import make_baselines, parse_baselines

    ad, image, targets = models["cnn"]
    (m,) = engine.explain(ad, image, targets[:1], [registry.lookup("attribution", "occlusion")],
                          parse_baselines(["noise"]), settled(baseline_samples=2, seed=3), key="img")
    assert (m.info["occlusion_window"], m.info["occlusion_stride"], m.info["baseline_samples"]) == (2, 1, 2)
    draws = make_baselines(parse_baselines(["noise"])[0], ad.image_to_unit(image), mean=ad.preprocessing.mean,
                           samples=2, seed=3, key="img", to_unit=ad.image_to_unit)
    ref = np.mean([captum_occlusion(ad, image, targets[0], draws[k:k + 1], 2, 1) for k in range(2)], axis=0)
    close(m.values[0], ref, m.info["f_x"][0])


def classifier_on_disk(root, shape=(40, 48, 3), seed=1):
    """A tiny HF ConvNeXt saved like a user's model, and a PNG: (model folder, image path, image)."""
    import imageio.v3 as iio

    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    iio.imwrite(root / "img.png", image)
    return str(save_tiny_convnext(root / "cnx")), str(root / "img.png"), image


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    return classifier_on_disk(tmp_path_factory.mktemp("occlusion_cli"))


def test_cli_all_includes_occlusion_equal_to_captum_and_stats_render_randomize_take_it(cli, classifier_files,
                                                                                       tmp_path):
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    model, png, image = classifier_files
    r = cli(["attribute", "-m", model, png, "-M", "all", "-n", "4", "--occlusion-window", "10",
             "--occlusion-stride", "6", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    arr, info = rec["attr/occlusion/black"], rec["meta"]["maps"]["attr/occlusion/black"]
    t = info["targets"][0]
    ad = load_model(model, device="cpu")
    ref = captum_occlusion(ad, image, Target("class", t["index"], t["label"]), 0.0, 10, 6)
    close(arr[0], ref, info["f_x"][0])

    (tmp_path / "rec.tar").write_bytes(cli(["attribute", "-m", model, png, "-M", "occlusion", "-B", "blur",
                                            "--device", "cpu"]).stdout)
    r = cli(["stats", "-m", model, "--randomize", "--rand-steps", "2", "-f", "csv", tmp_path / "rec.tar"])
    assert r.exit_code == 0, r.stderr
    (row,) = list(csv.DictReader(io.StringIO(r.output)))
    assert row["method"] == "occlusion" and row["rand_spearman_all"] != "" and row["rand_spearman_top"] != ""
    r = cli(["render", tmp_path / "rec.tar", "-o", tmp_path / "figs"])
    assert r.exit_code == 0 and r.output.strip().endswith(".png"), r.stderr


@pytest.mark.parametrize("args,code,words", [
    (["--occlusion-window", "4", "--occlusion-stride", "5"], 2, ["--occlusion-stride 5", "at most 4"]),
    (["--occlusion-window", "41"], 1, ["--occlusion-window 41", "40x48", "at most 40"]),
    (["--occlusion-window", "0"], 2, ["--occlusion-window"]),
])
def test_user_errors_are_one_line(cli, classifier_files, args, code, words):
    model, png, _ = classifier_files
    line = error_line(cli(["attribute", "-m", model, png, "-M", "occlusion", "--device", "cpu", *args]), code)
    assert all(w in line for w in words), line
