"""`lrp`: equal to zennit's own Gradient attributor under the same composite, relevance carried to the
image's pixels without loss, conservation stored, and models outside zennit's rules refused by name."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from torch import nn

from xaicli.explain import registry
from xaicli.explain.attribute import explain
from xaicli.explain.attribution import settle
from xaicli.explain.targets import Target

pytestmark = pytest.mark.usefixtures("one_thread")
COMPOSITES = {"epsilon-plus-flat": "EpsilonPlusFlat", "epsilon-gamma-box": "EpsilonGammaBox",
              "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1"}


def adapter(model, task, labels, size=None):
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    for p in model.parameters():
        p.requires_grad_(False)
    return ModelAdapter(LogitsModule(model.eval()), task, labels, Preprocessing(size=size), torch.device("cpu"))


def small_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():      # a BatchNorm that is not the identity, so the canonizer's merge matters
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    return net


def unetpp():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.UnetPlusPlus(encoder_name="resnet18", encoder_weights=None, encoder_depth=3,
                            decoder_channels=(16, 8, 8), classes=1)


def unetpp_region_case():
    """(net, adapter, 64x64 image, region Target, its logit weights (1, 1, 64, 64)): the segmentation case."""
    net = unetpp()
    ad = adapter(net, "segmentation", ["fg"])
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    region[10:40, 20:50] = True
    target = Target("mask", 0, "fg", mask=region)
    return net, ad, image, target, target.weight(1, (64, 64), (64, 64), torch.device("cpu"))[None]


def lrp_maps(ad, image, targets, composite):
    options = settle({**registry.option_defaults("attribution"), "composite": composite})
    (m,) = explain(ad, image, targets, [registry.lookup("attribution", "lrp")], [], options, key="r")
    assert m.key == "attr/lrp/none" and m.info["composite"] == composite
    return m


def zennit_direct(model, x, mean, std, composite, grad_output):
    """zennit's Gradient attributor on the model at its normalised input, output relevance = grad_output ⊙ output."""
    from zennit import composites
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer

    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    z = (x - mean) / std
    box = {"low": ((0 - mean) / std).expand_as(z), "high": ((1 - mean) / std).expand_as(z)}
    comp = getattr(composites, COMPOSITES[composite])(canonizers=[ResNetCanonizer()],
                                                      **(box if composite == "epsilon-gamma-box" else {}))
    with Gradient(model=model, composite=comp) as attributor:
        out, rel = attributor(z, lambda o: grad_output * o)
    return rel[0], float((grad_output * out.detach()).sum())


