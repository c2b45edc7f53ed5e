"""The model-format registry (models/formats): what the help, the errors and the README say comes
from it; optional extras missing, bad --arch/--arch-args and ONNX graphs xai cannot take are one
line each; the ONNX conversion is cached; the layouts of ONNX inputs (NCHW, NHWC, NHW)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import error_line

from helpers_models import rgb_image, stream_records, tiny_classifier, write_png

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    torch.save(tiny_classifier().state_dict(), root / "weights.pth")
    return {"root": root, "png": write_png(root / "img.png", rgb_image(32, 32)),
            "gray": write_png(root / "gray.png", rgb_image(32, 32)[..., 0]), "pth": root / "weights.pth"}


def _export(model, path: Path, shape, dynamic: bool = True) -> Path:
    """torch.onnx.export at opset 17: onnx2torch 1.5 converts `Constant` only up to its opset-13 form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(*shape), str(path), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}} if dynamic else None, opset_version=17)
    return path


# -- generated from the registry ----------------------------------------------------------------

def test_readme_model_table_is_current():
    """`make readme` regenerates it from the registry."""
    from xaicli.models.formats.readme import current, markdown

    assert current(ROOT / "README.md") == markdown(), "README's model table is stale: run `make readme`"


def test_help_and_errors_name_every_format(cli, files):
    import typer

    from xaicli.cli.app import app
    from xaicli.models.formats import FORMATS, accepts, arch_help, model_help

    params = {o: p for p in typer.main.get_command(app).commands["predict"].params for o in p.opts}
    assert params["--model"].help == model_help() and params["--arch"].help == arch_help()
    for f in FORMATS:
        if f.config is not None:
            assert f.short in model_help() and f.short in accepts()
        if f.accepts:          # in the help, the extra's pip command goes inside its parenthesis
            assert f.accepts.rstrip(")") in model_help() and f.accepts in accepts()
        if f.arch:
            assert f"{f.arch}:NAME" in arch_help()
        if f.extra:
            assert f"xai[{f.extra}]" in model_help() + arch_help()
    line = error_line(cli(["predict", "-m", files["png"], files["png"]]), 1)   # an image given as the model
    assert accepts() in line


def test_a_state_dict_without_arch_names_every_builder(cli, files):
    line = error_line(cli(["predict", "-m", files["pth"], files["png"]]), 2)
    assert all(p in line for p in ("ARCH:ENCODER", "timm:NAME", "torchvision:NAME", "monai:NAME"))


# -- optional extras ------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden, args, extra", [
    ("onnx2torch", ["-m", "{root}/model.onnx"], "onnx"),
    ("monai", ["-m", "{root}/weights.pth", "--arch", "monai:UNet"], "monai"),
])
def test_a_missing_extra_is_one_line_naming_it(cli, files, monkeypatch, hidden, args, extra):
    (files["root"] / "model.onnx").write_bytes(b"not even ONNX")
    monkeypatch.setitem(sys.modules, hidden, None)            # import fails as if never installed
    line = error_line(cli(["predict", *[a.format(root=files["root"]) for a in args], files["png"]]), 2)
    assert hidden in line and f"pip install 'xai[{extra}]'" in line


# -- --arch and --arch-args -------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--arch", "timm:resnet10", "--classes", "3"], ["timm has no architecture 'resnet10'", "resnet10t"]),
    (["--arch", "torchvision:resnet"], ["torchvision has no model 'resnet'"]),
    (["--arch", "torchvision:fasterrcnn_resnet50_fpn"], ["not an image classifier or segmenter"]),
    (["--arch", "nosuch:thing"], ["unknown architecture 'nosuch'", "timm:NAME"]),
    (["--arch", "timm:test_resnet", "--arch-args", "{nope"], ["--arch-args: not valid JSON"]),
    (["--arch", "timm:test_resnet", "--arch-args", "[1, 2]"], ["--arch-args: give a JSON object", "not a list"]),
    (["--arch", "timm:test_resnet", "--arch-args", '{"num_clases": 3}'], ["timm could not build it", "num_clases"]),
    (["--arch", "timm:test_resnet"], ["does not fit --arch timm:test_resnet", "missing"]),
])
def test_bad_arch_is_one_line(cli, files, args, says):
    r = cli(["predict", "-m", files["pth"], *args, files["png"]])
    line = error_line(r)
    assert all(s in line for s in says), line


def test_arch_args_for_a_model_that_names_its_own_is_refused(cli, files):
    line = error_line(cli(["predict", "-m", "builtin:shapes-cls", "--arch-args", '{"a": 1}', files["png"]]), 2)
    assert "--arch-args: for state-dict files only" in line


def test_timm_state_dict_takes_its_channels_and_classes_from_the_tensors(cli, files):
    import timm

    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet", in_chans=1, num_classes=2).state_dict(), files["root"] / "t1.pth")
    r = cli(["predict", "-m", files["root"] / "t1.pth", "--arch", "timm:test_resnet", files["gray"]])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["preprocessing"]["channels"] == 1 and rec["pred/logits"].shape == (2,)


def test_torchvision_aux_head_is_dropped(cli, files):
    from torchvision import models

    torch.manual_seed(2)
    model = models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3,
                                                             aux_loss=True).eval()
    torch.save(model.state_dict(), files["root"] / "dl.pth")
    r = cli(["predict", "-m", files["root"] / "dl.pth", "--arch", "torchvision:deeplabv3_mobilenet_v3_large",
             "--size", "64", files["png"]])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert any("aux_classifier" in n for n in rec["meta"]["preprocessing"]["notes"])
    x = (torch.from_numpy(rgb_image(32, 32)).permute(2, 0, 1)[None].float() / 255)
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(model(x)["out"], size=(32, 32), mode="bilinear", align_corners=False)
    assert np.abs(rec["pred/logits"] - ref[0].numpy()).max() <= 1e-5 * max(1, ref.abs().max().item())


