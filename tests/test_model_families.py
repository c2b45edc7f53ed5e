"""The model families users have (issue 19): timm, torchvision, MONAI, ONNX, each against its own library.

For each family a tiny untrained model is built here and saved the way its users save it
(timm's save_for_hf, a torchvision / timm / MONAI state dict, torch.onnx.export). The
oracles are independent of xai: the model called directly on its library's own
preprocessing (timm's create_transform, torchvision's weights.transforms(), run on the
image tensor), Captum IG through that same preprocessing, and a direct grad-cam call,
mapped into the crop box by hand. Classifier heads are scaled up so that probabilities
move with the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import torch

from helpers_models import into_box, smooth_image, stream_records, tiny_classifier, write_png

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 8
MONAI_SKIP = "MONAI is an optional extra (pip install 'xai[monai]'), not installed here"
ONNX_SKIP = "onnx2torch is an optional extra (pip install 'xai[onnx]'), not installed here"


@dataclass
class Case:
    """One model as a user has it, and the library's own way of running it."""

    args: list[str]                       # -m ... (+ --arch ...)
    png: str
    image: np.ndarray
    model: Any                            # the torch module as built (eval)
    prepare: Callable                     # unit image (1, C, H, W) in [0, 1] -> the model's input (library's own)
    layer: Any = None                     # the module `--layer last` must name
    reshape: Callable | None = None       # grad-cam reshape for token layers
    target: list[str] = field(default_factory=list)   # segmenters: a fixed target
    mask: np.ndarray | None = None
    cls: int | None = None
    steps: int = 8                        # IG steps

    def unit(self) -> torch.Tensor:
        x = torch.from_numpy(self.image).float() / 255
        return x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        out = self.model(self.prepare(u))
        return out["out"] if isinstance(out, dict) else out


def _sharpen(linear, scale: float = 40.0) -> None:
    with torch.no_grad():
        linear.weight.mul_(scale)


def _timm_transform(model):
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def timm_folder(root):
    """A timm export folder: test_efficientnet (bicubic) with crop_pct 0.875, label names."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3, pretrained_cfg_overlay={"crop_pct": 0.875}).eval()
    _sharpen(model.get_classifier())
    save_for_hf(model, root / "timm_effnet", safe_serialization=True, model_config={"label_names": ["a", "b", "c"]})
    img = smooth_image(120, 150, seed=1)
    tf = _timm_transform(model)
    return Case(["-m", str(root / "timm_effnet")], str(write_png(root / "timm.png", img)), img, model,
                lambda u: tf(u), layer=model.bn2)


@pytest.fixture(scope="module")
def timm_state(root):
    import timm

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=4).eval()
    _sharpen(model.get_classifier())
    torch.save(model.state_dict(), root / "test_resnet.pth")
    img = smooth_image(96, 80, seed=2)
    tf = _timm_transform(model)
    return Case(["-m", str(root / "test_resnet.pth"), "--arch", "timm:test_resnet"],
                str(write_png(root / "tres.png", img)), img, model, lambda u: tf(u), layer=model.layer4)


@pytest.fixture(scope="module")
def timm_vit(root):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(2)
    model = timm.create_model("test_vit", num_classes=3).eval()
    _sharpen(model.get_classifier())
    save_for_hf(model, root / "timm_vit", safe_serialization=True)
    img = smooth_image(100, 130, seed=3)
    tf = _timm_transform(model)
    grid = 160 // 16

    def reshape(t):
        t = t[:, model.num_prefix_tokens:, :]
        return t.reshape(t.shape[0], grid, grid, t.shape[2]).permute(0, 3, 1, 2)

    return Case(["-m", str(root / "timm_vit")], str(write_png(root / "vit.png", img)), img, model, lambda u: tf(u),
                layer=model.blocks[-1].norm1, reshape=reshape)


@pytest.fixture(scope="module")
def tv_classifier(root):
    from torchvision import models

    torch.manual_seed(3)
    model = models.resnet18(weights=None, num_classes=4).eval()   # untrained small nets' features vanish
    _sharpen(model.fc, 3.0)
    torch.save(model.state_dict(), root / "resnet18.pth")
    img = smooth_image(150, 190, seed=4)
    preset = models.get_model_weights("resnet18").DEFAULT.transforms()
    return Case(["-m", str(root / "resnet18.pth"), "--arch", "torchvision:resnet18"],
                str(write_png(root / "tv.png", img)), img, model, lambda u: preset(u), layer=model.layer4)


@pytest.fixture(scope="module")
def tv_smooth(root):
    """ConvNeXt-T (GELU, no max-pooling): its gradient has no kinks that a last-bit difference between two exact
    resizes could cross (ReLU and max-pooling have them: a ResNet-18's IG moved 1% of its max between two)."""
    from torchvision import models

    torch.manual_seed(9)
    model = models.convnext_tiny(weights=None, num_classes=3).eval()
    torch.save(model.state_dict(), root / "convnext_tiny.pth")
    img = smooth_image(120, 140, seed=10)
    preset = models.get_model_weights("convnext_tiny").DEFAULT.transforms()
    return Case(["-m", str(root / "convnext_tiny.pth"), "--arch", "torchvision:convnext_tiny"],
                str(write_png(root / "tvc.png", img)), img, model, lambda u: preset(u), steps=4)


@pytest.fixture(scope="module")
def tv_segmenter(root):
    from torchvision import models

    torch.manual_seed(4)
    model = models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    torch.save(model.state_dict(), root / "lraspp.pth")
    img = smooth_image(40, 52, seed=5)
    preset = models.get_model_weights("lraspp_mobilenet_v3_large").DEFAULT.transforms()
    return Case(["-m", str(root / "lraspp.pth"), "--arch", "torchvision:lraspp_mobilenet_v3_large"],
                str(write_png(root / "seg.png", img)), img, model, lambda u: preset(u))


def _monai():
    return pytest.importorskip("monai", reason=MONAI_SKIP)


UNET_ARGS = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


@pytest.fixture(scope="module")
def monai_unet(root):
    _monai()
    from monai.networks.nets import UNet

    torch.manual_seed(5)
    model = UNet(spatial_dims=2, in_channels=1, out_channels=2, **UNET_ARGS).eval()
    torch.save(model.state_dict(), root / "unet.pth")
    img = smooth_image(64, 64, seed=6)[..., 0]
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:48] = 1
    mask_png = write_png(root / "unet_mask.png", mask * 255)
    return Case(["-m", str(root / "unet.pth"), "--arch", "monai:UNet", "--arch-args", json.dumps(UNET_ARGS)],
                str(write_png(root / "gray.png", img)), img, model, lambda u: u, layer=model.model,
                target=["--target", "mask", "--target-mask", str(mask_png), "--class", "1"], mask=mask, cls=1)


