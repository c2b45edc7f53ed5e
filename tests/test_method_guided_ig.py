"""`guided-ig`: equal to PAIR's `saliency.core.GuidedIG` on the same model and baseline, completeness stored."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from test_method_blur_ig import pair_call
from test_method_lrp import adapter, small_cnn, unetpp_region_case, unit
from xaicli.explain import registry
from xaicli.explain.attribute import explain
from xaicli.explain.attribution import settle
from xaicli.explain.baselines import parse_baselines
from xaicli.explain.targets import Target

pytestmark = pytest.mark.usefixtures("one_thread")


class _NumpyShim:
    """saliency 0.2.1 calls np.quantile(..., interpolation='lower'), a keyword numpy 2 removed (renamed `method`
    in numpy 1.22): TypeError here on numpy 2.4. The shim renames it; nothing else of PAIR's code changes."""

    def __getattr__(self, name):
        return getattr(np, name)

    def quantile(self, a, q, interpolation="linear", **kw):
        return np.quantile(a, q, method=interpolation, **kw)


@pytest.fixture
def pair(monkeypatch):
    import saliency.core.guided_ig as module
    from saliency.core import GuidedIG

    monkeypatch.setattr(module, "np", _NumpyShim())

    def run(ad, x, baseline, weight, **kw):
        hwc = lambda t: t[0].permute(1, 2, 0).double().numpy()    # noqa: E731
        return GuidedIG().GetMask(hwc(x), pair_call(ad, weight), x_baseline=hwc(baseline), **kw).transpose(2, 0, 1)
    return run


def guided_ig(ad, image, targets, baseline="black", **options):
    opts = settle({**registry.option_defaults("attribution"), **options})
    (m,) = explain(ad, image, targets, [registry.lookup("attribution", "guided-ig")], parse_baselines([baseline]),
                   opts, key="r")
    return m


@pytest.mark.parametrize("max_dist,baseline", [(0.02, "black"), (1.0, "black"), (0.1, "blur")])
def test_equals_pair_on_a_small_cnn_for_each_target(pair, max_dist, baseline):
    from xaicli.explain.baselines import make_baselines

    ad = adapter(small_cnn(), "classification", ["a", "b", "c"])
    image = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    targets = [Target("class", 1, "b"), Target("class", 2, "c")]
    m = guided_ig(ad, image, targets, baseline, guided_steps=16, guided_max_dist=max_dist)
    assert m.key == f"attr/guided_ig/{baseline}"
    x = unit(image)
    base = make_baselines(parse_baselines([baseline])[0], x, mean=ad.preprocessing.mean, to_unit=ad.image_to_unit)
    for i, t in enumerate(targets):
        ref = pair(ad, x, base, torch.eye(3)[[t.index]], x_steps=16, fraction=0.25, max_dist=max_dist)
        np.testing.assert_allclose(m.values[i], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
        with torch.no_grad():
            s = ad.forward(ad.normalize(torch.cat([x, base])))[:, t.index].double()
        assert m.info["f_x"][i] == pytest.approx(float(s[0]), rel=1e-5)
        assert m.info["delta"][i] == pytest.approx(float(ref.sum()) - float(s[0] - s[1]), abs=1e-4 * abs(float(s[0])))


def test_equals_pair_on_smp_unetplusplus_with_a_region_target(pair):
    _, ad, image, target, weight = unetpp_region_case()
    m = guided_ig(ad, image, [target], guided_steps=6, guided_max_dist=0.1)
    x = unit(image)
    ref = pair(ad, x, torch.zeros_like(x), weight, x_steps=6, fraction=0.25, max_dist=0.1)
    np.testing.assert_allclose(m.values[0], ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_no_deviation_is_integrated_gradients_on_the_straight_line():
    """max_dist 0 keeps every feature on the straight path: the Riemann sum of IG (closed form on a linear model)."""
    from torch import nn

    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    ad = adapter(lin, "classification", ["a", "b"])
    image = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    m = guided_ig(ad, image, [Target("class", 1, "b")], guided_steps=5, guided_max_dist=0.0)
    # S is linear in x: IG = (x − 0) ⊙ ∂S/∂x, the weight through the normalisation
    std = torch.tensor(ad.preprocessing.std).view(3, 1, 1)
    closed = unit(image)[0] * lin[1].weight[1].view(3, 8, 8) / std
    np.testing.assert_allclose(m.values[0], closed.numpy(), rtol=1e-5, atol=1e-7)
    assert abs(m.info["relative_delta"][0]) < 1e-5


def test_bad_fraction_is_a_usage_error(cli, tmp_path):
    from conftest import error_line
    from helpers_models import rgb_image, write_png

    write_png(tmp_path / "img.png", rgb_image(32, 32))
    r = cli(["attribute", "-m", "builtin:shapes-cls", "-M", "guided-ig", "--guided-fraction", "1.5",
             tmp_path / "img.png"])
    assert "--guided-fraction 1.5: use a number from 0 to 1" in error_line(r, 2)


def test_cli_map_and_stats_randomize_row(cli, tmp_path):
    from helpers_models import write_png
    from test_attribute_cli import records

    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(1, "classification")
    write_png(tmp_path / "img.png", image)
    m = ["-m", "builtin:shapes-cls", "--device", "cpu"]
    r = cli(["attribute", *m, "-M", "guided-ig", "--guided-steps", "5", "-B", "black", "-B", "noise",
             "--baseline-samples", "2", tmp_path / "img.png"])
    assert r.exit_code == 0, r.stderr
    (rec,) = records(r.stdout)
    for name in ("black", "noise"):
        info = rec.meta["maps"][f"attr/guided_ig/{name}"]
        assert info["guided_steps"] == 5 and info["delta"][0] is not None
        assert rec.arrays[f"attr/guided_ig/{name}"].shape == (1, 3, *image.shape[:2])
    assert rec.meta["maps"]["attr/guided_ig/noise"]["baseline_samples"] == 2
    r = cli(["stats", *m, "--randomize", "--rand-steps", "2", "-f", "csv"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["method"] for row in rows} == {"guided_ig"} and len(rows) == 2
    assert all(row["rand_spearman_all"] != "" for row in rows)
