"""`blur-ig`: equal to PAIR's `saliency.core.BlurIG` on the same model, blur equal to scipy's, completeness stored."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from scipy import ndimage

from test_method_lrp import adapter, small_cnn, unetpp_region_case, unit
from xaicli.explain import registry
from xaicli.explain.attribute import explain
from xaicli.explain.attribution import settle
from xaicli.explain.targets import Target

pytestmark = pytest.mark.usefixtures("one_thread")


def pair_call(ad, weight):
    """PAIR's call_model_function over our model: (n, H, W, C) float64 → dS/dx, S = Σ weight·logits."""
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    def call(batch, call_model_args=None, expected_keys=None):
        xt = torch.from_numpy(np.asarray(batch)).permute(0, 3, 1, 2).float().contiguous().requires_grad_(True)
        (g,) = torch.autograd.grad((ad.forward(ad.normalize(xt)) * weight).sum(), xt)
        return {INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}
    return call


def blur_ig(ad, image, targets, **options):
    opts = settle({**registry.option_defaults("attribution"), **options})
    (m,) = explain(ad, image, targets, [registry.lookup("attribution", "blur-ig")], [], opts, key="r")
    assert m.key == "attr/blur_ig/none"
    return m


def pair_blur_ig(ad, image, weight, **kw):
    from saliency.core import BlurIG

    x = unit(image)[0].permute(1, 2, 0).double().numpy()
    return BlurIG().GetMask(x, pair_call(ad, weight), **kw).transpose(2, 0, 1)


@pytest.mark.parametrize("sigma", [0.3, 2.5, 7.0, 50.0])
def test_blur_is_scipys_gaussian_filter_with_zeros_outside(sigma):
    from xaicli.explain.attribution.blur_ig import blur

    x = torch.rand(1, 3, 17, 23, dtype=torch.float64)
    ref = ndimage.gaussian_filter(x[0].permute(1, 2, 0).numpy(), sigma=[sigma, sigma, 0], mode="constant")
    np.testing.assert_allclose(blur(x, sigma)[0].permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-12)


def test_equals_pair_on_a_small_cnn_for_each_target():
    ad = adapter(small_cnn(), "classification", ["a", "b", "c"])
    image = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    targets = [Target("class", 1, "b"), Target("class", 2, "c")]
    m = blur_ig(ad, image, targets, blur_max_sigma=8.0, blur_steps=20)
    for i, t in enumerate(targets):
        ref = pair_blur_ig(ad, image, torch.eye(3)[[t.index]], max_sigma=8.0, steps=20)
        np.testing.assert_allclose(m.values[i], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
        # completeness against the path's own ends, from direct forward passes
        far = ndimage.gaussian_filter(unit(image)[0].permute(1, 2, 0).double().numpy(), [8.0, 8.0, 0], mode="constant")
        with torch.no_grad():
            ends = torch.stack([unit(image)[0], torch.from_numpy(far).permute(2, 0, 1).float()])
            s = ad.forward(ad.normalize(ends))[:, t.index].double()
        assert m.info["f_x"][i] == pytest.approx(float(s[0]), rel=1e-5)
        assert m.info["f_baseline"][i] == pytest.approx(float(s[1]), rel=1e-5)
        assert m.info["delta"][i] == pytest.approx(float(ref.sum()) - float(s[0] - s[1]), abs=1e-4 * abs(float(s[0] - s[1])))


def test_equals_pair_on_smp_unetplusplus_with_a_region_target():
    _, ad, image, target, weight = unetpp_region_case()
    m = blur_ig(ad, image, [target], blur_max_sigma=12.0, blur_steps=10)
    ref = pair_blur_ig(ad, image, weight, max_sigma=12.0, steps=10, batch_size=10)
    np.testing.assert_allclose(m.values[0], ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_more_steps_close_the_completeness_gap():
    """On a photo-like image (on pixel noise the blur path itself is rough: the kernel's radius jumps)."""
    from helpers_models import smooth_image

    ad = adapter(small_cnn(), "classification", ["a", "b", "c"])
    image = smooth_image(24, 24)
    gaps = [blur_ig(ad, image, [Target("class", 0, "a")], blur_max_sigma=6.0, blur_steps=n).info["relative_delta"][0]
            for n in (4, 64)]
    assert gaps[1] < gaps[0] and gaps[1] < 0.01, gaps


def test_cli_map_and_stats_randomize_row(cli, tmp_path):
    from helpers_models import write_png
    from test_attribute_cli import records

    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(1, "classification")
    write_png(tmp_path / "img.png", image)
    m = ["-m", "builtin:shapes-cls", "--device", "cpu"]
    r = cli(["attribute", *m, "-M", "blur-ig", "--blur-steps", "6", "--blur-max-sigma", "4", tmp_path / "img.png"])
    assert r.exit_code == 0, r.stderr
    (rec,) = records(r.stdout)
    info = rec.meta["maps"]["attr/blur_ig/none"]
    assert info["blur_steps"] == 6 and info["blur_max_sigma"] == 4.0 and info["delta"][0] is not None
    assert rec.arrays["attr/blur_ig/none"].shape == (1, 3, *image.shape[:2])
    r = cli(["stats", *m, "--randomize", "--rand-steps", "2", "-f", "csv"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    (row,) = list(csv.DictReader(io.StringIO(r.output)))
    assert row["method"] == "blur_ig" and row["rand_spearman_all"] != "" and row["relative_delta"] != ""
