"""Recipro-CAM: a closed form on a pooled linear head, masked tokens on a ViT by hand, the
pointing game on the built-in models, the CLI, its option's errors and `stats --randomize`.

openvino-xai 1.1.0's ReciproCAM is the reference for the `point` kernel; it pins numpy < 2,
so it cannot share this environment: bench/check_reciprocam_openvino.py compares the two
in a venv of its own (measured: identical maps, CNN/point and ViT/gaussian).
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import error_line
from helpers_models import tiny_classifier, write_png
from test_cam_demo import peak_hits

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = float(np.finfo(np.float32).eps)
GAUSS = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16


@pytest.fixture(scope="module")
def classifier():
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    model = tiny_classifier()
    ad = ModelAdapter(LogitsModule(model), "classification", ["a", "b", "c"], Preprocessing(size=(24, 24)),
                      torch.device("cpu"))
    return model, ad, np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)


@pytest.mark.parametrize("kernel", ["gaussian", "point"])
def test_closed_form_on_a_pooled_linear_head(classifier, kernel):
    """conv -> ReLU -> global average pool -> linear: keeping only the mask M around (i, j) scores
    b + W·Σ M·ReLU(F) / (h·w), the empty layer b, so the map is ReLU(CAM ⊛ M) / (h·w) with
    CAM = W·ReLU(F) (Zhou et al.'s CAM), M the 3x3 Gaussian or the point."""
    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.layers import layer_table

    model, ad, image = classifier
    layers = layer_table(ad, (24, 24)).resolve(["conv"])
    targets = [Target("class", 0, "a"), Target("class", 2, "c")]
    (m,) = CamEngine(ad, layers, ["recipro-cam"], recipro_kernel=kernel).explain(image, targets)
    with torch.no_grad():
        feats = {}
        handle = model.conv.register_forward_hook(lambda mod, i, o: feats.setdefault("f", o))
        ad.net(ad.prepare(image))
        handle.remove()
        cam = torch.einsum("kc,chw->khw", model.fc.weight[[0, 2]], feats["f"][0].relu())
        if kernel == "gaussian":
            cam = F.conv2d(cam[:, None], GAUSS[None, None], padding=1)[:, 0]
        by_hand = torch.relu(cam / (24 * 24)).numpy()
    assert m.key == "cam/recipro-cam/conv" and m.info["recipro_kernel"] == kernel
    assert m.info["recipro"]["positions"] == 576
    np.testing.assert_allclose(m.info["recipro"]["empty_score"], model.fc.bias[[0, 2]].detach().numpy(), rtol=1e-6)
    # the map is a difference of two float32 scores ~1e3 x larger than it: equal to their rounding
    np.testing.assert_allclose(m.values, by_hand, rtol=0, atol=4 * EPS * np.abs(m.info["recipro"]["empty_score"]).max())
    assert (by_hand > 0).mean() > 0.2 and (by_hand == 0).any()        # both signs occurred before the ReLU


def test_vit_masks_the_patch_grid_and_keeps_the_cls_token(tmp_path):
    """On a ViT's `layernorm_before` the patch tokens are masked, the CLS token kept: the map at each
    patch equals that masked forward done by hand with a hook."""
    from helpers_models import save_tiny_vit

    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.layers import layer_table
    from xaicli.models.loader import load_model

    ad = load_model(str(save_tiny_vit(tmp_path / "vit")), device="cpu")
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (layer,) = layer_table(ad, (32, 32)).resolve(None)
    (m,) = CamEngine(ad, [layer], ["recipro-cam"], recipro_kernel="gaussian").explain(image, [Target("class", 1, "b")])
    x = ad.prepare(image)
    with torch.no_grad():
        raw = {}
        handle = layer.module.register_forward_hook(lambda mod, i, o: raw.setdefault("t", o))
        ad.net(x)
        handle.remove()
        tokens = raw["t"]                                   # (1, 1 + 16, D)

        def score(keep):                                    # keep: (4, 4) weights of the patch tokens
            t = tokens.clone()
            t[0, 1:] *= keep.reshape(16, 1)
            h = layer.module.register_forward_hook(lambda mod, i, o: t)
            try:
                return float(ad.net(x)[0, 1])
            finally:
                h.remove()

        empty = score(torch.zeros(4, 4))
        by_hand = np.zeros((4, 4), np.float32)
        for i in range(4):
            for j in range(4):
                keep = F.pad(torch.zeros(4, 4), (1, 1, 1, 1))
                keep[i:i + 3, j:j + 3] = GAUSS
                by_hand[i, j] = max(score(keep[1:-1, 1:-1]) - empty, 0.0)
    assert m.info["recipro"]["empty_score"][0] == pytest.approx(empty, abs=1e-5)
    up = F.interpolate(torch.from_numpy(by_hand)[None, None], size=(32, 32), mode="bilinear", align_corners=False)
    # a wrong token layout moves whole patches; batched and single attention kernels differ in the last bits
    assert by_hand.max() > 0 and (by_hand == 0).any()
    np.testing.assert_allclose(m.values[0], up[0, 0].numpy(), rtol=0, atol=1e-3 * by_hand.max())


def test_pointing_game_on_the_builtin_classifier():
    """20 fresh demo images, default layer and target: the peak lies in the object (bench/check_reciprocam.py: 100)."""
    hits = peak_hits("builtin:shapes-cls", "classification", None, "recipro-cam", range(5000, 5020))
    assert np.mean(hits) >= 0.95, f"{sum(hits)}/{len(hits)}"


def test_pointing_game_on_the_builtin_segmenter():
    """One forward per position: encoder_mid (24x24, stride 4) costs 577 segmenter passes an image, so one here
    and 100 in bench/check_reciprocam.py. (encoder_last, stride 8, is too coarse for blobs of radius 5.)"""
    hits = peak_hits("builtin:shapes-seg", "segmentation", "encoder_mid", "recipro-cam", range(5000, 5001))
    assert all(hits), hits


@pytest.fixture(scope="module")
def cls_png(tmp_path_factory):
    from xaicli.models.builtin.shapes import make_sample

    img, _, _ = make_sample(3, "classification")
    return write_png(tmp_path_factory.mktemp("recipro") / "obj.png", img)


def test_cli_map_and_randomize_row(cli, cls_png):
    from xaicli.io.record import Record

    m = ["-m", "builtin:shapes-cls", "--device", "cpu"]
    r = cli(["cam", *m, "-M", "recipro-cam", "--recipro-kernel", "point", "-o", "-", str(cls_png)])
    assert r.exit_code == 0, r.stderr
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        (rec,) = [Record.from_bytes(tar.extractfile(t).read(), t.name) for t in tar if t.name.endswith(".npz")]
    arr, info = rec.arrays["cam/recipro-cam/last"], rec.map_info("cam/recipro-cam/last")
    assert arr.shape == (1, 64, 64) and arr.max() > 0 and info["recipro_kernel"] == "point"
    assert info["reference"] == "openvino_xai.methods.ReciproCAM" and info["recipro"]["positions"] == 64
    s = cli(["stats", *m, "--randomize", "--rand-steps", "2", "--steps", "2", "-f", "csv"], input=r.stdout)
    assert s.exit_code == 0, s.stderr
    (row,) = list(csv.DictReader(io.StringIO(s.output)))
    assert row["method"] == "recipro-cam" and row["rand_spearman_all"] != ""


def test_unknown_kernel_is_a_usage_error(cli, cls_png):
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", "-M", "recipro-cam", "--recipro-kernel", "box",
                           str(cls_png)]), 2)
    assert "--recipro-kernel 'box'" in line and "gaussian, point" in line
