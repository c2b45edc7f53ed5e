"""Every CAM method against a direct pytorch_grad_cam call on the same model, layer and target.

The oracle is grad-cam itself (its normalised output), never our own output. Methods
whose arithmetic is grad-cam's must agree to 1e-5 after min-max scaling our raw maps;
re-implemented ones (ScoreCAM, AblationCAM, ShapleyCAM) are held to the same bound
where it holds and to Pearson >= 0.99 in any case.

Models are saved and loaded the way users do (smp / transformers save_pretrained,
load_model) and kept tiny: U-Net++ (tu-resnet10t, depth 3) at 64², ConvNeXt and ViT
at 32², so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

EXACT = 1e-5
REIMPLEMENTED = ("scorecam", "ablationcam", "shapleycam")
PER_LAYER = ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "gradcam-elementwise", "eigencam",
             "eigengradcam", "segeigencam", "scorecam", "ablationcam", "shapleycam", "fem", "kpcacam", "randomcam")


pytestmark = pytest.mark.usefixtures("one_thread")


# -- models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    import segmentation_models_pytorch as smp

    from xaicli.models.loader import LoadOptions, load_model

    folder = tmp_path_factory.mktemp("unetpp")
    torch.manual_seed(0)
    model = smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_weights=None, encoder_depth=3,
                             decoder_channels=(32, 16, 8), classes=2)
    _randomise_bn(model)
    with contextlib.redirect_stdout(None):
        model.eval().save_pretrained(folder)
    ad = load_model(str(folder), LoadOptions(size=(64, 64)), "cpu")
    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    image[16:40, 20:44] = 230
    return ad, image


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    from transformers import ConvNextConfig, ConvNextForImageClassification

    folder = tmp_path_factory.mktemp("convnext")
    torch.manual_seed(0)
    cfg = ConvNextConfig(hidden_sizes=[8, 16, 24], depths=[1, 1, 1], num_stages=3, image_size=32,
                         layer_scale_init_value=1.0, id2label={0: "a", 1: "b", 2: "c"},
                         label2id={"a": 0, "b": 1, "c": 2})
    ConvNextForImageClassification(cfg).eval().save_pretrained(folder)
    return _hf(folder, 32)


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    ViTForImageClassification(cfg).eval().save_pretrained(folder)
    return _hf(folder, 32)


def _hf(folder, size):
    from xaicli.models.loader import load_model

    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    ad = load_model(str(folder), device="cpu")
    image = (np.random.default_rng(2).random((size, size, 3)) * 255).astype(np.uint8)
    return ad, image


def _randomise_bn(model):
    """Untrained BatchNorm is the identity; random running stats make activations less trivial."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


# -- helpers ----------------------------------------------------------------------

def norm(maps: np.ndarray) -> np.ndarray:
    """Min-max per map, what grad-cam returns (a constant map → zeros)."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    rng = maps.max(axis=(1, 2), keepdims=True) - lo
    return np.where(rng > 0, (maps - lo) / np.where(rng > 0, rng, 1), 0.0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 and b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def reference(ad, method: str, layers, x: torch.Tensor, gc_targets, reshape=None, **call):
    """A direct grad-cam call on the adapter's logits module: (T, H, W) normalised maps."""
    import pytorch_grad_cam as gc

    from xaicli.explain.cam import METHODS

    cls = getattr(gc, METHODS[method].reference)
    kwargs = {"reshape_transform": reshape} if reshape is not None else {}
    if method == "ablationcam" and reshape is not None:
        kwargs["ablation_layer"] = gc.AblationLayerVit()
    cam = cls(ad.net, [la.module for la in layers], **kwargs)
    out = []
    try:
        for target in gc_targets:      # one image per call: batch-size-dependent kernels stay out of the diff
            if method == "randomcam":
                np.random.seed(0)
            with contextlib.redirect_stderr(io.StringIO()):
                out.append(cam(x.detach().clone().requires_grad_(True), [target], **call))
    finally:
        release(cam)
    return np.concatenate(out)


def release(cam):
    """grad-cam's release() fails on gradient views (ConvNeXt): empty its lists first."""
    from xaicli.explain.cam import release_gradcam

    release_gradcam(cam)


def ours(ad, methods, layer_names, image, targets, **kw):
    from xaicli.explain.cam import CamEngine
    from xaicli.models.layers import layer_table

    table = layer_table(ad, ad.input_size(image.shape[:2]))
    layers = table.resolve(layer_names)
    engine = CamEngine(ad, layers, methods, **kw)
    return {m.key: m for m in engine.explain(image, targets)}, layers


