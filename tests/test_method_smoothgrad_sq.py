"""SmoothGrad² against Captum's NoiseTunnel(Saliency) (nt_type 'smoothgrad_sq', abs=False) fed the same
noisy copies, on a small CNN, smp U-Net++ and a HF ConvNeXt; through the library and the CLI
(`--method all`, `stats --randomize`); and its identity with SmoothGrad and VarGrad on one set of copies."""

from __future__ import annotations

import numpy as np
import pytest

from test_method_occlusion import settled, tiny_models
from test_method_vargrad import check_cli, check_library

from xaicli.explain import attribute as engine
from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("smoothgrad_sq"))


def test_equals_captum_noise_tunnel_smoothgrad_sq(monkeypatch, models):
    check_library(monkeypatch, models, "smoothgrad-sq", "smoothgrad_sq")


def test_vargrad_is_smoothgrad_sq_less_squared_smoothgrad_in_one_call(models):
    """The three noise-tunnel methods share the copies (same --seed and record) and the passes."""
    ad, image, targets = models["unetpp"]
    sg, sq, var = (m.values for m in engine.explain(
        ad, image, targets, registry.resolve("attribution", ["smoothgrad,smoothgrad2,vargrad"]), [],
        settled(samples=5), key="k"))
    assert sq.min() >= 0 and np.all(sq >= sg * sg * (1 - 1e-5) - 1e-12)
    np.testing.assert_allclose(var, sq - sg * sg, rtol=1e-4, atol=1e-5 * np.abs(var).max())


def test_cli_all_equals_captum_and_stats_randomize_takes_it(cli, monkeypatch, tmp_path):
    rec = check_cli(cli, monkeypatch, tmp_path, "smoothgrad-sq", "smoothgrad_sq")
    assert float(rec["attr/smoothgrad_sq/none"].min()) >= 0
