"""Model kinds behind -m: Hugging Face folders, smp state dicts (+ --arch), TorchScript,
pickles (only with --trust-pickle). Predictions are checked against the model run directly."""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import error_line
from helpers_models import (HF_LABELS, CreatesFile, rgb_image, save_tiny_convnext, save_tiny_vit, stream_records,
                            smp_unet_resnet18, tiny_classifier, tiny_segmenter, write_png)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _chw(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img.astype(np.float32) / 255.0)
    return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).contiguous()


def _imagenet(img: np.ndarray) -> torch.Tensor:
    x = _chw(img)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    arrays = {}
    for i in range(3):
        arrays[f"img{i}"] = rgb_image(32, 32, seed=i)
        write_png(folder / f"img{i}.png", arrays[f"img{i}"])
    return folder, arrays


@pytest.fixture(scope="module")
def image64(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img64")
    img = rgb_image(64, 64, seed=7)
    return write_png(folder / "scan.png", img), img


# -- Hugging Face ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["convnext", "vit"])
def test_hf_folder_json_lines_with_config_labels(cli, tmp_path, images, kind):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder, arrays = images
    model_dir = (save_tiny_convnext if kind == "convnext" else save_tiny_vit)(tmp_path / kind)
    labels = HF_LABELS if kind == "convnext" else HF_LABELS[:3]
    r = cli(["predict", "-m", model_dir, "--json", folder])
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(s) for s in r.output.splitlines()]
    assert [ln["id"] for ln in lines] == ["img0", "img1", "img2"]

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    proc = AutoImageProcessor.from_pretrained(model_dir)
    for ln in lines:
        x = proc(images=arrays[ln["id"]], do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            want = torch.softmax(model(x).logits, -1)[0].numpy()
        assert ln["task"] == "classification"
        assert list(ln["probabilities"]) == labels
        np.testing.assert_allclose([ln["probabilities"][lab] for lab in labels], want, atol=1e-5)
        order = np.argsort(-want)
        assert [t["label"] for t in ln["top3"]] == [labels[i] for i in order[:3]]
        np.testing.assert_allclose([t["prob"] for t in ln["top3"]], want[order[:3]], atol=1e-5)
        assert ln["predicted_class"] == labels[order[0]] and ln["predicted_index"] == int(order[0])
        assert ln["confidence"] == pytest.approx(float(want[order[0]]), abs=1e-5)


def test_hf_records_carry_labels_and_probabilities(cli, tmp_path, images):
    folder, _ = images
    model_dir = save_tiny_convnext(tmp_path / "cnx")
    r = cli(["predict", "-m", model_dir, folder / "img1.png"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["model"]["labels"] == HF_LABELS and rec["meta"]["task"] == "classification"
    assert rec["pred/probs"].shape == (4,) and rec["pred/probs"].sum() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(rec["pred/probs"], torch.softmax(torch.from_numpy(rec["pred/logits"]), 0), atol=1e-6)
    assert rec["meta"]["preprocessing"]["mean"] == pytest.approx([0.4, 0.5, 0.6])


# -- smp state dicts -------------------------------------------------------------------

@pytest.fixture(scope="module")
def effb5_state(tmp_path_factory):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.UnetPlusPlus(encoder_name="efficientnet-b5", encoder_weights=None, classes=1).eval()
    path = tmp_path_factory.mktemp("effb5") / "unetpp_b5.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_effb5_unetplusplus_state_dict_predicts_with_arch(cli, effb5_state, image64):
    path, model = effb5_state
    img_path, img = image64
    r = cli(["predict", "-m", path, "--arch", "unetplusplus:efficientnet-b5", img_path])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    with torch.no_grad():
        want = model(_imagenet(img))[0].numpy()
    assert rec["meta"]["task"] == "segmentation"
    assert rec["pred/logits"].shape == (1, 64, 64)
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(rec["pred/mask"], (1 / (1 + np.exp(-want[0])) > 0.5).astype(np.uint8))
    assert "efficientnet-b5" in rec["meta"]["model"]["arch"]


@pytest.fixture(scope="module")
def unet():
    return smp_unet_resnet18(classes=2)


def _wrapped(kind: str, sd: dict):
    if kind == "plain":
        return sd
    if kind == "state_dict":
        return {"state_dict": sd, "epoch": 7, "best_dice": 0.9}
    if kind == "model_state_dict+module":
        return {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer_state_dict": {"lr": 1e-3}}
    if kind == "module":
        return {f"module.{k}": v for k, v in sd.items()}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["plain", "state_dict", "model_state_dict+module", "module", "safetensors"])
def test_state_dict_layouts(cli, tmp_path, unet, image64, kind):
    img_path, img = image64
    sd = unet.state_dict()
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        path = tmp_path / "w.pth"
        torch.save(_wrapped(kind, sd), path)
    r = cli(["predict", "-m", path, "--arch", "unet:resnet18", img_path])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    with torch.no_grad():
        want = unet(_imagenet(img))[0].numpy()
    assert rec["pred/logits"].shape == (2, 64, 64)
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(rec["pred/mask"], want.argmax(0))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_one_channel_state_dict(cli, tmp_path, fmt):
    model = smp_unet_resnet18(classes=1, in_channels=1, seed=3)
    sd = model.state_dict()
    path = tmp_path / f"gray.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, path)
    gray = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    img_path = write_png(tmp_path / "g.png", gray)
    r = cli(["predict", "-m", path, "--arch", "unet:resnet18", "--mean", "0.5", "--std", "0.25", img_path])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    with torch.no_grad():
        want = model((_chw(gray) - 0.5) / 0.25)[0].numpy()
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-4, rtol=1e-4)
    assert rec["meta"]["preprocessing"]["channels"] == 1

    # Default normalisation: one value per input channel, and the record says which.
    r = cli(["predict", "-m", path, "--arch", "unet:resnet18", img_path])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    prep = rec["meta"]["preprocessing"]
    assert len(prep["mean"]) == len(prep["std"]) == 1
    with torch.no_grad():
        want = model((_chw(gray) - prep["mean"][0]) / prep["std"][0])[0].numpy()
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-4, rtol=1e-4)


def test_state_dict_that_does_not_fit_names_the_keys(cli, tmp_path, unet, image64):
    import segmentation_models_pytorch as smp

    img_path, _ = image64
    sd = unet.state_dict()
    path = tmp_path / "w.pth"
    torch.save(sd, path)

    r = cli(["predict", "-m", path, "--arch", "unet:resnet34", img_path])
    assert r.exit_code == 1
    line = error_line(r)
    missing = set(smp.Unet("resnet34", encoder_weights=None, classes=2).state_dict()) - set(sd)
    assert "missing" in line and any(k in line for k in missing)

    r = cli(["predict", "-m", path, "--arch", "unetplusplus:resnet18", img_path])
    line = error_line(r)
    unexpected = set(sd) - set(smp.UnetPlusPlus("resnet18", encoder_weights=None, classes=2).state_dict())
    assert "unexpected" in line and any(k in line for k in unexpected)

    r = cli(["predict", "-m", path, "--arch", "unet:resnet18", "--classes", "3", img_path])
    line = error_line(r)
    assert "segmentation_head.0.weight" in line


@pytest.mark.parametrize("arch, word", [("nosuch:resnet18", "architecture"), ("unet:nosuch-encoder", "encoder"),
                                        ("unet", "encoder")])
def test_unknown_arch_is_a_usage_error(cli, tmp_path, unet, image64, arch, word):
    path = tmp_path / "w.pth"
    torch.save(unet.state_dict(), path)
    r = cli(["predict", "-m", path, "--arch", arch, image64[0]])
    assert r.exit_code == 2
    assert word in error_line(r)


def test_state_dict_without_arch_asks_for_it(cli, tmp_path, unet, image64):
    path = tmp_path / "w.pth"
    torch.save(unet.state_dict(), path)
    r = cli(["predict", "-m", path, image64[0]])
    assert r.exit_code == 2
    assert "--arch" in error_line(r)


# -- pickles ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "inside a checkpoint"])
def test_code_running_pickle_is_refused_and_runs_nothing(cli, tmp_path, image64, unet, how):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save(CreatesFile(target), path)
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps(CreatesFile(target)))
    else:
        torch.save({"state_dict": unet.state_dict(), "extra": CreatesFile(target)}, path)
    for extra in ([], ["--arch", "unet:resnet18"]):
        r = cli(["predict", "-m", path, *extra, image64[0]])
        assert r.exit_code == 2
        assert "--trust-pickle" in error_line(r)
        assert not target.exists()
    with open(path, "rb") as f:  # the payload is real: unpickling it does create the file
        loaded = torch.load(f, weights_only=False) if how != "pickle.dump" else pickle.load(f)
    (loaded["extra"] if isinstance(loaded, dict) else loaded).close()
    assert target.exists()