def _monai_state(root, name: str, args: dict, out: int, hw, seed: int, sharpen=None) -> Case:
    """A 2-D MONAI network saved as a state dict, with the CLI arguments that rebuild it (channels inferred)."""
    from monai.networks import nets

    torch.manual_seed(seed)
    model = getattr(nets, name)(spatial_dims=2, in_channels=1, out_channels=out, **args).eval()
    if sharpen:
        _sharpen(sharpen(model))
    torch.save(model.state_dict(), root / f"{name}.pth")
    img = smooth_image(*hw, seed=seed)[..., 0]
    return Case(["-m", str(root / f"{name}.pth"), "--arch", f"monai:{name}", "--arch-args", json.dumps(args)],
                str(write_png(root / f"{name}.png", img)), img, model, lambda u: u)


@pytest.fixture(scope="module")
def monai_densenet(root):
    _monai()
    return _monai_state(root, "DenseNet121", {"init_features": 8, "growth_rate": 4, "block_config": [1, 2, 1, 1]},
                        3, (48, 56), 6, sharpen=lambda m: m.class_layers.out)


@pytest.fixture(scope="module")
def monai_swin(root):
    _monai()
    return _monai_state(root, "SwinUNETR", {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                                            "window_size": 4}, 2, (64, 64), 7)


@pytest.fixture(scope="module")
def onnx_cnn(root):
    """A small CNN exported by torch.onnx.export (legacy exporter), batch axis dynamic."""
    import warnings

    pytest.importorskip("onnx2torch", reason=ONNX_SKIP)
    model = tiny_classifier(classes=3, seed=8)
    _sharpen(model.fc, 20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 32, 32), str(root / "cnn.onnx"), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    img = smooth_image(32, 32, seed=9)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)     # a whole model's defaults (README)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return Case(["-m", str(root / "cnn.onnx")], str(write_png(root / "cnn.png", img)), img, model,
                lambda u: (u - mean) / std)


ALL = ["timm_folder", "timm_state", "timm_vit", "tv_classifier", "tv_segmenter", "monai_unet", "monai_densenet",
       "monai_swin", "onnx_cnn"]