def seg_targets(ad, image):
    from xaicli.explain.targets import Target
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    with torch.no_grad():
        logits = ad.forward(ad.prepare(image))[0]
    mask = (logits.argmax(0) == 1).numpy()
    assert 0 < mask.sum() < mask.size
    ours_t = [Target("mask", 1, "b", mask), Target("all-pixels", 0, "a", np.ones_like(mask))]
    ref_t = [SemanticSegmentationTarget(1, mask.astype(np.float32)),
             SemanticSegmentationTarget(0, np.ones(mask.shape, np.float32))]
    return ours_t, ref_t


def cls_targets(ad, image):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xaicli.explain.targets import resolve_classification

    with torch.no_grad():
        probs = torch.softmax(ad.forward(ad.prepare(image))[0], 0).numpy()
    t = resolve_classification(["all"], ad.labels, probs)
    return t, [ClassifierOutputTarget(x.index) for x in t]


def check(method, mine: np.ndarray, ref: np.ndarray, normalised: bool):
    got = mine if normalised else norm(mine)
    assert got.shape == ref.shape
    r = pearson(got, ref)
    diff = float(np.abs(got - ref).max())
    if method in REIMPLEMENTED:
        assert r >= 0.99, f"{method}: Pearson {r:.4f}"
    else:
        assert diff <= EXACT, f"{method}: max |diff| {diff:.2e} (Pearson {r:.5f})"


# -- per-layer methods on the three families ----------------------------------------

@pytest.mark.parametrize("layer", ["decoder_last", "encoder_last"])
def test_unetplusplus_every_method_equals_gradcam(seg, layer):
    """decoder_last (8 channels at 64x64) with two targets; encoder_last (128 channels) with
    the predicted-mask target, where ScoreCAM screens its channels."""
    ad, image = seg
    targets, ref_t = seg_targets(ad, image)
    if layer == "encoder_last":
        targets, ref_t = targets[:1], ref_t[:1]
    mine, layers = ours(ad, list(PER_LAYER), [layer], image, targets, scorecam_exact=False)
    x = ad.prepare(image)
    for method in PER_LAYER:
        if method == "kpcacam" and layer == "decoder_last":
            continue        # 4096 positions: grad-cam's kernel PCA takes long; tested on encoder_last
        info = mine[f"cam/{method}/{layer}"].info
        assert info["module"] == layers[0].path and info["normalised"] is False
        ref = reference(ad, method, layers, x, ref_t)
        check(method, mine[f"cam/{method}/{layer}"].values, ref, False)
    if layer == "encoder_last":
        sc = mine["cam/scorecam/encoder_last"].info["scorecam"]
        assert sc["mode"] == "screened" and sc["channels"] == 128 and sc["expected_map_error"] <= 0.03


