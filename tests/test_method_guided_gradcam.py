"""guided-gradcam (xai cam): equal to Captum's GuidedGradCam (interpolate_mode="bilinear") and to grad-cam's
GuidedBackpropReLUModel x its GradCAM, on a small ReLU CNN and on an smp U-Net++ (resnet18) through the CLI;
stored per input channel as attr/guided-gradcam/<layer>, which stats --randomize, stats and render take."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch

from conftest import error_line
from helpers_models import ReluNet, adapter_of, save_unetpp_resnet18, saved_with_image, stream_records, write_png
from test_integrated_gradients import save_tiny_convnext

from xaicli.explain import registry

pytestmark = pytest.mark.usefixtures("one_thread")
METHOD = "guided-gradcam"


def ours(ad, image, layer, targets):
    from xaicli.explain.cam import CamEngine
    from xaicli.models.layers import layer_table

    layers = layer_table(ad, ad.input_size(image.shape[:2])).resolve([layer])
    (m,) = CamEngine(ad, layers, [METHOD]).explain(image, targets)
    return m


class Scored(torch.nn.Module):
    """x ↦ Σ W·net(x) per row, the model input in (Captum's GuidedGradCam hooks the ReLUs and the layer inside)."""

    def __init__(self, net, weight):
        super().__init__()
        self.net = net
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, x):
        return (self.net(x) * self.weight).flatten(1).sum(1)


def captum(model, layer, x, target=None):
    from captum.attr import GuidedGradCam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # Captum warns that it sets backward hooks
        return GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear")[0].detach().numpy()


def close(a, b, tol=1e-5):
    assert np.abs(b).max() > 0 and np.abs(a - b).max() <= tol * np.abs(b).max(), (np.abs(a - b).max(), np.abs(b).max())


def test_equal_to_captum_and_grad_cam_on_a_relu_cnn():
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xaicli.explain.targets import Target

    torch.manual_seed(0)
    ad = adapter_of(ReluNet(shared=True))
    image = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    m = ours(ad, image, "pool", [Target("class", 2, "c"), Target("class", 0, "a")])
    assert m.key == "attr/guided-gradcam/pool" and m.values.shape == (2, 3, 16, 20)
    assert m.info["kind"] == "attribution" and m.info["family"] == "cam" and m.info["module"] == "pool"
    x = ad.prepare(image)                                      # the model input: the image's size here
    for t, k in enumerate((2, 0)):
        close(m.values[t], captum(ad.net, ad.module.pool, x, k))
        # grad-cam's recipe: its guided model (it swaps the ReLU modules: on a copy) times its GradCAM; on a
        # layer no inplace op follows (grad-cam keeps the layer output by reference: an inplace ReLU changes it)
        gb = GuidedBackpropReLUModel(copy.deepcopy(ad.net), device="cpu")(x.clone(), k).transpose(2, 0, 1)
        with GradCAM(ad.net, [ad.module.pool]) as grad_cam:              # its hooks go on exit
            grad_cam.compute_input_gradient = True                         # the weights are frozen
            cam = grad_cam(x, targets=[ClassifierOutputTarget(k)])[0]
        # grad-cam min-max scales its CAM: ours is gb x (lo + (hi - lo) x cam) for the raw map's lo, hi
        basis = np.stack([gb.ravel(), (gb * cam).ravel()], 1).astype(np.float64)
        (lo, span), *_ = np.linalg.lstsq(basis, m.values[t].ravel(), rcond=None)
        assert span > 0
        close(m.values[t], (gb * (lo + span * cam)).astype(np.float32))


def test_aug_smooth_averages_the_signed_maps_over_the_augmentations():
    """--aug-smooth: the mean over grad-cam's flips x brightness of Captum's map on each augmented input,
    flipped back (not min-max scaled: the map is signed)."""
    import ttach as tta

    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.layers import layer_table

    torch.manual_seed(0)
    ad = adapter_of(ReluNet(shared=True))
    image = np.random.default_rng(5).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    layers = layer_table(ad, (12, 16)).resolve(["pool"])
    (m,) = CamEngine(ad, layers, [METHOD], aug_smooth=True).explain(image, [Target("class", 1, "b")])
    assert m.info["normalised"] is False
    x = ad.prepare(image)
    maps = [tr.deaugment_mask(torch.as_tensor(captum(ad.net, ad.module.pool, tr.augment_image(x), 1))[None])[0]
            for tr in tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])]
    close(m.values[0], torch.stack(maps).mean(0).numpy())


@pytest.fixture(scope="module")
def unetpp(tmp_path_factory):
    return saved_with_image(tmp_path_factory.mktemp("ggc"), save_unetpp_resnet18, patch=True)


def test_cli_on_unetpp_equals_captum_and_stats_and_render_take_it(cli, unetpp):
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    spec, png, image, root = unetpp
    r = cli(["cam", "-m", spec, png, "-M", METHOD, "-M", "gradcam"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    (key,) = [k for k in rec if k.startswith("attr/")]
    info = rec["meta"]["maps"][key]
    assert key == f"attr/guided-gradcam/{info['layer']}" and rec[key].shape == (1, 3, 64, 64)
    assert info["kind"] == "attribution" and info["family"] == "cam" and f"cam/gradcam/{info['layer']}" in rec
    ad = load_model(spec, device="cpu")
    weight = Target("mask", 0, "foreground", rec["pred/mask"].astype(bool)).weight(1, (64, 64), (64, 64))
    layer = dict(ad.module.named_modules())[info["module"]]
    close(rec[key][0], captum(Scored(ad.net, weight), layer, ad.prepare(image)))
    # the Grad-CAM factor is the gradcam map stored beside it
    assert np.all((rec[f"cam/gradcam/{info['layer']}"][0] == 0) <= (np.abs(rec[key][0]).max(0) == 0))

    (root / "rec.tar").write_bytes(r.stdout)
    s = cli(["stats", "-m", spec, str(root / "rec.tar"), "--randomize", "--rand-steps", "2", "--steps", "2"])
    assert s.exit_code == 0, s.stderr
    row = next(row for row in map(json.loads, s.output.splitlines()) if row["map"] == key)
    assert row["rand_spearman_top"] is not None and row["rand_spearman_all"] is not None and row["mean"] is not None
    assert row["kind"] == "attribution" and row["layer"] == info["layer"] and row["baseline"] is None
    out = cli(["render", str(root / "rec.tar"), "-o", str(root / "figs") + "/"])
    assert out.exit_code == 0, out.stderr
    assert list((root / "figs").glob("*.png"))


def test_a_model_without_relu_is_refused_when_named_and_left_out_of_all(cli, tmp_path):
    from xaicli.models.loader import load_model

    spec = str(save_tiny_convnext(tmp_path / "cnx"))          # GELU only
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    line = error_line(cli(["cam", "-m", spec, str(write_png(tmp_path / "img.png", image)), "-M", METHOD]), 1)
    assert f"--method {METHOD}" in line and "has no ReLU" in line
    ad = load_model(spec, device="cpu")
    every = registry.resolve("cam", ["all"], "classification")
    assert METHOD in [m.name for m in every]
    kept = registry.applicable("cam", every, ["all"], ad, image)          # what `xai cam -M all` runs
    assert METHOD not in [m.name for m in kept] and len(kept) == len(every) - 1