IG = ["timm_folder", "timm_vit", "tv_smooth", "monai_unet", "onnx_cnn"]
CAM = ["timm_folder", "timm_vit", "tv_classifier", "monai_unet", "onnx_cnn"]


def _run(cli, args) -> dict:
    r = cli(args)
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    return rec


# -- the acceptance: logits, IG, Grad-CAM --------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_logits_equal_the_model_called_directly(cli, request, name):
    case = request.getfixturevalue(name)
    rec = _run(cli, ["predict", *case.args, case.png])
    mine = rec["pred/logits"].astype(np.float64)
    with torch.no_grad():
        ref = case.logits(case.unit())
        if ref.ndim == 4 and tuple(ref.shape[-2:]) != case.image.shape[:2]:   # a segmenter's logits at image size
            ref = torch.nn.functional.interpolate(ref, size=case.image.shape[:2], mode="bilinear",
                                                  align_corners=False)
    ref = ref[0].double().numpy()
    assert mine.shape == ref.shape
    assert np.abs(mine - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), np.abs(mine - ref).max()
    fmt = rec["meta"]["model"]["format"]
    assert fmt == name.split("_")[0].replace("tv", "torchvision")


@pytest.mark.parametrize("name", IG)
def test_ig_equals_captum_through_the_same_preprocessing(cli, request, name):
    from captum.attr import IntegratedGradients

    case = request.getfixturevalue(name)
    # -b steps: every point in one pass, as Captum runs them. Chunked, the map differs in rounding only,
    # but on the MONAI UNet that rounding reaches 2e-3 of the map on some CPUs (oneDNN's batch-1 kernels:
    # per-point gradients 0.9% apart at near-ties; float32 itself is 1.8e-3 off float64 either way).
    rec = _run(cli, ["attribute", *case.args, "--steps", str(case.steps), "-b", str(case.steps), *case.target,
                     case.png])
    key = "attr/integrated_gradients/black"
    mine = rec[key][0].astype(np.float64)
    u = case.unit()
    if case.mask is not None:
        m = torch.from_numpy(case.mask).float()

        def forward(x):
            return (case.logits(x)[:, case.cls] * m).sum((1, 2))
        target = None
    else:
        forward = case.logits
        target = rec["meta"]["maps"][key]["targets"][0]["index"]
    ref = IntegratedGradients(forward).attribute(u, torch.zeros_like(u), target=target, n_steps=case.steps,
                                                 method="gausslegendre")[0].detach().double().numpy()
    assert mine.shape == ref.shape
    assert np.abs(ref).max() > 0
    assert np.abs(mine - ref).max() <= 1e-4 * np.abs(ref).max(), np.abs(mine - ref).max() / np.abs(ref).max()


@pytest.mark.parametrize("name", CAM)
def test_gradcam_at_last_equals_a_direct_gradcam_call(cli, request, name):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    case = request.getfixturevalue(name)
    rec = _run(cli, ["cam", *case.args, "--layer", "last", *case.target, case.png])
    key = "cam/gradcam/last"
    mine = rec[key][0].astype(np.float64)
    x = case.prepare(case.unit()).detach()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            out = self.m(t)
            return out["out"] if isinstance(out, dict) else out

    layer = case.layer
    if name == "onnx_cnn":            # the graph as onnx2torch converts it, called directly
        import onnx2torch

        net = onnx2torch.convert(case.args[1]).eval()
        layer = dict(net.named_modules())[rec["meta"]["maps"][key]["module"]]
    else:
        net = case.model
    if case.mask is not None:
        targets = [SemanticSegmentationTarget(case.cls, case.mask.astype(np.float32))]
    else:
        targets = [ClassifierOutputTarget(rec["meta"]["maps"][key]["targets"][0]["index"])]
    with GradCAM(Logits(net), [layer], reshape_transform=case.reshape) as cam:
        ref = cam(x, targets)[0].astype(np.float64)
    box = rec["meta"]["preprocessing"]["crop"]
    hw = case.image.shape[:2]
    ref_img = into_box(ref, hw, box) if box else ref
    inside = into_box(np.ones_like(ref), hw, box).astype(bool) if box else np.ones(hw, bool)
    assert ref_img.shape == mine.shape
    assert np.all(mine[~inside] == 0)
    # grad-cam min-max scales its map on the model grid; ours is raw, then resampled into the image's pixels,
    # which need not hit the grid's extremes: equal up to that affine scaling (a > 0), fitted on the pixels.
    a, b = np.polyfit(ref_img[inside], mine[inside], 1)
    assert a > 0 and np.ptp(ref_img[inside]) > 0.5
    assert np.abs(mine[inside] - (a * ref_img[inside] + b)).max() <= 1e-5 * np.ptp(mine[inside])