# -- MONAI ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unet(files):
    pytest.importorskip("monai", reason="MONAI is an optional extra (pip install 'xai[monai]'), not installed here")
    from monai.networks.nets import UNet

    torch.manual_seed(3)
    UNET = {"channels": [4, 8], "strides": [2]}
    torch.save(UNet(spatial_dims=2, in_channels=1, out_channels=2, **UNET).state_dict(), files["root"] / "unet.pth")
    return ["-m", str(files["root"] / "unet.pth"), "--arch", "monai:UNet", "--arch-args", json.dumps(UNET)]


@pytest.mark.parametrize("args, says", [
    ('{"channels": [4, 8], "strides": [2], "chanels": 3}', ["takes no argument 'chanels'", "did you mean 'channels'",
                                                            "spatial_dims, in_channels"]),
    ('{"channels": [4, 8]}', ["lacks strides"]),
    ('{"channels": [4, 8], "strides": [2], "spatial_dims": 3}', ["\"spatial_dims\": 3", "2-D"]),
])
def test_monai_arch_args_are_checked_against_the_signature(cli, files, unet, args, says):
    line = error_line(cli(["predict", *unet[:4], "--arch-args", args, files["gray"]]), 2)
    assert all(s in line for s in says), line


def test_monai_model_reloads_from_its_records(cli, files, unet):
    """attribute without -m: the records carry --arch and --arch-args."""
    r = cli(["predict", *unet, files["gray"]])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["model"]["load"]["arch_args"] == json.loads(unet[-1])
    assert rec["meta"]["preprocessing"]["mean"] == [0.0] and rec["meta"]["preprocessing"]["multiple"] == 2
    r = cli(["attribute", "--steps", "2", "-"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    assert "attr/integrated_gradients/black" in stream_records(r.stdout)[0]
    line = error_line(cli(["predict", *unet, "--fit", "processor", files["gray"]]), 2)
    assert "no image processor" in line


# -- ONNX -------------------------------------------------------------------------------------------

@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    pytest.importorskip("onnx2torch", reason="onnx2torch is an optional extra (pip install 'xai[onnx]')")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "xai" / "onnx"


def test_onnx_is_converted_once_and_cached(cli, files, onnx_cache, monkeypatch):
    import onnx2torch

    path = _export(tiny_classifier(), files["root"] / "cache_me.onnx", (1, 3, 32, 32))
    first = cli(["predict", "-m", path, files["png"]])
    assert first.exit_code == 0, first.stderr
    (cached,) = onnx_cache.glob("*.pt")
    assert cached.name.startswith(__import__("hashlib").sha256(path.read_bytes()).hexdigest())
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".")]      # no temp file left

    def refuse(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(onnx2torch, "convert", refuse)
    again = cli(["predict", "-m", path, files["png"]])
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(stream_records(again.stdout)[0]["pred/logits"], stream_records(first.stdout)[0]["pred/logits"])
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(onnx_cache.parent.parent))
    cached.write_bytes(b"garbage")                                                  # a damaged cache converts again
    assert cli(["predict", "-m", path, files["png"]]).exit_code == 0
    assert cached.read_bytes() != b"garbage"


def test_an_operator_onnx2torch_lacks_is_named(cli, files, onnx_cache):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Cosh", ["x"], ["y"], name="hyperbolic")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), files["root"] / "cosh.onnx")
    line = error_line(cli(["predict", "-m", files["root"] / "cosh.onnx", files["png"]]), 1)
    assert "operator Cosh" in line and "'hyperbolic'" in line


def test_a_graph_with_a_fixed_batch_of_one_is_refused(cli, files, onnx_cache):
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_classifier()

        def forward(self, x):
            return self.net(x).reshape(1, 3)        # exported as a constant shape

    path = _export(Fixed(), files["root"] / "fixed.onnx", (1, 3, 32, 32), dynamic=False)
    line = error_line(cli(["predict", "-m", path, files["png"]]), 1)
    assert "batch of 1" in line and "dynamic_axes" in line


class ChannelsLast(torch.nn.Module):
    """A Keras-style model: takes (N, H, W, C)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_classifier(seed=4)

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


class Dense(torch.nn.Module):
    """The Fashion-MNIST shape: (N, 28, 28) gray images, Flatten, Dense."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.fc = torch.nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("model, shape, layout", [(ChannelsLast, (1, 32, 32, 3), "NHWC"), (Dense, (1, 28, 28), "NHW")])
def test_onnx_input_layouts(cli, files, onnx_cache, model, shape, layout):
    net = model().eval()
    path = _export(net, files["root"] / f"{layout}.onnx", shape)
    h, w = shape[1:3]
    img = rgb_image(h, w, seed=6) if layout == "NHWC" else rgb_image(h, w, seed=6)[..., 0]
    png = write_png(files["root"] / f"{layout}.png", img)
    r = cli(["predict", "-m", path, "--mean", "0", "--std", "1", png])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    assert rec["meta"]["model"]["arch"] == f"ONNX ({layout})"
    u = torch.from_numpy(img).float()[None] / 255                 # (1, H, W, C) or (1, H, W)
    with torch.no_grad():
        ref = net(u)[0].numpy()
    assert np.abs(rec["pred/logits"] - ref).max() <= 1e-5 * max(1, np.abs(ref).max())
