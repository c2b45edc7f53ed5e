"""Model files that do not fit: each gives one line naming the problem and the fix (never an
internal error), and models that do fit load whole (sharded checkpoints) or not at all
(a backbone without its head)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import error_line
from helpers_models import (rgb_image, save_tiny_convnext, save_tiny_vit, stream_records, tiny_classifier,
                            tiny_segmenter, write_png)
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def img32(tmp_path_factory):
    return write_png(tmp_path_factory.mktemp("img") / "rgb32.png", rgb_image(32, 32, seed=3))


@pytest.fixture(scope="module")
def img64(tmp_path_factory):
    return write_png(tmp_path_factory.mktemp("img") / "rgb64.png", rgb_image(64, 64, seed=4))


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    return save_tiny_convnext(tmp_path_factory.mktemp("cnx") / "convnext")


@pytest.fixture(scope="module")
def smp_dir(tmp_path_factory):
    """A small smp save_pretrained folder (3 classes, 3 input channels)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("smp") / "unet"
    smp.Unet("tu-mobilenetv3_small_050", encoder_weights=None, decoder_channels=(16, 8, 8, 4, 4),
             classes=3).eval().save_pretrained(folder)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- 1. sharded Hugging Face checkpoints ----------------------------------------------

def test_a_sharded_hf_checkpoint_loads_and_its_sha_covers_every_shard(cli, tmp_path, convnext, img32):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from xaicli.errors import XaiError
    from xaicli.models.formats.common import weights_sha as _weights_sha

    sharded = tmp_path / "sharded"
    AutoModelForImageClassification.from_pretrained(convnext).save_pretrained(sharded, max_shard_size="5KB")
    AutoImageProcessor.from_pretrained(convnext).save_pretrained(sharded)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (sharded / "model.safetensors").exists()

    whole = cli(["predict", "-m", convnext, img32])
    r = cli(["predict", "-m", sharded, img32])
    assert r.exit_code == 0, r.stderr
    (rec,), (ref,) = stream_records(r.stdout), stream_records(whole.stdout)
    np.testing.assert_allclose(rec["pred/logits"], ref["pred/logits"], atol=1e-6)

    index = sharded / "model.safetensors.index.json"
    want = hashlib.sha256(index.read_bytes())
    for s in shards:
        want.update(b"\0" + s.name.encode() + b"\0" + hashlib.sha256(s.read_bytes()).hexdigest().encode())
    assert rec["meta"]["model"]["sha256"] == want.hexdigest()

    before = _weights_sha(sharded)
    data = bytearray(shards[-1].read_bytes())
    data[-1] ^= 1
    shards[-1].write_bytes(bytes(data))
    assert _weights_sha(sharded) != before          # any shard's bytes count

    shards[0].unlink()
    with pytest.raises(XaiError, match=f"shard {shards[0].name}.*copy every shard"):
        _weights_sha(sharded)


# -- 2. a backbone without its classifier -----------------------------------------------

def test_a_backbone_without_its_head_is_refused(cli, tmp_path, img32):
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    cfg = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    torch.manual_seed(0)
    ConvNextModel(cfg).save_pretrained(tmp_path / "backbone")
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path / "backbone")
    r = cli(["predict", "-m", tmp_path / "backbone", "--json", img32])
    line = error_line(r, 1)
    assert "classifier.weight" in line and "save_pretrained" in line and "random" in line


# -- 3. --trust-pickle with the model from records ------------------------------------

