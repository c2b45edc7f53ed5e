"""deeplift: equal to Captum's DeepLift where Captum applies its own rules, on a small CNN and on smp U-Net++;
Σ map = S(x) − S(x') (stored like IG's delta) through the CLI, also where Captum's map misses it; a model
with an op outside the rules is refused naming the module, where Captum silently breaks summation-to-delta.

Captum hooks modules and keeps the gradient arriving at a module's output from a tensor hook; when the next
module is hooked too (a ReLU feeding a max-pool, as in every ResNet stem) both hooks sit on one tensor and
Captum reads the gradient before the next module's rule rewrites it: its map then misses S(x) − S(x'). On
the same function with a copy between the two modules Captum applies its rules as written, and that is the
reference (`unshare`). Captum also refuses a module called twice (torchvision's ResNet blocks)."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch

from conftest import error_line
from helpers_models import (ReluNet, ScoreModule, adapter_of, save_unetpp_resnet18, saved_with_image, stream_records,
                            write_png)

from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")


class Copy(torch.nn.Module):
    def forward(self, x):
        return x.clone()


def unshare(model, pools):
    """A copy of `model` whose max-pools (module paths) take a copy of their input (see the module docstring)."""
    model = copy.deepcopy(model)
    for path in pools:
        parent, _, name = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, name, torch.nn.Sequential(Copy(), getattr(owner, name)))
    return model


def ours(adapter, image, targets, baseline="black", method="deeplift", **options):
    from xaicli.explain.attribute import explain
    from xaicli.explain.attribution import settle
    from xaicli.explain.baselines import parse_baselines

    opts = settle({**registry.option_defaults("attribution"), **options})
    (m,) = explain(adapter, image, targets, registry.resolve("attribution", [method]), parse_baselines([baseline]),
                   opts, key="r")
    return m


def captum(adapter, image, weight, baselines, cls="DeepLift"):
    """Captum's map and its convergence delta(s) on unit images (adapter: the model to hook)."""
    import captum.attr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, d = getattr(captum.attr, cls)(ScoreModule(adapter, weight)).attribute(
            adapter.image_to_unit(image), baselines, return_convergence_delta=True)
    return a[0].detach().numpy(), d.detach().numpy()


def close(a, b, tol=1e-5):
    assert np.abs(b).max() > 0 and np.abs(a - b).max() <= tol * np.abs(b).max(), (np.abs(a - b).max(), np.abs(b).max())


def complete(info, values, tol=1e-4):
    """The stored delta is Σ map − (f_x − f_baseline), and it is ~0 (summation-to-delta): within `tol` of
    |S(x) − S(x')|, or of Σ|map| where the two scores nearly cancel (float32 sums)."""
    for t, arr in enumerate(values):
        gap = info["f_x"][t] - info["f_baseline"][t]
        assert info["delta"][t] == pytest.approx(float(arr.astype(np.float64).sum()) - gap, abs=1e-6 + 1e-5 * abs(gap))
        assert abs(info["delta"][t]) <= tol * max(abs(gap), float(np.abs(arr).sum()))
        assert info["relative_delta"][t] == pytest.approx(abs(info["delta"][t]) / abs(gap))