def unit(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_equals_zennit_on_a_small_cnn(composite):
    net = small_cnn()
    ad = adapter(net, "classification", ["a", "b", "c"])
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    targets = [Target("class", 0, "a"), Target("class", 2, "c")]
    m = lrp_maps(ad, image, targets, composite)
    for i, t in enumerate(targets):
        ref, score = zennit_direct(net, unit(image), ad.preprocessing.mean, ad.preprocessing.std, composite,
                                   torch.eye(3)[[t.index]])
        scale = float(ref.abs().max())
        np.testing.assert_allclose(m.values[i], ref.numpy(), rtol=0, atol=1e-5 * scale)
        assert m.info["f_x"][i] == pytest.approx(score, rel=1e-5)
        assert m.info["delta"][i] == pytest.approx(float(ref.double().sum()) - score, abs=1e-5 * abs(score))
        assert m.info["relative_delta"][i] == pytest.approx(abs(m.info["delta"][i]) / abs(score))


@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "epsilon-gamma-box"])
def test_equals_zennit_on_smp_unetplusplus_with_a_region_target(composite):
    net, ad, image, target, weight = unetpp_region_case()
    m = lrp_maps(ad, image, [target], composite)
    ref, score = zennit_direct(net, unit(image), ad.preprocessing.mean, ad.preprocessing.std, composite, weight)
    np.testing.assert_allclose(m.values[0], ref.numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert m.info["f_x"][0] == pytest.approx(score, rel=1e-5)
    # torchvision's ResNet blocks sum their skips through zennit's Sum: relevance is conserved but for biases
    assert m.info["relative_delta"][0] < 0.5


def test_relevance_reaches_the_image_pixels_by_the_resize_weights_and_keeps_its_total():
    """A 20x28 image resized to the model's 24x24: each model pixel's relevance goes to the image pixels
    that make it up, by their resize weights (the normalisation's 1/std cancels), so the total is kept."""
    from xaicli.explain.attribution.lrp import model_relevance
    from xaicli.models.adapter import resize

    net = small_cnn()
    ad = adapter(net, "classification", ["a", "b", "c"], size=(24, 24))
    image = np.random.default_rng(2).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    m = lrp_maps(ad, image, [Target("class", 1, "b")], "epsilon-plus-flat")
    x = unit(image)
    z = ad.normalize(x)
    rel, _ = model_relevance(ad.net, z, torch.eye(3)[[1]], None, None, "epsilon-plus-flat")
    xs = x.clone().requires_grad_(True)
    (by_weights,) = torch.autograd.grad(resize(xs, (24, 24)), xs, grad_outputs=rel)
    np.testing.assert_allclose(m.values, by_weights.numpy(), rtol=0, atol=1e-5 * float(rel.abs().max()))
    np.testing.assert_allclose(m.values[0].sum((1, 2)), rel[0].double().sum((1, 2)).numpy(), rtol=1e-5)


def test_models_outside_zennits_rules_are_refused_by_name(tmp_path, cli):
    from helpers_models import rgb_image, save_tiny_vit, write_png

    from xaicli.models.loader import load_model
    from conftest import error_line

    vit = save_tiny_vit(tmp_path / "vit")
    write_png(tmp_path / "img.png", rgb_image(32, 32))
    r = cli(["attribute", "-m", vit, "-M", "saliency,lrp", tmp_path / "img.png"])
    line = error_line(r, 1)
    assert line.startswith("xai: error: --method lrp: zennit has no rule for module 'vit.embeddings' "
                           "(ViTEmbeddings)") and "use integrated-gradients" in line
    ad = load_model(str(vit), device="cpu")
    every = registry.resolve("attribution", ["all"], ad.task)
    names = [m.name for m in registry.applicable("attribution", every, ["all"], ad, rgb_image(32, 32))]
    assert "lrp" in [m.name for m in every] and "lrp" not in names and "saliency" in names
    assert registry.lookup("attribution", "lrp").unfit(adapter(small_cnn(), "classification", list("abc")),
                                                       None) is None


def test_unknown_composite_is_a_usage_error(cli, tmp_path):
    from conftest import error_line
    from helpers_models import rgb_image, write_png

    write_png(tmp_path / "img.png", rgb_image(32, 32))
    r = cli(["attribute", "-m", "builtin:shapes-cls", "-M", "lrp", "--composite", "epsilon", tmp_path / "img.png"])
    line = error_line(r, 2)
    assert "--composite 'epsilon'" in line and "epsilon-plus-flat" in line


def test_cli_map_and_stats_randomize_row(cli, tmp_path):
    from helpers_models import write_png

    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(1, "classification")
    write_png(tmp_path / "img.png", image)
    m = ["-m", "builtin:shapes-cls", "--device", "cpu"]
    r = cli(["attribute", *m, "-M", "lrp", "--composite", "epsilon-gamma-box", tmp_path / "img.png"])
    assert r.exit_code == 0, r.stderr
    assert "lrp relevance misses" not in r.stderr        # HF's ResNet skips canonized: conserved
    from test_attribute_cli import records

    (rec,) = records(r.stdout)
    info = rec.meta["maps"]["attr/lrp/none"]
    assert info["composite"] == "epsilon-gamma-box" and info["relative_delta"][0] < 0.5
    assert rec.arrays["attr/lrp/none"].shape == (1, 3, *image.shape[:2])
    r = cli(["stats", *m, "--randomize", "--rand-steps", "2", "-f", "csv"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    (row,) = list(csv.DictReader(io.StringIO(r.output)))
    assert row["method"] == "lrp" and row["rand_spearman_all"] != "" and row["relative_delta"] != ""


def test_hugging_face_resnet_skips_are_summed_by_zennits_rule():
    """The built-in classifier (transformers' ResNet) sums its skips in forward code: canonized, the logits are
    unchanged, relevance is conserved but for biases (without: 5-10x the score), and the model is restored after."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    from xaicli.explain.attribution.lrp import hf_resnet_canonizers
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    ad = load_model("builtin:shapes-cls", device="cpu")
    image, _, _ = make_sample(1, "classification")
    z = ad.prepare(image)
    with torch.no_grad():
        before = ad.net(z)
    gaps = []
    for canonizers in ([ResNetCanonizer()], [ResNetCanonizer(), *hf_resnet_canonizers()]):
        with Gradient(model=ad.net, composite=EpsilonPlusFlat(canonizers=canonizers)) as attributor:
            out, rel = attributor(z, lambda o: torch.eye(3)[[1]] * o)
        torch.testing.assert_close(out.detach(), before, rtol=1e-4, atol=1e-4)   # BatchNorm merged: rounding only
        gaps.append(abs(float(rel.sum()) / float(before[0, 1]) - 1))
    assert gaps[0] > 1 and gaps[1] < 0.5, gaps
    m = lrp_maps(ad, image, [Target("class", 1, "b")], "epsilon-plus-flat")
    assert m.info["relative_delta"][0] == pytest.approx(gaps[1], rel=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(ad.net(z), before, rtol=0, atol=0)
    assert not any(hasattr(mod, "canonizer_sum") for mod in ad.module.modules())


class _SkipSummedInCode(nn.Module):
    """x + conv(x) written as code, the way zennit's rules cannot see: relevance is counted on both branches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x)) + x).flatten(1))


def test_a_relevance_total_far_from_the_score_is_stored_and_said(caplog):
    ad = adapter(_SkipSummedInCode(), "classification", ["a", "b"])
    image = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="xai"):
        m = lrp_maps(ad, image, [Target("class", 0, "a")], "epsilon-plus-flat")
    assert m.info["relative_delta"][0] > 0.5
    assert "r: lrp relevance misses the target score by" in caplog.text and "skip connections" in caplog.text