def test_scorecam_screening_skips_channels_and_keeps_the_map():
    """On the trained demo segmenter the softmax is peaked: many channels are never scored in
    float32, and the map is still grad-cam's ScoreCAM."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from xaicli.explain.targets import Target
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    ad = load_model("builtin:shapes-seg", device="cpu")
    for seed in (5001, 5002):
        img, _, _ = make_sample(seed, "segmentation")
        with torch.no_grad():
            pred = (ad.forward(ad.prepare(img))[0, 0] > 0).numpy()
        mine, layers = ours(ad, ["scorecam"], ["encoder_last"], img, [Target("mask", 0, "blob", pred)],
                            scorecam_exact=False)
        m = mine["cam/scorecam/encoder_last"]
        info = m.info["scorecam"]
        assert info["mode"] == "screened" and info["exact_channels"] < info["channels"] == 128
        assert info["passes"]["exact"] == info["exact_channels"]
        ref = reference(ad, "scorecam", layers, ad.prepare(img), [SemanticSegmentationTarget(0, pred.astype(np.float32))])
        assert pearson(norm(m.values), ref) >= 0.99
        assert np.abs(norm(m.values) - ref).max() <= 0.05


@pytest.mark.parametrize("fast,least,screened", [(True, 96 * 96, True), (True, None, False), (False, 96 * 96, False)])
def test_scorecam_screens_by_default_only_where_bfloat16_is_fast_and_passes_are_not_tiny(monkeypatch, fast, least,
                                                                                         screened):
    """Neither flag given: the screen where the hardware runs bfloat16 fast and, on a CPU, the model's
    input has SCREEN_LEAST_CPU pixels (the built-in segmenter's 96² has not, by default); float32 for
    every channel elsewhere."""
    from xaicli.explain.cams import scorecam
    from xaicli.explain.targets import Target
    from xaicli.models import device
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    monkeypatch.setattr(device, "fast_bfloat16", lambda dev: fast)
    if least is not None:
        monkeypatch.setattr(scorecam, "SCREEN_LEAST_CPU", least)
    ad = load_model("builtin:shapes-seg", device="cpu")
    img, _, _ = make_sample(5001, "segmentation")
    x = ad.prepare(img)
    assert tuple(x.shape[-2:]) == (96, 96)
    with torch.no_grad():
        pred = (ad.forward(x)[0, 0] > 0).numpy()
    mine, _ = ours(ad, ["scorecam"], ["encoder_last"], img, [Target("mask", 0, "blob", pred)])
    info = mine["cam/scorecam/encoder_last"].info["scorecam"]
    assert info["mode"] == ("screened" if screened else "exact")
    assert (info["exact_channels"] < 128) is screened


def test_the_default_screen_rule_by_device_and_input_size(monkeypatch):
    from xaicli.explain.cams.scorecam import screens_by_default
    from xaicli.models import device

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert screens_by_default(cuda, (32, 32))          # a GPU screens whatever the size
    monkeypatch.setattr(device, "fast_bfloat16", lambda dev: True)
    assert screens_by_default(cpu, (128, 128)) and screens_by_default(cpu, (256, 64))
    assert not screens_by_default(cpu, (127, 128)) and not screens_by_default(cpu, (64, 64))
    monkeypatch.setattr(device, "fast_bfloat16", lambda dev: False)
    assert not screens_by_default(cpu, (512, 512))


def test_convnext_every_method_equals_gradcam_for_all_classes(convnext):
    ad, image = convnext
    targets, ref_t = cls_targets(ad, image)
    assert len(targets) == 3
    mine, layers = ours(ad, list(PER_LAYER), ["stage1"], image, targets)
    x = ad.prepare(image)
    for method in PER_LAYER:
        ref = reference(ad, method, layers, x, ref_t)
        check(method, mine[f"cam/{method}/stage1"].values, ref, False)


def test_vit_every_method_equals_gradcam_with_the_patch_grid(vit):
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    ad, image = vit
    targets, ref_t = cls_targets(ad, image)
    methods = [m for m in PER_LAYER if m != "shapleycam"]   # grad-cam's ShapleyCAM cannot reshape ViT tokens
    mine, layers = ours(ad, methods, ["last"], image, targets)
    assert layers[0].path.endswith("layernorm_before")
    x = ad.prepare(image)

    def reshape(t):
        return vit_reshape_transform(t, 4, 4)    # 32 / patch 8

    for method in methods:
        ref = reference(ad, method, layers, x, ref_t, reshape=reshape)
        check(method, mine[f"cam/{method}/last"].values, ref, False)
    # the ViT trap: the encoder layer's own output gives all-zero Grad-CAM maps
    zero, _ = ours(ad, ["gradcam"], [layers[0].path.rsplit(".", 1)[0]], image, targets)
    assert not zero[f"cam/gradcam/{layers[0].path.rsplit('.', 1)[0]}"].values.any()
    assert mine["cam/gradcam/last"].values.any()


# -- whole-model and option variants -----------------------------------------------

def test_refinecam_equals_gradcam(seg):
    import pytorch_grad_cam as gc

    ad, image = seg
    targets, ref_t = seg_targets(ad, image)
    mine, layers = ours(ad, ["refinecam"], ["encoder_mid", "decoder_last"], image, targets)
    assert set(mine) == {"cam/refinecam/encoder_mid+decoder_last"}
    x = ad.prepare(image)
    rc = gc.RefineCAM(ad.net, [la.module for la in layers])
    try:
        ref = np.concatenate([rc(x.clone().requires_grad_(True), [t]) for t in ref_t])
    finally:
        for c in rc.base_cam_per_layer:
            release(c)
    m = mine["cam/refinecam/encoder_mid+decoder_last"]
    assert m.info["normalised"] is True and m.info["module"] == "+".join(la.path for la in layers)
    check("refinecam", m.values, ref, True)


def test_fullgrad_equals_gradcam(convnext):
    ad, image = convnext
    targets, ref_t = cls_targets(ad, image)
    mine, _ = ours(ad, ["fullgrad"], None, image, targets)
    fg = mine["cam/fullgrad/bias-layers"]
    assert fg.info["normalised"] is True and fg.info["module"] is None
    check("fullgrad", fg.values, reference(ad, "fullgrad", [], ad.prepare(image), ref_t), True)


def test_fullgrad_runs_where_gradcam_pairs_the_wrong_biases(seg):
    """U-Net++ defines its decoder blocks in another order than it runs them: grad-cam's
    FullGrad multiplies a bias with another layer's gradient and fails; ours pairs them."""
    ad, image = seg
    targets, ref_t = seg_targets(ad, image)
    with pytest.raises(ValueError, match="broadcast"):
        reference(ad, "fullgrad", [], ad.prepare(image), ref_t[:1])
    mine, _ = ours(ad, ["fullgrad"], None, image, targets[:1])
    v = mine["cam/fullgrad/bias-layers"].values
    assert v.shape == (1, 64, 64) and np.isfinite(v).all() and v.max() == pytest.approx(1, abs=1e-5)


def test_fullgrad_eigen_smooth_equals_gradcam(convnext):
    ad, image = convnext
    targets, ref_t = cls_targets(ad, image)
    mine, _ = ours(ad, ["fullgrad"], None, image, targets[:1], eigen_smooth=True)
    ref = reference(ad, "fullgrad", [], ad.prepare(image), ref_t[:1], eigen_smooth=True)
    check("fullgrad", mine["cam/fullgrad/bias-layers"].values, ref, True)


def test_finercam_equals_gradcam(convnext):
    import pytorch_grad_cam as gc

    ad, image = convnext
    targets, _ = cls_targets(ad, image)
    mine, layers = ours(ad, ["finercam"], ["last"], image, targets)
    x = ad.prepare(image)
    finer = gc.FinerCAM(ad.net, [layers[0].module])
    try:
        refs = [finer(x.clone().requires_grad_(True), None, target_idx=t.index) for t in targets]
    finally:
        release(finer.base_cam)
    check("finercam", mine["cam/finercam/last"].values, np.concatenate(refs), False)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam"])
def test_eigen_smooth_equals_gradcam(convnext, method):
    ad, image = convnext
    targets, ref_t = cls_targets(ad, image)
    mine, layers = ours(ad, [method], ["stage0"], image, targets, eigen_smooth=True)
    ref = reference(ad, method, layers, ad.prepare(image), ref_t, eigen_smooth=True)
    check(method, mine[f"cam/{method}/stage0"].values, ref, False)
    assert mine[f"cam/{method}/stage0"].info["eigen_smooth"] is True


def test_aug_smooth_equals_gradcam_on_a_classifier(convnext):
    ad, image = convnext
    targets, ref_t = cls_targets(ad, image)
    mine, layers = ours(ad, ["gradcam++"], ["stage1"], image, targets, aug_smooth=True)
    m = mine["cam/gradcam++/stage1"]
    assert m.info["normalised"] is True and m.info["aug_smooth"] is True
    ref = reference(ad, "gradcam++", layers, ad.prepare(image), ref_t, aug_smooth=True)
    assert np.abs(m.values - ref).max() <= EXACT


def test_thin_svd_projection_equals_gradcams_full_svd():
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_with_sign_correction

    from xaicli.explain.cam import projection

    rng = np.random.default_rng(0)
    for shape in ((2, 8, 12, 10), (1, 40, 6, 6), (3, 3, 20, 16)):
        a = (rng.normal(size=shape) * rng.uniform(0.1, 3, (1, shape[1], 1, 1))).astype(np.float32)
        assert np.abs(projection(a) - get_2d_projection(a)).max() <= 1e-4
        assert np.abs(projection(a, True) - get_2d_projection_with_sign_correction(a)).max() <= 1e-4


def test_every_method_runs_on_vit_and_swin(vit):
    """`--method all` on token models, ShapleyCAM's double backward through attention included."""
    from transformers import SwinConfig, SwinForImageClassification

    from xaicli.explain import registry
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    torch.manual_seed(0)
    swin = SwinForImageClassification(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                                 num_heads=[1, 2], window_size=4, num_labels=3)).eval()
    for p in swin.parameters():
        p.requires_grad_(False)
    swin_ad = ModelAdapter(LogitsModule(swin), "classification", ["a", "b", "c"], Preprocessing(size=(32, 32)),
                           torch.device("cpu"))
    for ad, image, layers, tokens in ((vit[0], vit[1], ["last", "block0"], True),
                                      (swin_ad, vit[1], ["last", "stage0"], False)):   # Swin: no ViT-only method
        targets, _ = cls_targets(ad, image)
        every = registry.resolve("cam", ["all"], "classification", len(layers), tokens)
        methods = registry.applicable("cam", every, ["all"], ad, image)      # what fits the model, as the CLI runs
        mine, _ = ours(ad, methods, layers, image, targets)
        whole = sum(m.whole_model for m in methods)
        assert whole >= 2 and len(mine) == (len(methods) - whole) * 2 + whole   # fullgrad, refinecam...: one map
        for key, m in mine.items():
            assert m.values.shape == (3, 32, 32) and np.isfinite(m.values).all(), key
        assert mine["cam/gradcam/last"].values.max() > 0