def test_equal_to_captum_on_a_cnn_whose_relu_is_reused_and_feeds_a_max_pool():
    from xaicli.explain.baselines import make_baselines, parse_baseline
    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    net = ReluNet(shared=True)
    single = ReluNet(shared=False)
    single.load_state_dict(net.state_dict())
    ad, ref_ad = adapter_of(net, size=(24, 24)), adapter_of(unshare(single, ["pool"]), size=(24, 24))
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    u = ad.image_to_unit(image)
    for baseline in ("black", "blur"):
        m = ours(ad, image, [Target("class", 2, "c"), Target("class", 0, "a")], baseline)
        assert m.key == f"attr/deeplift/{baseline}" and m.values.shape == (2, 3, 20, 28)
        complete(m.info, m.values)
        base = make_baselines(parse_baseline(baseline), u, mean=ad.preprocessing.mean)
        for t, k in enumerate((2, 0)):
            ref, delta = captum(ref_ad, image, np.eye(3, dtype=np.float32)[k], base)
            close(m.values[t], ref)
            assert abs(delta[0]) <= 1e-4 * np.abs(ref).sum()
    # Captum on the net itself: refused (a module called twice), and without the copy its map is off
    with pytest.raises(RuntimeError, match="used more than once"):
        captum(ad, image, np.eye(3, dtype=np.float32)[2], torch.zeros_like(u))
    off, delta = captum(adapter_of(single, size=(24, 24)), image, np.eye(3, dtype=np.float32)[2], torch.zeros_like(u))
    assert abs(delta[0]) > 1e-3 * np.abs(off).sum()


def test_functional_relus_get_the_rule_too():
    """x.relu() is ruled like nn.ReLU (Captum leaves it its gradient): equal to Captum on the same function
    written with modules."""
    from xaicli.explain.targets import Target

    class Functional(ReluNet):
        def forward(self, x):
            x = self.conv2(self.pool(self.conv1(x).relu())).relu()
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(1)
    functional, modules = Functional(), ReluNet(shared=False)
    modules.load_state_dict(functional.state_dict())
    ad = adapter_of(functional)
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    m = ours(ad, image, [Target("class", 1, "b")], "mean")
    complete(m.info, m.values)
    mean = ad.image_to_unit(image).mean((2, 3), keepdim=True).expand(1, 3, 16, 16)
    close(m.values[0], captum(adapter_of(unshare(modules, ["pool"])), image, np.eye(3, dtype=np.float32)[1], mean)[0])


@pytest.fixture(scope="module")
def unetpp(tmp_path_factory):
    from test_integrated_gradients import save_tiny_unetpp

    return saved_with_image(tmp_path_factory.mktemp("dl"), save_tiny_unetpp, patch=True)


def test_equal_to_captum_on_unetpp_with_non_overlapping_pools():
    """U-Net++ (timm resnet10t) with its stem max-pool made 2x2 stride 2: Captum's rule routes with
    max_unpool, which keeps one of two routes into one input, so windows must not overlap to compare."""
    import segmentation_models_pytorch as smp

    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    model = smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_weights=None, encoder_depth=3,
                             decoder_channels=(32, 16, 8), classes=2)
    model.encoder.model.maxpool = torch.nn.MaxPool2d(2, 2)
    ad = adapter_of(model, "segmentation", ("a", "b"))
    ref_ad = adapter_of(unshare(model, ["encoder.model.maxpool"]), "segmentation", ("a", "b"))
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    region[10:40, 20:50] = True
    targets = [Target("mask", 1, "b", region), Target("all-pixels", 0, "a", np.ones((64, 64), bool))]
    m = ours(ad, image, targets, "white")
    complete(m.info, m.values)
    for t, target in enumerate(targets):
        ref, delta = captum(ref_ad, image, target.weight(2, (64, 64), (64, 64)), torch.ones(1, 3, 64, 64))
        close(m.values[t], ref)