def test_trust_pickle_reaches_a_model_named_bystream_records(cli, tmp_path, img32):
    path = tmp_path / "whole.pth"
    torch.save(tiny_classifier(classes=3), path)
    r = cli(["predict", "-m", path, "--trust-pickle", "-o", tmp_path / "rec.tar", img32])
    assert r.exit_code == 0, r.stderr

    r = cli(["attribute", "-M", "saliency", tmp_path / "rec.tar"])
    assert "--trust-pickle" in error_line(r, 2)        # records never grant it themselves
    r = cli(["attribute", "-M", "saliency", "--trust-pickle", tmp_path / "rec.tar"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert any(k.startswith("attr/saliency") for k in rec)


# -- 4. the stored absolute path comes before the spec as typed --------------------------

def test_records_reload_their_own_model_from_another_folder(cli, tmp_path, img32, monkeypatch):
    from xaicli.models.loader import load_for_record

    (tmp_path / "a" / "m").mkdir(parents=True)
    (tmp_path / "b" / "m").mkdir(parents=True)
    save_tiny_convnext(tmp_path / "a" / "m" / "cnx", seed=1)
    save_tiny_convnext(tmp_path / "b" / "m" / "cnx", seed=2)   # same relative name, other weights
    monkeypatch.chdir(tmp_path / "a")
    r = cli(["predict", "-m", "m/cnx", img32])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    meta = rec["meta"]["model"]
    assert meta["spec"] == "m/cnx"

    monkeypatch.chdir(tmp_path / "b")
    adapter = load_for_record(meta, "cpu")
    assert adapter.sha256 == meta["sha256"]
    assert adapter.info["path"] == str((tmp_path / "a" / "m" / "cnx").resolve())
    assert adapter.info["spec"] == "m/cnx"

    (tmp_path / "rec.tar").write_bytes(r.stdout)             # and through a command without -m
    r = cli(["attribute", "-M", "saliency", tmp_path / "rec.tar"])
    assert r.exit_code == 0, r.stderr


# -- 5. files that are not models --------------------------------------------------------

@pytest.mark.parametrize("which", ["config.json", "png", "text"])
def test_a_file_that_is_not_a_model_is_not_called_a_pickle(cli, tmp_path, convnext, img32, which):
    if which == "config.json":
        path = convnext / "config.json"
    elif which == "png":
        path = img32
    else:
        path = tmp_path / "notes.txt"
        path.write_text("hello\n")
    r = cli(["predict", "-m", path, img32])
    line = error_line(r, 1)
    assert "pickle" not in line and "not a model file" in line and "-m takes" in line
    if which == "config.json":
        assert f"pass -m {convnext}" in line


# -- 6. CAM on TorchScript ------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--list-layers"]])
def test_cam_on_torchscript_says_it_needs_hooks(cli, tmp_path, img32, extra):
    path = tmp_path / "seg.pt"
    torch.jit.trace(tiny_segmenter(classes=2), torch.zeros(1, 3, 32, 32)).save(str(path))
    r = cli(["cam", "-m", path, *extra, *([] if extra else [img32])])
    line = error_line(r, 2)
    assert "TorchScript" in line and "hooks" in line and "--arch" in line


# -- 7. channels -------------------------------------------------------------------------------

def test_an_rgb_image_for_a_four_channel_model(cli, tmp_path, img32):
    torch.manual_seed(0)
    path = tmp_path / "four.pt"
    from helpers_models import TinySegmenter

    torch.jit.trace(TinySegmenter(classes=2, channels=4).eval(), torch.zeros(1, 4, 32, 32)).save(str(path))
    line = error_line(cli(["predict", "-m", path, img32]), 1)
    assert "3-channel image" in line and "4-channel model" in line


def test_a_one_channel_hf_model_under_an_rgb_processor(cli, tmp_path, img32):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    cfg = ConvNextConfig(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    torch.manual_seed(0)
    model = ConvNextForImageClassification(cfg).eval()
    model.save_pretrained(tmp_path / "gray")
    # 3 ImageNet means; crop_pct 1: the 32x32 image reaches the model as it is
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path / "gray")
    line = error_line(cli(["predict", "-m", tmp_path / "gray", img32]), 1)
    assert "1-channel model" in line and "--mean 0.5 --std 0.5" in line

    r = cli(["predict", "-m", tmp_path / "gray", "--mean", "0.5", "--std", "0.5", img32])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    img = rgb_image(32, 32, seed=3).astype(np.float32) / 255
    gray = torch.from_numpy(img @ np.array([0.299, 0.587, 0.114], np.float32))[None, None]
    with torch.no_grad():
        want = model((gray - 0.5) / 0.5).logits[0].numpy()
    np.testing.assert_allclose(rec["pred/logits"], want, atol=1e-4)


# -- 8. normalisation values ---------------------------------------------------------------------

@pytest.mark.parametrize("opt, value", [("--std", "0"), ("--std", "-0.2"), ("--std", "0.2,0,0.2"),
                                        ("--mean", "nan"), ("--std", "inf"), ("--mean", "0.5,-inf,0.5")])
def test_normalisation_must_be_finite_and_std_positive(cli, convnext, img32, opt, value):
    line = error_line(cli(["predict", "-m", convnext, opt, value, "--json", img32]), 2)
    assert opt in line


def test_the_loader_api_checks_normalisation_too(convnext):
    from xaicli.errors import XaiUsageError
    from xaicli.models.loader import LoadOptions, load_model

    with pytest.raises(XaiUsageError, match="> 0"):
        load_model(str(convnext), LoadOptions(std=(0.0,)), "cpu")
    with pytest.raises(XaiUsageError, match="finite"):
        load_model(str(convnext), LoadOptions(mean=(math.nan,)), "cpu")


# -- 9. input sizes a model cannot take ---------------------------------------------------------

class _Fixed(nn.Module):
    """flatten + Linear: takes only the input size it was built for."""

    def __init__(self, size: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * size * size, 3)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("cmd", ["predict", "cam"])
def test_a_vit_at_another_size_names_the_size(cli, tmp_path, img32, cmd):
    vit = save_tiny_vit(tmp_path / "vit", size=32)
    line = error_line(cli([cmd, "-m", vit, "--size", "16", img32]), 1)
    assert "16x16" in line and "--size 32" in line


def test_a_fixed_size_torchscript_model_names_the_size(cli, tmp_path, img32):
    torch.manual_seed(0)
    path = tmp_path / "fixed.pt"
    torch.jit.trace(_Fixed(64).eval(), torch.zeros(1, 3, 64, 64)).save(str(path))
    r = cli(["predict", "-m", path, "--size", "64", img32])     # the size it takes: fine
    assert r.exit_code == 0, r.stderr
    line = error_line(cli(["predict", "-m", path, img32]), 1)
    assert "32x32" in line and "--size 64" in line


def test_only_input_failures_become_size_errors():
    """A bug (TypeError) in a model's forward is not dressed up as a size problem; OOM passes through."""
    from xaicli.errors import XaiError
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    class Raises(nn.Module):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def forward(self, x):
            raise self.exc

    def adapter(exc):
        return ModelAdapter(LogitsModule(Raises(exc)), "classification", ["a"], Preprocessing(),
                            torch.device("cpu"), {"spec": "m"}, model_size=(8, 8))

    with pytest.raises(XaiError, match=r"failed on a 4x4 input \(RuntimeError: shapes\).*--size 8"):
        adapter(RuntimeError("shapes")).forward(torch.zeros(1, 3, 4, 4))
    with pytest.raises(TypeError):
        adapter(TypeError("a bug")).forward(torch.zeros(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        adapter(RuntimeError("CUDA out of memory. Tried to allocate")).forward(torch.zeros(1, 3, 4, 4))


# -- 10. CUDA device strings -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cuda:x", "cuda:-1", "cuda:0x", "cuda:"])
def test_a_malformed_cuda_index_is_a_usage_error(cli, monkeypatch, convnext, img32, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    line = error_line(cli(["predict", "-m", convnext, "--device", name, img32]), 2)
    assert name in line and "cuda:0..cuda:1" in line


# -- 11. the xai.json sidecar ------------------------------------------------------------------------

@pytest.mark.parametrize("side, words", [
    ({"labels": ["a", "b"]}, ['"labels"', "2 names", "3 classes"]),
    ({"labels": "a,b,c"}, ['"labels"', "list"]),
    ({"labels": ["a", "b", 3]}, ['"labels"', "list"]),
    ({"size": [50, 50]}, ['"size"', "divisible by 32", "[64, 64]"]),
    ({"size": "64"}, ['"size"', "[H, W]"]),
    ({"size": [64, 0]}, ['"size"', "[H, W]"]),
    ({"mean": [0.5, 0.5]}, ['"mean"', "2 values", "3-channel"]),
    ({"std": [0.2, 0.0, 0.2]}, ['"std"', "> 0"]),
    ({"lables": ["a", "b", "c"]}, ['"lables"', "labels, size, mean, std"]),
    (["a", "b", "c"], ["JSON object"]),
])
def test_a_bad_sidecar_names_the_file_and_the_key(cli, tmp_path, smp_dir, img64, side, words):
    folder = _copy(smp_dir, tmp_path / "m")
    (folder / "xai.json").write_text(json.dumps(side))
    line = error_line(cli(["predict", "-m", folder, img64]), 1)
    assert str(folder / "xai.json") in line
    for w in words:
        assert w in line


def test_a_good_sidecar_is_applied(cli, tmp_path, smp_dir, img64):
    folder = _copy(smp_dir, tmp_path / "m")
    (folder / "xai.json").write_text(json.dumps({"labels": ["bg", "cat", "dog"], "size": 32, "mean": [0.5],
                                                 "std": [0.25, 0.25, 0.25]}))
    r = cli(["predict", "-m", folder, img64])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    prep = rec["meta"]["preprocessing"]
    assert prep["size"] == [32, 32] and prep["mean"] == [0.5] * 3 and prep["std"] == [0.25] * 3
    assert rec["meta"]["model"]["labels"] == ["bg", "cat", "dog"]


def test_an_hf_sidecar_is_checked_against_the_config(cli, tmp_path, convnext, img32):
    folder = _copy(convnext, tmp_path / "cnx")
    (folder / "xai.json").write_text(json.dumps({"labels": ["a", "b"]}))
    line = error_line(cli(["predict", "-m", folder, img32]), 1)
    assert "xai.json" in line and "4 classes" in line


def test_records_made_with_other_load_options_are_refused_under_m(cli, tmp_path, img32):
    """-m with other --size/--labels than the records' would explain another function than the
    record's prediction, under meta naming the record's options."""
    rec = tmp_path / "rec.tar"
    r = cli(["predict", "-m", "builtin:shapes-cls", "--labels", "x,y,z", img32, "-o", rec])
    assert r.exit_code == 0, r.stderr
    r = cli(["cam", "-m", "builtin:shapes-cls", rec, "-o", tmp_path / "c.tar"])
    assert r.exit_code == 1 and "made with --labels x,y,z, this run loads the model with no --labels" in r.stderr
    assert not (tmp_path / "c.tar").exists()
    for args in (["-m", "builtin:shapes-cls", "--labels", "x,y,z"], []):   # the same options, or none
        r = cli(["cam", *args, rec, "-o", tmp_path / "c.tar"])
        assert r.exit_code == 0, r.stderr


def test_randomize_on_torchscript_says_it_needs_hooks(cli, tmp_path, img32):
    path = tmp_path / "seg.pt"
    torch.jit.trace(tiny_segmenter(classes=2), torch.zeros(1, 3, 32, 32)).save(str(path))
    rec = tmp_path / "rec.tar"
    r = cli(["attribute", "-m", path, "--steps", "2", img32, "-o", rec])
    assert r.exit_code == 0, r.stderr
    line = error_line(cli(["stats", "-m", path, "--randomize", rec]), 2)
    assert "TorchScript" in line and "--randomize" in line


def test_load_options_without_m_are_refused_not_ignored(cli, tmp_path, img32):
    rec = tmp_path / "rec.tar"
    assert cli(["predict", "-m", "builtin:shapes-cls", img32, "-o", rec]).exit_code == 0
    line = error_line(cli(["cam", "--labels", "x,y,z", rec, "-o", tmp_path / "c.tar"]), 2)
    assert "--labels set how -m loads a model" in line and "pass -m MODEL" in line
    assert not (tmp_path / "c.tar").exists()


@pytest.mark.parametrize("opt", [["--arch", "unet:resnet18"], ["--classes", "5"]])
def test_arch_and_classes_for_a_model_that_names_its_own_are_refused(cli, convnext, img32, opt):
    line = error_line(cli(["predict", "-m", convnext, *opt, "--json", img32]), 2)
    assert f"{opt[0]}: for state-dict files only" in line and "Hugging Face folder" in line
