"""Hugging Face models see what their own image processor makes of the image (issue 16 §1).

References are transformers itself: `AutoImageProcessor.from_pretrained(dir)` (both
backends) + the model for predictions; Captum IG and a direct grad-cam call on the
processor's own (float) output for maps. Models are tiny and untrained, with their
classifier weights scaled up so that logits move when the input does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers_models import into_box, smooth_image, stream_records, write_png

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(300, 480), (180, 256), (96, 96)]


def _sharpen_head(model, scale: float = 40.0):
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    return model


def convnext_folder(path, processor, seed=0):
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4, image_size=224)
    torch.manual_seed(seed)
    _sharpen_head(ConvNextForImageClassification(cfg).eval()).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def vit_folder(path, processor, seed=0):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=224, patch_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=4)
    torch.manual_seed(seed)
    _sharpen_head(ViTForImageClassification(cfg).eval()).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def swin_folder(path, processor, seed=0):
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(image_size=224, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=7,
                     num_labels=4)
    torch.manual_seed(seed)
    _sharpen_head(SwinForImageClassification(cfg).eval()).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def processors():
    from transformers import (BeitImageProcessor, ConvNextImageProcessor, DeiTImageProcessor,
                              EfficientNetImageProcessor, ViTImageProcessor)

    return {
        "convnext-crop": (convnext_folder, ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)),
        "convnext-noresize": (convnext_folder, ConvNextImageProcessor(do_resize=False)),
        "vit": (vit_folder, ViTImageProcessor(size={"height": 224, "width": 224})),
        "swin": (swin_folder, ViTImageProcessor(size={"height": 224, "width": 224}, resample=3)),
        "deit": (convnext_folder, DeiTImageProcessor(size={"height": 256, "width": 256},
                                                     crop_size={"height": 224, "width": 224})),
        "beit": (convnext_folder, BeitImageProcessor(size={"height": 240, "width": 240}, do_center_crop=True,
                                                     crop_size={"height": 224, "width": 224})),
        "efficientnet": (convnext_folder, EfficientNetImageProcessor(size={"height": 224, "width": 224},
                                                                     rescale_offset=True, include_top=False)),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfproc")
    return {name: build(root / name, proc) for name, (build, proc) in processors().items()}


def reference_probs(folder, img: np.ndarray, backend: str) -> np.ndarray:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    proc = AutoImageProcessor.from_pretrained(folder, backend=backend)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**proc(images=img, return_tensors="pt")).logits.softmax(-1)[0].numpy()


def xai_probs(cli, folder, png, *extra) -> np.ndarray:
    r = cli(["predict", "-m", folder, "--json", png, *extra])
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)
    return np.array([row["probabilities"][f"LABEL_{i}"] for i in range(4)])


@pytest.mark.parametrize("name", list(processors()))
@pytest.mark.parametrize("hw", SHAPES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_predict_equals_the_models_own_processor(cli, folders, tmp_path, name, hw):
    img = smooth_image(*hw, seed=hw[0])
    png = write_png(tmp_path / "img.png", img)
    mine = xai_probs(cli, folders[name], png)
    for backend in ("torchvision", "pil"):
        ref = reference_probs(folders[name], img, backend)
        assert np.abs(mine - ref).max() <= 0.01, (backend, mine, ref)
        assert mine.argmax() == ref.argmax()


def test_the_check_sees_the_crop(cli, folders, tmp_path):
    """The test above can fail: squashing the whole image (the old behaviour) misses the reference."""
    img = smooth_image(300, 480, seed=7)
    png = write_png(tmp_path / "img.png", img)
    ref = reference_probs(folders["convnext-crop"], img, "torchvision")
    squashed = xai_probs(cli, folders["convnext-crop"], png, "--fit", "squash")
    assert np.abs(squashed - ref).max() > 0.01


def test_model_input_equals_the_processors_pixel_values(folders):
    """The tensor the model gets, against the processor's own uint8 pipeline: within its rounding."""
    from transformers import AutoImageProcessor

    from xaicli.models.loader import load_model

    for name in ("convnext-crop", "deit", "efficientnet"):
        ad = load_model(str(folders[name]), device="cpu")
        proc = AutoImageProcessor.from_pretrained(folders[name])
        for hw in SHAPES:
            img = smooth_image(*hw, seed=3)
            ref = proc(images=img, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                mine = ad.prepare(img)
            assert mine.shape == ref.shape
            std = np.array(getattr(proc, "image_std", [1, 1, 1]))
            # uint8 resize kernels round (fixed-point weights, then to whole levels): 1.5 grey levels
            assert (mine - ref).abs().max() <= 1.5 / 255 / std.min() * (2 if name == "efficientnet" else 1), name


def test_crop_box_is_stored_and_matches_the_processors_arithmetic(cli, folders, tmp_path):
    """ConvNeXt, shortest_edge 224, crop_pct 0.875, 300x480: resize to 256x409, crop 224 at (16, 92)."""
    png = write_png(tmp_path / "img.png", smooth_image(300, 480))
    r = cli(["predict", "-m", folders["convnext-crop"], png])
    (rec,) = stream_records(r.stdout)
    pre = rec["meta"]["preprocessing"]
    assert pre["fit"] == "processor" and pre["size"] == [224, 224]
    want = [16 * 300 / 256, 92 * 480 / 409, 240 * 300 / 256, 316 * 480 / 409]
    assert np.allclose(pre["crop"], want, atol=2e-3)
    assert pre["processor"]["class"] == "ConvNextImageProcessor" and pre["processor"]["crop_pct"] == 0.875
    for name in ("vit", "convnext-noresize"):           # the whole image reaches the model: no box
        r = cli(["predict", "-m", folders[name], png])
        assert stream_records(r.stdout)[0]["meta"]["preprocessing"]["crop"] is None


def _forward_through_processor(folder):
    """model(processor(u)) on [0, 1] pixels, differentiable: the processor called on float tensors."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    proc = AutoImageProcessor.from_pretrained(folder, backend="torchvision")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()

    def f(u):
        pv = proc.preprocess(images=list(u * 255), return_tensors=None)["pixel_values"]
        return model(pixel_values=torch.stack(list(pv))).logits
    return f, proc, model


def _map_of(cli, folder, png, key, *extra):
    """`xai attribute` of one image: its record, the first target's map under `key`, that target's index."""
    r = cli(["attribute", "-m", folder, *extra, png])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    return rec, rec[key][0], rec["meta"]["maps"][key]["targets"][0]["index"]


@pytest.mark.parametrize("name", ["convnext-crop", "vit", "convnext-noresize"])
def test_ig_equals_captum_through_the_processor(cli, folders, tmp_path, name):
    from captum.attr import IntegratedGradients

    img = smooth_image(150, 240, seed=2)
    png = write_png(tmp_path / "img.png", img)
    rec, mine, target = _map_of(cli, folders[name], png, "attr/integrated_gradients/black", "--steps", "16")
    f, _, _ = _forward_through_processor(folders[name])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    ref = IntegratedGradients(f).attribute(x, torch.zeros_like(x), target=target, n_steps=16,
                                           method="gausslegendre")[0].detach().numpy()
    assert np.abs(mine - ref).max() <= 1e-4 * np.abs(ref).max()
    if name == "convnext-crop":
        top, left, bottom, right = rec["meta"]["preprocessing"]["crop"]
        reach = 3       # a bicubic kernel's reach, in image pixels, at this scale
        assert np.all(mine[:, :int(top) - reach] == 0) and np.all(mine[:, int(bottom) + reach:] == 0)
        assert np.all(mine[:, :, :int(left) - reach] == 0) and np.all(mine[:, :, int(right) + reach:] == 0)
        assert np.abs(mine[:, int(top) + reach:int(bottom) - reach]).max() > 0


def test_black_and_saturated_pixels_keep_the_processors_gradient(cli, folders, tmp_path):
    """0 and 255 are real pixel values (a black background, saturated white, a black baseline):
    there the gradient is the processor's own, as inside the range. torch's clamp, which stands
    for the uint8 pipeline's saturation, gives 0 at its bounds: saliency went blank on those
    pixels, and IG's integrand from a black baseline was 0 at α = 0 (0.5–0.7% map error at 33
    points of the adaptive trapezoid on a tiny ConvNeXt)."""
    img = smooth_image(96, 96, seed=3)
    img[:30, :40] = 0
    img[60:, 50:] = 255
    png = write_png(tmp_path / "img.png", img)
    name = "convnext-noresize"          # no resize: no overshoot past 255, where the clamp rightly cuts
    _, mine, target = _map_of(cli, folders[name], png, "attr/saliency/none", "-M", "saliency")
    f, _, _ = _forward_through_processor(folders[name])
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x)[0, target], x)
    ref = grad.abs()[0].numpy()
    assert np.abs(mine - ref).max() <= 1e-4 * ref.max()
    assert np.abs(mine[:, :30, :40]).min() > 0 and np.abs(mine[:, 60:, 50:]).min() > 0

    black = write_png(tmp_path / "black.png", np.zeros_like(img))
    assert np.abs(_map_of(cli, folders[name], black, "attr/saliency/none", "-M", "saliency")[1]).max() > 0


def test_cam_equals_gradcam_on_the_processor_tensor_mapped_into_the_crop(cli, folders, tmp_path):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    img = smooth_image(300, 480, seed=4)
    png = write_png(tmp_path / "img.png", img)
    r = cli(["cam", "-m", folders["convnext-crop"], png])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    mine = rec["cam/gradcam/last"][0]
    box = rec["meta"]["preprocessing"]["crop"]
    target = rec["meta"]["maps"]["cam/gradcam/last"]["targets"][0]["index"]

    f, proc, model = _forward_through_processor(folders["convnext-crop"])
    x = torch.stack(list(proc.preprocess(images=[torch.from_numpy(img).permute(2, 0, 1).float()],
                                         return_tensors=None)["pixel_values"]))

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(pixel_values=t).logits

    with GradCAM(Logits(model), [model.convnext.encoder.stages[-1]]) as cam:
        ref = cam(x, [ClassifierOutputTarget(target)])[0]        # min-max scaled, 224x224
    ref_img = into_box(ref, img.shape[:2], box)
    inside = ref_img > 0
    scaled = (mine - mine[inside].min()) / (mine[inside].max() - mine[inside].min())
    assert np.all(mine[~into_box(np.ones_like(ref), img.shape[:2], box).astype(bool)] == 0)
    assert np.abs(scaled[inside] - ref_img[inside]).max() <= 1e-4


def test_mean_std_options_replace_the_processors(cli, folders, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    img = smooth_image(180, 256, seed=5)
    png = write_png(tmp_path / "img.png", img)
    mine = xai_probs(cli, folders["convnext-crop"], png, "--mean", "0.3,0.4,0.5", "--std", "0.2")
    proc = AutoImageProcessor.from_pretrained(folders["convnext-crop"])
    model = AutoModelForImageClassification.from_pretrained(folders["convnext-crop"]).eval()
    with torch.no_grad():
        pv = proc(images=img, image_mean=[0.3, 0.4, 0.5], image_std=[0.2] * 3, return_tensors="pt")["pixel_values"]
        ref = model(pixel_values=pv).logits.softmax(-1)[0].numpy()
    assert np.abs(mine - ref).max() <= 0.01


@pytest.mark.parametrize("name", ["convnext-crop", "vit", "deit"])
def test_both_fast_forms_equal_the_processor_with_gradients(folders, name):
    """The geometric step runs as torch's resize + crop or as two matrix products (always under
    deterministic algorithms, as attribute -b on CUDA): each equals the processor's own call, in
    values and in the gradient to the image."""
    from xaicli.models.loader import load_model

    ad = load_model(str(folders[name]), device="cpu")
    pipe = ad.preprocessing.pipeline
    img = smooth_image(300, 480, seed=6)
    unit = ad.image_to_unit(img)
    plan = pipe._plan((300, 480), unit.device, unit.dtype)
    assert plan is not None

    def run(fn):
        u = unit.clone().requires_grad_(True)
        out = fn(u)
        (g,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum(), u)
        return out.detach(), g

    ref, g_ref = run(lambda u: torch.stack(list(pipe.processor.preprocess(
        images=list(u * 255), do_rescale=False, do_normalize=False, return_tensors=None)["pixel_values"])))
    for deterministic in (True, False):
        saved = plan.use_matrices
        plan.use_matrices = deterministic
        try:
            out, g = run(lambda u: pipe.geometric(u))
        finally:
            plan.use_matrices = saved
        assert (out - ref).abs().max() <= 1e-3                       # 8-bit units
        assert (g - g_ref).abs().max() <= 1e-4 * g_ref.abs().max()        # float32 sums in another order


@pytest.mark.parametrize("args, says", [
    (["--fit", "crop"], "--fit 'crop'"),
    (["--fit", "processor", "--size", "64"], "--size"),
])
def test_bad_fit_options_are_one_line(cli, folders, tmp_path, args, says):
    from conftest import error_line

    png = write_png(tmp_path / "img.png", smooth_image(64, 64))
    line = error_line(cli(["predict", "-m", folders["vit"], "--json", png, *args]), 2)
    assert says in line


def test_fit_processor_on_a_model_without_processor(cli, tmp_path):
    from conftest import error_line

    png = write_png(tmp_path / "img.png", smooth_image(64, 64))
    line = error_line(cli(["predict", "-m", "builtin:shapes-seg", "--json", png, "--fit", "processor"]), 2)
    assert "no image processor" in line


def test_records_keep_their_fit_downstream(cli, folders, tmp_path):
    """attribute without -m loads the model the way the records' images were fitted; with -m and
    another --fit it refuses, since the maps would explain another input than the prediction."""
    from conftest import error_line

    png = write_png(tmp_path / "img.png", smooth_image(150, 240, seed=8))
    for fit in ("squash", "processor"):
        r = cli(["predict", "-m", folders["convnext-crop"], "--fit", fit, png])
        assert r.exit_code == 0, r.stderr
        r2 = cli(["cam"], input=r.stdout)
        assert r2.exit_code == 0, r2.stderr
        (rec,) = stream_records(r2.stdout)
        assert rec["meta"]["preprocessing"]["fit"] == fit
        assert (rec["meta"]["preprocessing"]["crop"] is None) == (fit == "squash")
    other = "squash" if fit == "processor" else "processor"
    line = error_line(cli(["cam", "-m", folders["convnext-crop"], "--fit", other], input=r.stdout), 1)
    assert f"--fit {fit}" in line
    line = error_line(cli(["cam", "--fit", other], input=r.stdout), 2)
    assert "--fit" in line and "-m" in line
