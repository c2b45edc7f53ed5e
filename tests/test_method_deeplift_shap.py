"""deeplift-shap: equal to Captum's DeepLiftShap and to the mean of Captum's DeepLift over the same draws, on a
small CNN and on smp U-Net++ (Captum's rules as written: see tests/test_method_deeplift.py); through the CLI,
Σ map = S(x) − mean S(x'_k), one draw is deeplift, and stats --randomize redoes it; refusals are DeepLift's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers_models import ReluNet, adapter_of, stream_records
from test_method_deeplift import captum, close, complete, ours, unetpp, unshare  # noqa: F401

from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")


def draws(ad, image, kind, k):
    from xaicli.explain.baselines import make_baselines, parse_baseline

    return make_baselines(parse_baseline(kind), ad.image_to_unit(image), mean=ad.preprocessing.mean, samples=k, key="r")


def test_equal_to_captum_on_a_cnn():
    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    net, single = ReluNet(shared=True), ReluNet(shared=False)
    single.load_state_dict(net.state_dict())
    ad, ref_ad = adapter_of(net, size=(24, 24)), adapter_of(unshare(single, ["pool"]), size=(24, 24))
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    m = ours(ad, image, [Target("class", 1, "b"), Target("class", 2, "c")], "uniform", "deeplift-shap",
             baseline_samples=4)
    assert m.key == "attr/deeplift_shap/uniform" and m.info["baseline_samples"] == 4
    complete(m.info, m.values)
    base = draws(ad, image, "uniform", 4)
    for t, k in enumerate((1, 2)):
        w = np.eye(3, dtype=np.float32)[k]
        close(m.values[t], captum(ref_ad, image, w, base, "DeepLiftShap")[0])
        close(m.values[t], np.mean([captum(ref_ad, image, w, base[i:i + 1])[0] for i in range(4)], 0))


def test_equal_to_the_mean_of_captum_deeplift_on_unetpp():
    import segmentation_models_pytorch as smp

    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    model = smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_weights=None, encoder_depth=3,
                             decoder_channels=(32, 16, 8), classes=1)
    model.encoder.model.maxpool = torch.nn.MaxPool2d(2, 2)    # Captum's max_unpool needs windows that do not overlap
    ad = adapter_of(model, "segmentation", ("fg",))
    ref_ad = adapter_of(unshare(model, ["encoder.model.maxpool"]), "segmentation", ("fg",))
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    region[8:30, 30:60] = True
    target = Target("mask", 0, "fg", region)
    m = ours(ad, image, [target], "noise", "deeplift-shap", baseline_samples=3)
    complete(m.info, m.values)
    base, w = draws(ad, image, "noise", 3), target.weight(1, (64, 64), (64, 64))
    close(m.values[0], np.mean([captum(ref_ad, image, w, base[i:i + 1])[0] for i in range(3)], 0))


def test_cli_one_draw_is_deeplift_draws_sum_to_delta_and_stats_randomize_covers_it(cli, unetpp):  # noqa: F811
    spec, png, image, root = unetpp
    r = cli(["attribute", "-m", spec, png, "-M", "deeplift,deeplift-shap", "-B", "black", "-B", "noise",
             "--baseline-samples", "3", "-b", "2"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    np.testing.assert_array_equal(rec["attr/deeplift_shap/black"], rec["attr/deeplift/black"])
    key = "attr/deeplift_shap/noise"
    info = rec["meta"]["maps"][key]
    assert info["baseline_samples"] == 3 and info["steps_evaluated"] == 6 and rec[key].shape == (1, 3, 64, 64)
    complete(info, rec[key])
    (root / "shap.tar").write_bytes(r.stdout)
    s = cli(["stats", "-m", spec, str(root / "shap.tar"), "--randomize", "--rand-steps", "2", "--steps", "2"])
    assert s.exit_code == 0, s.stderr
    row = next(row for row in map(json.loads, s.output.splitlines()) if row["map"] == key)
    assert row["rand_spearman_top"] is not None and row["rand_spearman_all"] is not None


def test_a_model_outside_the_rules_is_refused_naming_the_module():
    from xaicli.errors import XaiError

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    ad = adapter_of(net, labels=("a", "b"))
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(XaiError, match=r"^--method deeplift-shap: module 1 \(GELU\) calls gelu, outside DeepLift's"):
        registry.applicable("attribution", registry.resolve("attribution", ["deeplift-shap"]), ["deeplift-shap"],
                            ad, image)