@pytest.mark.parametrize("name", ["timm_folder", "tv_classifier"])
def test_predict_equals_the_library_pipeline_on_a_pil_image(cli, request, name):
    """What a notebook does: the library's transform on a PIL image (uint8 resize), then the model."""
    from PIL import Image

    case = request.getfixturevalue(name)
    r = cli(["predict", "--json", *case.args, case.png])
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)
    labels = list(row["probabilities"])
    mine = np.array([row["probabilities"][k] for k in labels])
    with torch.no_grad():
        ref = torch.softmax(case.model(case.prepare(Image.fromarray(case.image))[None]), -1)[0].numpy()
    assert np.abs(mine - ref).max() <= 0.01, (mine, ref)
    assert mine.argmax() == ref.argmax()
    assert ref.max() > 0.5                      # a prediction that could have moved


def test_the_crop_is_the_libraries_own(cli, timm_folder, tv_classifier):
    """Both crop the image's centre (timm: short side 160 / 0.875 = 182, crop 160; torchvision: 256, 224)."""
    rec = _run(cli, ["predict", *timm_folder.args, timm_folder.png])
    pre = rec["meta"]["preprocessing"]
    assert pre["fit"] == "processor" and pre["size"] == [160, 160]
    h, w = timm_folder.image.shape[:2]                     # 120x150: resized to 182x227, cropped at (11, 34)
    rh, rw = 182, int(182 * w / h)
    top, left = round((rh - 160) / 2), round((rw - 160) / 2)
    want = [top * h / rh, left * w / rw, (top + 160) * h / rh, (left + 160) * w / rw]
    assert np.allclose(pre["crop"], want, atol=2e-3)
    assert pre["processor"]["class"] == "timm" and pre["processor"]["crop_pct"] == 0.875
    assert rec["meta"]["model"]["labels"] == ["a", "b", "c"]
    rec = _run(cli, ["predict", *tv_classifier.args, tv_classifier.png])
    pre = rec["meta"]["preprocessing"]
    assert pre["size"] == [224, 224] and pre["processor"]["resize_size"] == [256]
    assert pre["source"].startswith("torchvision ResNet18_Weights.")


def test_onnx_gives_the_ig_map_of_the_torch_model_it_came_from(cli, onnx_cnn, root):
    """The same map through the ONNX file and through the original module (saved whole, trusted)."""
    torch.save(onnx_cnn.model, root / "cnn_whole.pt")
    maps = []
    for args in (onnx_cnn.args, ["-m", str(root / "cnn_whole.pt"), "--trust-pickle"]):
        maps.append(_run(cli, ["attribute", *args, "--steps", str(STEPS), "-t", "0", onnx_cnn.png])
                    ["attr/integrated_gradients/black"].astype(np.float64))
    assert np.abs(maps[0]).max() > 0
    assert np.abs(maps[0] - maps[1]).max() <= 1e-4 * np.abs(maps[1]).max()


# -- end to end ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["timm_folder", "tv_classifier"])
def test_predict_attribute_cam_stats_render_in_one_pipe(cli, request, name, tmp_path):
    case = request.getfixturevalue(name)
    r = cli(["predict", *case.args, case.png])
    assert r.exit_code == 0, r.stderr
    for step in (["attribute", "--steps", "4"], ["cam", "--method", "gradcam"]):
        r = cli([*step, "-"], input=r.stdout)           # the model comes from the records
        assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert sorted(k for k in rec if "/" in k and k.split("/")[0] in ("attr", "cam")) == \
        ["attr/integrated_gradients/black", "cam/gradcam/last"]
    stats = cli(["stats", "-"], input=r.stdout)
    assert stats.exit_code == 0, stats.stderr
    rows = [json.loads(line) for line in stats.stdout.decode().splitlines()]
    assert {row["map"] for row in rows} == {"attr/integrated_gradients/black", "cam/gradcam/last"}
    figs = cli(["render", "-", "-o", str(tmp_path / "figs") + "/", "--dpi", "30"], input=r.stdout)
    assert figs.exit_code == 0, figs.stderr
    assert [p for p in figs.stdout.decode().split() if p.endswith(".png")]
