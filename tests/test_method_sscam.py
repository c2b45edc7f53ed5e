"""SS-CAM against torchcam 0.5's SSCAM on the same model, layer, target and seed (a CNN, an smp
U-Net++ with a region target, a ViT's token grid), through the CLI, its options' errors and
`stats --randomize`. The helpers here serve IS-CAM's test too."""

from __future__ import annotations

import contextlib
import csv
import io
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import error_line
from helpers_models import save_tiny_vit, tiny_classifier, write_png

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (adapter, image, layer name): a CNN at 24², a U-Net++ (tu-resnet10t, depth 3) at 64², a ViT at 32²
    (its block's output: on `last`, a layernorm, near-uniform weights make the channel sum cancel to ~0)."""
    import segmentation_models_pytorch as smp

    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.loader import LoadOptions, load_model
    from xaicli.models.preprocess import Preprocessing

    rng = np.random.default_rng(0)
    cnn = ModelAdapter(LogitsModule(tiny_classifier()), "classification", ["a", "b", "c"],
                       Preprocessing(size=(24, 24)), torch.device("cpu"))
    folder = tmp_path_factory.mktemp("unetpp")
    torch.manual_seed(0)
    net = smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_weights=None, encoder_depth=3,
                           decoder_channels=(32, 16, 8), classes=2)
    with contextlib.redirect_stdout(None):
        net.eval().save_pretrained(folder)
    seg = load_model(str(folder), LoadOptions(size=(64, 64)), "cpu")
    scan = (rng.random((64, 64, 3)) * 120).astype(np.uint8)
    scan[16:40, 20:44] = 230
    vit = load_model(str(save_tiny_vit(tmp_path_factory.mktemp("vit") / "vit")), device="cpu")
    return {"cnn": (cnn, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "conv"),
            "unetpp": (seg, scan, "decoder_last"),
            "vit": (vit, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "vit.layers.0")}


def targets_of(ad, image):
    """Two classes of a classifier; the predicted region of class 1 and of class 0 on a segmenter."""
    from xaicli.explain.targets import Target

    if ad.task == "classification":
        return [Target("class", 0, ad.labels[0]), Target("class", 2, ad.labels[2])]
    with torch.no_grad():
        logits = ad.net(ad.prepare(image))[0]
    return [Target("region", c, ad.labels[c], mask=(logits.argmax(0) == c).numpy().astype(np.uint8))
            for c in (1, 0)]


def minmax(m):
    m = np.asarray(m, np.float64)
    lo, hi = m.min(axis=(-2, -1), keepdims=True), m.max(axis=(-2, -1), keepdims=True)
    return (m - lo) / np.where(hi > lo, hi - lo, 1)


def compare_with_torchcam(models, name, method, reference, options, **ref_kw):
    """Our maps and torchcam's (each target from a fresh torch.manual_seed(0), the engine's seed),
    min-max scaled at the model's input size; returns the largest difference."""
    from xaicli.explain.cam import CamEngine, TargetScore
    from xaicli.models.layers import layer_table

    ad, image, lname = models[name]
    hw = tuple(image.shape[:2])
    (layer,) = layer_table(ad, hw).resolve([lname])
    targets = targets_of(ad, image)
    (ours,) = CamEngine(ad, [layer], [method], batch_size=7, **options).explain(image, targets)   # torchcam's chunks
    x = ad.prepare(image)
    theirs = []
    with reference(ad.net, layer.module, reshape_transform=layer.reshape_transform(hw), **ref_kw) as extractor:
        with torch.no_grad():
            ad.net(x)
        for t in targets:
            score = TargetScore(t.weight(ad.num_classes, hw if ad.task == "segmentation" else None,
                                         hw if ad.task == "segmentation" else None, ad.device))
            torch.manual_seed(0)
            cam = extractor(targets=score, normalized=False)[0]
            theirs.append(F.interpolate(cam[None], size=hw, mode="bilinear", align_corners=False)[0, 0].numpy())
    assert ours.values.shape == (len(targets), *hw) and ours.values.max() > 0
    return float(np.abs(minmax(ours.values) - minmax(np.stack(theirs))).max()), ours


@pytest.mark.parametrize("name,samples", [("cnn", 35), ("unetpp", 3), ("vit", 5)])
def test_equals_torchcam(models, name, samples):
    from torchcam.methods import SSCAM

    err, ours = compare_with_torchcam(models, name, "sscam", SSCAM, {"sscam_samples": samples, "sscam_std": 0.5},
                                      num_samples=samples, std=0.5, batch_size=7)
    assert err <= TOL, err
    assert ours.info["sscam_samples"] == samples and ours.info["sscam"] == {"samples": samples, "seed": 0}


def test_the_noise_matters(models):
    """Another std gives another map (the draws reach the weights), the same std the same map."""
    from xaicli.explain.cam import CamEngine
    from xaicli.models.layers import layer_table

    ad, image, lname = models["cnn"]
    layers = layer_table(ad, (24, 24)).resolve([lname])
    t = targets_of(ad, image)
    run = lambda std: CamEngine(ad, layers, ["sscam"], sscam_std=std).explain(image, t)[0].values  # noqa: E731
    a, b = run(0.3), run(3.0)
    np.testing.assert_array_equal(a, run(0.3))
    assert np.abs(minmax(a) - minmax(b)).max() > 1e-3


@pytest.fixture(scope="module")
def cls_png(tmp_path_factory):
    from xaicli.models.builtin.shapes import make_sample

    return write_png(tmp_path_factory.mktemp("sscam") / "obj.png", make_sample(3, "classification")[0])


def cli_map_and_randomize(cli, png, method: str, *flags: str):
    """`xai cam -M method` on the built-in classifier, then `stats --randomize`: (array, meta, stats row)."""
    from xaicli.io.record import Record

    m = ["-m", "builtin:shapes-cls", "--device", "cpu"]
    r = cli(["cam", *m, "-M", method, *flags, "-o", "-", str(png)])
    assert r.exit_code == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        (rec,) = [Record.from_bytes(tar.extractfile(t).read(), t.name) for t in tar if t.name.endswith(".npz")]
    key = f"cam/{method}/last"
    s = cli(["stats", *m, "--randomize", "--rand-steps", "2", "--steps", "2", "-f", "csv"], input=r.stdout)
    assert s.exit_code == 0, s.stderr
    (row,) = list(csv.DictReader(io.StringIO(s.output)))
    assert row["method"] == method and row["rand_spearman_all"] != ""
    return rec.arrays[key], rec.map_info(key), row


def test_cli_and_randomize(cli, cls_png):
    arr, info, _ = cli_map_and_randomize(cli, cls_png, "sscam", "--sscam-samples", "2", "--sscam-std", "1.5")
    assert arr.shape == (1, 64, 64) and arr.max() > 0
    assert info["sscam_samples"] == 2 and info["sscam_std"] == 1.5 and info["reference"] == "torchcam.methods.SSCAM"


@pytest.mark.parametrize("flags,words", [(["--sscam-samples", "0"], "--sscam-samples"),
                                         (["--sscam-std", "-1"], "--sscam-std")])
def test_bad_options_are_usage_errors(cli, cls_png, flags, words):
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", "-M", "sscam", *flags, str(cls_png)]), 2)
    assert words in line