def test_cli_on_unetpp_sums_to_delta_where_captum_does_not_and_stats_randomize_covers_it(cli, unetpp):
    """The built-in segmenter's architecture (U-Net++, timm resnet10t, a 3x3 stride-2 stem max-pool):
    Σ map = S(x) − S(x'); Captum's max_unpool loses the overlapping routes, even with the copy."""
    from xaicli.explain.baselines import make_baselines, parse_baseline
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    spec, png, image, root = unetpp
    r = cli(["attribute", "-m", spec, png, "-M", "deeplift", "-B", "blur"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    key = "attr/deeplift/blur"
    info = rec["meta"]["maps"][key]
    assert rec[key].shape == (1, 3, 64, 64) and info["baseline"] == "blur" and info["steps"] is None
    complete(info, rec[key])
    ad = load_model(spec, device="cpu")
    weight = Target("mask", 0, "foreground", rec["pred/mask"].astype(bool)).weight(1, (64, 64), (64, 64))
    base = make_baselines(parse_baseline("blur"), ad.image_to_unit(image), mean=ad.preprocessing.mean)
    ref_ad = adapter_of(unshare(ad.module, ["encoder.model.maxpool"]), "segmentation", ad.labels)
    ref_ad.preprocessing = ad.preprocessing
    ref, delta = captum(ref_ad, image, weight, base)
    gap = info["f_x"][0] - info["f_baseline"][0]
    assert abs(delta[0]) > 1e-2 * abs(gap) and abs(info["delta"][0]) < 1e-4 * abs(gap)

    (root / "rec.tar").write_bytes(r.stdout)
    s = cli(["stats", "-m", spec, str(root / "rec.tar"), "--randomize", "--rand-steps", "2", "--steps", "2"])
    assert s.exit_code == 0, s.stderr
    row = next(row for row in map(json.loads, s.output.splitlines()) if row["map"] == key)
    assert row["rand_spearman_top"] is not None and row["rand_spearman_all"] is not None


def test_unetpp_resnet18_which_captum_refuses_sums_to_delta(tmp_path):
    """torchvision's ResNet blocks call one nn.ReLU twice: Captum refuses; here each call has its own rule."""
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    ad = load_model(str(save_unetpp_resnet18(tmp_path / "r18")), device="cpu")
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    region[20:40, 10:50] = True
    m = ours(ad, image, [Target("mask", 0, "foreground", region)], "white")
    complete(m.info, m.values)
    with pytest.raises(RuntimeError, match="used more than once"):
        captum(ad, image, Target("mask", 0, "fg", region).weight(1, (64, 64), (64, 64)),
               torch.ones_like(ad.image_to_unit(image)))


def test_an_op_outside_the_rules_is_refused_naming_its_module(cli, tmp_path):
    """U-Net++ with an EfficientNet encoder (SiLU): Captum gives a map whose sum misses S(x) − S(x'); here the
    method refuses, naming the module, and --method all leaves it out."""
    import segmentation_models_pytorch as smp

    from xaicli.models.loader import load_model

    torch.manual_seed(0)
    smp.UnetPlusPlus(encoder_name="efficientnet-b0", encoder_weights=None, encoder_depth=3,
                     decoder_channels=(16, 8, 8), classes=1).eval().save_pretrained(str(tmp_path / "eff"))
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = str(write_png(tmp_path / "img.png", image))
    line = error_line(cli(["attribute", "-m", str(tmp_path / "eff"), png, "-M", "deeplift"]), 1)
    assert "--method deeplift: module encoder._swish (SiLU) calls silu, outside DeepLift's rules" in line
    assert "integrated-gradients" in line
    ad = load_model(str(tmp_path / "eff"), device="cpu")
    every = registry.resolve("attribution", ["all"])
    assert "deeplift" not in [m.name for m in registry.applicable("attribution", every, ["all"], ad, image)]
    ref, delta = captum(ad, image, np.ones((1, 64, 64), np.float32), torch.zeros_like(ad.image_to_unit(image)))
    with torch.no_grad():
        gap = float(ad.forward(ad.normalize(ad.image_to_unit(image))).sum() - ad.forward(ad.normalize(
            torch.zeros_like(ad.image_to_unit(image)))).sum())
    assert abs(delta[0]) > 1e-3 * abs(gap)             # Captum: no error, and no summation-to-delta


def test_a_torchscript_model_is_refused():
    why = registry.lookup("attribution", "deeplift").unfit(adapter_of(torch.jit.script(ReluNet().eval())),
                                                            np.zeros((8, 8, 3), np.uint8))
    assert why.startswith("the model is TorchScript") and "deeplift" in why