def test_pickled_whole_module_needs_trust_pickle(cli, tmp_path, images):
    folder, arrays = images
    model = tiny_classifier(classes=3)
    path = tmp_path / "whole.pth"
    torch.save(model, path)
    r = cli(["predict", "-m", path, "--json", folder / "img0.png"])
    assert r.exit_code == 2
    assert "--trust-pickle" in error_line(r)

    r = cli(["predict", "-m", path, "--trust-pickle", "--json", folder])
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(s) for s in r.output.splitlines()]
    assert len(lines) == 3
    for ln in lines:
        with torch.no_grad():
            want = torch.softmax(model(_imagenet(arrays[ln["id"]])), -1)[0].numpy()
        assert ln["task"] == "classification"
        assert list(ln["probabilities"]) == ["class_0", "class_1", "class_2"]
        np.testing.assert_allclose(list(ln["probabilities"].values()), want, atol=1e-5)


# -- TorchScript -------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_classifier_task_inferred(cli, tmp_path, images, how):
    folder, arrays = images
    model = tiny_classifier(classes=5, seed=1)
    ts = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.zeros(1, 3, 32, 32))
    path = tmp_path / "cls.pt"
    ts.save(str(path))
    r = cli(["predict", "-m", path, folder / "img2.png"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["task"] == "classification"
    assert rec["meta"]["model"]["format"] == "torchscript"
    with torch.no_grad():
        want = model(_imagenet(arrays["img2"]))[0].numpy()
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-5)
    assert rec["meta"]["prediction"]["index"] == int(want.argmax())


def test_torchscript_loading_prints_no_deprecation_warning(tmp_path, image64):
    """torch 2.14 warns that jit.load is deprecated: the user cannot act on it, so it stays off stderr.

    A real process, because pytest records warnings before they would reach the runner's stderr.
    """
    import subprocess
    import sys

    img_path, _ = image64
    path = tmp_path / "seg.pt"
    torch.jit.trace(tiny_segmenter(classes=2, seed=2), torch.zeros(1, 3, 64, 64)).save(str(path))
    proc = subprocess.run([sys.executable, "-m", "xaicli", "predict", "-m", str(path), str(img_path)],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout, "no record written"
    assert b"Warning" not in proc.stderr, proc.stderr.decode()


def test_read_only_image_arrays_are_taken_without_a_warning():
    """np.asarray(PIL image) is read-only; torch.from_numpy warns once per process on such arrays, hence a
    fresh process for the check."""
    import subprocess
    import sys

    script = ("import warnings, numpy as np\n"
              "from xaicli.models.loader import load_model\n"
              "ad = load_model('builtin:shapes-seg', device='cpu')\n"
              "a = np.full((40, 50, 3), 255, np.uint8); a.flags.writeable = False\n"
              "with warnings.catch_warnings(record=True) as seen:\n"
              "    warnings.simplefilter('always')\n"
              "    u = ad.image_to_unit(a)\n"
              "print(tuple(u.shape), float(u.min()), [str(w.message)[:60] for w in seen])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1, 3, 40, 50) 1.0 []", proc.stdout


def test_torchscript_segmenter_task_inferred(cli, tmp_path, image64):
    img_path, img = image64
    model = tiny_segmenter(classes=2, seed=2)
    path = tmp_path / "seg.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 64, 64)).save(str(path))
    r = cli(["predict", "-m", path, img_path])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["task"] == "segmentation"
    with torch.no_grad():
        want = model(_imagenet(img))[0].numpy()
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-5)
    np.testing.assert_array_equal(rec["pred/mask"], want.argmax(0))


# -- devices -------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_without_cuda_is_a_usage_error(cli, image64):
    r = cli(["predict", "-m", "builtin:shapes-seg", "--device", "cuda", image64[0]])
    assert r.exit_code == 2
    assert "cuda" in error_line(r).lower()


def test_a_cuda_device_turns_tf32_off(monkeypatch):
    """TF32 would put IG's completeness delta at ~1% on a GPU (see full_float32); CPU runs leave the flags alone."""
    from xaicli.models.device import resolve_device

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul   # matmul's flags are not plain attributes
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        assert resolve_device("cpu").type == "cpu"
        assert cudnn.allow_tf32 and matmul.allow_tf32
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setenv("XAI_TF32", "1")                                # the user's opt-in keeps TF32
        assert resolve_device("cuda:0").type == "cuda"
        assert cudnn.allow_tf32 and matmul.allow_tf32
        monkeypatch.delenv("XAI_TF32")
        assert resolve_device("cuda:0").type == "cuda"
        assert not cudnn.allow_tf32 and not matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_a_gpu_index_past_the_last_names_the_valid_ones(monkeypatch):
    """Seen on a one-GPU host: the hint printed '{torch.cuda.device_count() - 1}' unformatted."""
    from xaicli.errors import XaiUsageError
    from xaicli.models.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(XaiUsageError, match=r"only 2 CUDA device\(s\) here; pick cuda:0\.\.cuda:1$"):
        resolve_device("cuda:2")


def test_unknown_device_is_a_usage_error(cli, image64):
    r = cli(["predict", "-m", "builtin:shapes-seg", "--device", "tpu", image64[0]])
    assert r.exit_code == 2
    assert "tpu" in error_line(r)


def test_a_fixed_chunk_on_cuda_asks_for_deterministic_kernels(monkeypatch, caplog):
    """`-b` promises bit-identical reruns; on CUDA that needs deterministic kernels (atomics
    otherwise: 5e-10 apart on an H200). Only inside the block, only for CUDA, only with -b."""
    import torch.utils.deterministic as det

    from xaicli.models.device import reproducible

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with reproducible("cpu", True):
        assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with reproducible("cuda", False):
        assert not torch.are_deterministic_algorithms_enabled()
    with caplog.at_level(logging.WARNING, logger="xai"), pytest.warns(UserWarning, match="^something else$"):
        with reproducible("auto", True):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()   # an op without one warns, not fails
            assert not det.fill_uninitialized_memory
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            for op in ("b_backward_out_cuda", "a_backward_out_cuda", "b_backward_out_cuda"):   # torch's wording
                warnings.warn(f"{op} does not have a deterministic implementation, but you set "
                              "'torch.use_deterministic_algorithms(True, warn_only=True)'.", UserWarning)
            warnings.warn("something else", UserWarning)                # not ours to rewrite: shown as it was
    assert not torch.are_deterministic_algorithms_enabled() and det.fill_uninitialized_memory
    assert [r.getMessage() for r in caplog.records] == [
        "no deterministic CUDA kernel for a_backward_out_cuda, b_backward_out_cuda: reruns with -b may differ "
        "in the last bits"]


def test_bfloat16_counts_as_fast_on_cuda_and_on_amx_cpus_only(monkeypatch):
    """ScoreCAM's screen follows this: the hardware decides, so maps do not depend on load."""
    from xaicli.models.device import fast_bfloat16

    assert fast_bfloat16(torch.device("cuda")) and not fast_bfloat16(torch.device("mps"))
    for amx in (True, False):   # raising=False: older torch releases lack the helper
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert fast_bfloat16(torch.device("cpu")) is amx

    def fails():
        raise RuntimeError("cannot tell")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", fails)
    assert fast_bfloat16(torch.device("cpu")) is False
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")    # a torch without the helper
    assert fast_bfloat16(torch.device("cpu")) is False


@pytest.mark.parametrize("hw,size", [((40, 36), (32, 32)), ((64, 50), (32, 64)), ((97, 131), (64, 48))])
def test_the_deterministic_resize_is_torchs_antialiased_resize(hw, size):
    """Under deterministic algorithms the shrink runs as matrix products (torch's CUDA kernel
    has no deterministic backward): values and gradients must be torch's own."""
    import torch.nn.functional as F

    from xaicli.models.adapter import resize

    x = torch.rand(2, 3, *hw, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    torch.use_deterministic_algorithms(True)
    try:
        got = resize(x, size)
    finally:
        torch.use_deterministic_algorithms(False)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)
    g = torch.rand_like(ref)
    (want,), (have,) = torch.autograd.grad(ref, x, g), torch.autograd.grad(got, x, g)
    torch.testing.assert_close(have, want, atol=1e-12, rtol=1e-12)


def test_image_sides_round_to_the_nearest_multiple_halves_up():
    from xaicli.models.preprocess import Preprocessing

    prep = Preprocessing(channels=3, multiple=32)
    sides = [15, 47, 48, 79, 80, 111, 112, 144, 208]
    assert [prep.input_size((s, s))[0] for s in sides] == [32, 32, 64, 64, 96, 96, 128, 160, 224]
