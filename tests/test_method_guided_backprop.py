"""guided-backprop: equal to Captum's GuidedBackprop on a small ReLU CNN (one inplace nn.ReLU called twice)
and on an smp U-Net++ (resnet18), through the library and the CLI; functional ReLUs are ruled too;
a model without ReLU is refused when named and left out of --method all; stats --randomize redoes it.

The tests take the method from the `case` fixture: test_method_deconvolution.py runs them for
deconvolution, which differs in the rule only."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import error_line
from helpers_models import (ReluNet, ScoreModule, adapter_of, save_unetpp_resnet18, saved_with_image, stream_records,
                            write_png)
from test_integrated_gradients import save_tiny_convnext

from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Case:
    method: str
    key: str
    reference: str          # the captum.attr class

    def ours(self, adapter, image, targets):
        from xaicli.explain.attribute import explain
        from xaicli.explain.attribution import settle

        options = settle(registry.option_defaults("attribution"))
        (m,) = explain(adapter, image, targets, registry.resolve("attribution", [self.method]), [], options, key="r")
        return m

    def captum(self, adapter, image, weight, model=None):
        import captum.attr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # Captum warns that it sets backward hooks
            size = adapter.preprocessing.size
            module = ScoreModule(adapter if model is None else adapter_of(model, size=size), weight)
            return getattr(captum.attr, self.reference)(module).attribute(adapter.image_to_unit(image))[0].numpy()


@pytest.fixture(scope="module")
def case():
    return Case("guided-backprop", "attr/guided_backprop/none", "GuidedBackprop")


def close(a, b, tol=1e-5):
    assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1e-12), (np.abs(a - b).max(), np.abs(b).max())


def test_equal_to_captum_on_a_relu_cnn_with_a_reused_inplace_relu(case):
    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    ad = adapter_of(ReluNet(shared=True), size=(24, 24))
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    m = case.ours(ad, image, [Target("class", 2, "c"), Target("class", 0, "a")])
    assert m.values.shape == (2, 3, 20, 28) and m.info["method"] == case.key.split("/")[1] and m.info["baseline"] is None
    for t, k in enumerate((2, 0)):
        ref = case.captum(ad, image, np.eye(3, dtype=np.float32)[k])
        close(m.values[t], ref)
        assert np.abs(ref).max() > 0


def test_functional_relus_are_ruled_like_modules(case):
    """Captum hooks nn.ReLU modules only; here x.relu() gets the rule too: the map equals Captum's on
    the same function written with nn.ReLU modules."""
    from xaicli.explain.targets import Target

    class Functional(ReluNet):
        def forward(self, x):
            x = self.conv2(self.pool(self.conv1(x).relu())).relu()
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(1)
    functional = Functional()
    modules = ReluNet(shared=False)
    modules.load_state_dict(functional.state_dict())
    ad = adapter_of(functional, size=(16, 16))
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    m = case.ours(ad, image, [Target("class", 1, "b")])
    close(m.values[0], case.captum(ad, image, np.eye(3, dtype=np.float32)[1], model=modules))


@pytest.fixture(scope="module")
def unetpp(tmp_path_factory):
    return saved_with_image(tmp_path_factory.mktemp("gbp"), save_unetpp_resnet18, patch=False)


def test_cli_on_unetpp_equals_captum_and_stats_randomize_covers_it(cli, unetpp, case):
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    spec, png, image, root = unetpp
    r = cli(["attribute", "-m", spec, png, "-M", case.method])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    info = rec["meta"]["maps"][case.key]
    assert rec[case.key].shape == (1, 3, 64, 64) and info["targets"][0]["region"] == "predicted"
    weight = Target("mask", 0, "foreground", rec["pred/mask"].astype(bool)).weight(1, (64, 64), (64, 64))
    close(rec[case.key][0], case.captum(load_model(spec, device="cpu"), image, weight))
    (root / "rec.tar").write_bytes(r.stdout)
    s = cli(["stats", "-m", spec, str(root / "rec.tar"), "--randomize", "--rand-steps", "2", "--steps", "2"])
    assert s.exit_code == 0, s.stderr
    import json

    rows = [json.loads(line) for line in s.output.splitlines()]
    row = next(r for r in rows if r["map"] == case.key)
    assert row["rand_spearman_top"] is not None and row["rand_spearman_all"] is not None


def test_a_model_without_relu_is_refused_when_named_and_left_out_of_all(cli, tmp_path, case):
    spec = str(save_tiny_convnext(tmp_path / "cnx"))          # GELU only
    png = str(write_png(tmp_path / "img.png", np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    line = error_line(cli(["attribute", "-m", spec, png, "-M", case.method]), 1)
    assert f"--method {case.method}" in line and "has no ReLU" in line and "saliency" in line
    r = cli(["attribute", "-m", spec, png, "-M", "all", "-n", "4"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert case.key not in rec and "attr/saliency/none" in rec
    assert case.method in [m.name for m in registry.resolve("attribution", ["all"], "segmentation")]


def test_a_torchscript_model_is_refused(case):
    """Compiled ops take no backward rule: the map would silently be the gradient."""
    net = torch.jit.script(ReluNet().eval())
    image = np.zeros((8, 8, 3), np.uint8)
    why = registry.lookup("attribution", case.method).unfit(adapter_of(net), image)
    assert why.startswith("the model is TorchScript") and case.method in why
