"""`xai cam` through the real entry point: records, meta, --list-layers, and one-line user errors.

Runs on the built-in demo models (weights ship with the package), so every run is the
whole command: reading images or records, predicting, the CAM, writing the stream.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from helpers_models import write_png
from conftest import no_record_out, npz_members

SEG = "builtin:shapes-seg"
CLS = "builtin:shapes-cls"


pytestmark = pytest.mark.usefixtures("one_thread")


def records(data: bytes):
    from xaicli.io.record import Record

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [Record.from_bytes(tar.extractfile(m).read(), m.name) for m in npz_members(tar)]


def one_line_error(res, code: int, *words: str):
    assert res.exit_code == code, res.stderr
    lines = res.stderr.strip().splitlines()
    no_record_out(res.stdout, lines[-1] if lines else None)     # an error leaves no partial output
    assert len(lines) == 1 and lines[0].startswith("xai: error:"), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def seg_png(tmp_path_factory):
    """A demo scan at 80x112, not the model's 96x96: maps must come back at the image's size."""
    from PIL import Image

    from xaicli.models.builtin.shapes import make_sample

    img, mask, _ = make_sample(7, "segmentation")
    img = np.asarray(Image.fromarray(img).resize((112, 80), Image.BILINEAR))
    path = tmp_path_factory.mktemp("cam") / "scan.png"
    write_png(path, img)
    return path, img


@pytest.fixture(scope="module")
def cls_png(tmp_path_factory):
    from xaicli.models.builtin.shapes import make_sample

    img, _, label = make_sample(3, "classification")
    path = tmp_path_factory.mktemp("camc") / "obj.png"
    write_png(path, img)
    return path, label


@pytest.fixture(scope="module")
def seg_run(seg_png):
    from conftest import invoke

    path, _ = seg_png
    res = invoke(["cam", "-m", SEG, str(path), "--method", "gradcam", "--method", "eigencam,gradcam++",
                  "--layer", "decoder_last", "--layer", "encoder_last"])
    return res


def test_maps_per_method_and_layer_at_image_size(seg_run, seg_png):
    _, img = seg_png
    assert seg_run.exit_code == 0, seg_run.stderr
    (rec,) = records(seg_run.stdout)
    keys = sorted(k for k in rec.arrays if k.startswith("cam/"))
    assert keys == sorted(f"cam/{m}/{la}" for m in ("gradcam", "eigencam", "gradcam++")
                          for la in ("decoder_last", "encoder_last"))
    for k in keys:
        arr = rec.arrays[k]
        assert arr.dtype == np.float32 and arr.shape == (1, 80, 112)
        assert np.isfinite(arr).all() and arr.min() >= 0
    info = rec.meta["maps"]["cam/gradcam/decoder_last"]
    assert info["kind"] == "cam" and info["method"] == "gradcam" and info["layer"] == "decoder_last"
    assert info["module"] == "decoder.blocks.x_0_2"
    assert info["normalised"] is False and info["aug_smooth"] is False and info["eigen_smooth"] is False
    assert info["targets"][0]["kind"] == "mask" and info["targets"][0]["region"] == "predicted"
    assert rec.meta["maps"]["cam/eigencam/encoder_last"]["module"] == "encoder.model.layer2"
    # the prediction came from the CAM's own forward pass and is stored like xai predict's
    assert rec.arrays["pred/mask"].shape == (80, 112) and "prediction" in rec.meta
    assert rec.meta["history"][-1]["command"] == "cam"
    assert rec.meta["history"][-1]["parameters"]["layers"] == {"decoder_last": "decoder.blocks.x_0_2",
                                                               "encoder_last": "encoder.model.layer2"}


def test_raw_maps_are_gradcams_maps_resized(seg_run, seg_png):
    """The stored raw map, min-max scaled and brought to the model size, is grad-cam's output."""
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from xaicli.models.loader import load_model

    _, img = seg_png
    (rec,) = records(seg_run.stdout)
    ad = load_model(SEG, device="cpu")
    x = ad.prepare(img)
    with torch.no_grad():
        lg = ad.forward(x)
    region = rec.meta["maps"]["cam/gradcam/decoder_last"]["targets"][0]
    assert region["index"] == 0
    from xaicli.explain.targets import region_weight

    w = region_weight(rec.arrays["pred/mask"].astype(bool), 0, 1, (96, 96), (80, 112))[0].numpy()
    cam = gc.GradCAM(ad.net, [ad.module.decoder.blocks.x_0_2])
    try:
        ref = cam(x.clone().requires_grad_(True), [SemanticSegmentationTarget(0, w)])[0]
    finally:
        from xaicli.explain.cam import release_gradcam

        release_gradcam(cam)
    # resizing commutes with min-max scaling: grad-cam's map brought to the image size is ours scaled
    ref = ad.to_image_size(torch.from_numpy(ref)[None, None], (80, 112))[0, 0].numpy()
    stored = rec.arrays["cam/gradcam/decoder_last"][0]
    assert np.abs(norm(stored) - norm(ref)).max() <= 1e-5
    assert lg.shape == (1, 1, 96, 96)


def norm(m):
    return (m - m.min()) / (m.max() - m.min())


def test_records_from_predict_keep_their_prediction(cli, seg_png):
    path, _ = seg_png
    pred = cli(["predict", "-m", SEG, str(path)])
    assert pred.exit_code == 0, pred.stderr
    res = cli(["cam", "--method", "layercam"], input=pred.stdout)     # the model comes from the record
    assert res.exit_code == 0, res.stderr
    (before,), (after,) = records(pred.stdout), records(res.stdout)
    assert np.array_equal(before.arrays["pred/mask"], after.arrays["pred/mask"])
    assert [h["command"] for h in after.meta["history"]] == ["predict", "cam"]
    assert after.arrays["cam/layercam/decoder_last"].shape == (1, 80, 112)


def test_target_all_gives_one_map_per_class(cli, cls_png):
    path, label = cls_png
    res = cli(["cam", "-m", CLS, str(path), "--target", "all", "--layer", "stage0", "--method", "hirescam"])
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res.stdout)
    arr = rec.arrays["cam/hirescam/stage0"]
    assert arr.shape == (3, 64, 64)
    targets = rec.meta["maps"]["cam/hirescam/stage0"]["targets"]
    assert [t["index"] for t in targets] == [0, 1, 2] and [t["label"] for t in targets] == ["red", "green", "blue"]
    assert rec.meta["prediction"]["index"] == label


def test_list_layers(cli):
    res = cli(["cam", "-m", SEG, "--list-layers"])
    assert res.exit_code == 0, res.stderr
    lines = res.output.splitlines()
    assert lines[0].startswith("# smp model, input 96x96")
    rows = {ln.split()[0].rstrip("*"): ln.split() for ln in lines[1:]}
    assert set(rows) >= {"encoder_early", "encoder_mid", "encoder_last", "decoder_last", "seg_head"}
    assert rows["decoder_last"][0] == "decoder_last*" and rows["decoder_last"][1] == "decoder.blocks.x_0_2"
    assert rows["decoder_last"][2] == "1x8x96x96"
    assert rows["seg_head"][1:] == ["segmentation_head.0", "1x1x96x96"]
    res = cli(["cam", "-m", CLS, "--list-layers"])
    assert res.exit_code == 0 and "last*" in res.output and "resnet.encoder.stages" in res.output


def test_folder_output_and_skip_existing(cli, seg_png, tmp_path):
    path, _ = seg_png
    out = tmp_path / "cams"
    first = cli(["cam", "-m", SEG, str(path), "-o", f"{out}/", "--method", "eigencam"])
    assert first.exit_code == 0, first.stderr
    rec_file = out / "scan.npz"
    stamp = rec_file.stat().st_mtime_ns
    again = cli(["cam", "-m", SEG, str(path), "-o", f"{out}/", "--method", "eigencam", "--skip-existing"])
    assert again.exit_code == 0, again.stderr
    assert rec_file.stat().st_mtime_ns == stamp
    from xaicli.io.record import Record

    assert "cam/eigencam/decoder_last" in Record.from_bytes(rec_file.read_bytes()).arrays


# -- user errors: one line, exit 1 or 2, no output ------------------------------------

def test_unknown_layer(cli, seg_png):
    res = cli(["cam", "-m", SEG, str(seg_png[0]), "--layer", "encoder_deep"])
    one_line_error(res, 2, "encoder_deep", "decoder_last", "encoder_early", "seg_head")


def test_unknown_method(cli, seg_png):
    res = cli(["cam", "-m", SEG, str(seg_png[0]), "--method", "gradcam+++"])
    one_line_error(res, 2, "gradcam+++", "gradcam++", "scorecam", "eigencam", "all")


def test_method_for_another_task(cli, seg_png):
    one_line_error(cli(["cam", "-m", SEG, str(seg_png[0]), "--method", "finercam"]), 2, "finercam", "classification")


def test_bad_target(cli, seg_png, cls_png):
    one_line_error(cli(["cam", "-m", SEG, str(seg_png[0]), "--target", "top1"]), 2, "top1")
    one_line_error(cli(["cam", "-m", CLS, str(cls_png[0]), "--target", "purple"]), 2, "purple", "red")


def test_record_without_image(cli, seg_png):
    pred = cli(["predict", "-m", SEG, str(seg_png[0]), "--no-image"])
    assert pred.exit_code == 0
    one_line_error(cli(["cam", "-m", SEG], input=pred.stdout), 1, "no image")


def test_record_from_another_model(cli, cls_png):
    pred = cli(["predict", "-m", CLS, str(cls_png[0])])
    assert pred.exit_code == 0
    one_line_error(cli(["cam", "-m", SEG], input=pred.stdout), 1, "another model")


# -- hooks and memory over many images ---------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_hooks_released_and_memory_flat_over_many_images():
    """300 images through every hook-using path (gradients, ScoreCAM passes, AblationCAM's
    substitution hook): no hook outlives its image and the process does not grow."""
    from helpers_models import tiny_segmenter

    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.layers import layer_table
    from xaicli.models.preprocess import Preprocessing

    model = tiny_segmenter()
    for p in model.parameters():
        p.requires_grad_(False)
    ad = ModelAdapter(LogitsModule(model), "segmentation", ["a", "b"], Preprocessing(size=(48, 48)),
                      torch.device("cpu"))
    layers = layer_table(ad, (48, 48)).resolve(["last", "conv"])
    engine = CamEngine(ad, layers, ["gradcam", "gradcam++", "scorecam", "ablationcam", "eigencam"])
    modules = list(ad.net.modules())
    rng = np.random.default_rng(0)
    rss = []
    for i in range(300):
        img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        mask = np.zeros((40, 56), bool)
        mask[5:20, 10:30] = True
        maps = engine.explain(img, [Target("region", 1, "b", mask), Target("all-pixels", 0, "a", ~mask | mask)])
        assert len(maps) == 10 and maps[0].values.shape == (2, 40, 56)
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in modules)
        if i in (50, 299):
            rss.append(_rss_mb())
    assert rss[1] - rss[0] < 20, f"RSS grew {rss[1] - rss[0]:.1f} MB over 250 images"


# -- layer and method names ----------------------------------------------------------

def test_two_names_for_one_module_give_each_name_the_same_map(cli, cls_png):
    """`stage1` and `last` are one module on shapes-cls: computed once (not refused as a
    module that ran twice), stored under each name given, equal to the map of the module
    named once; a RefineCAM product counts the module once."""
    path, _ = cls_png
    both = cli(["-v", "cam", "-m", CLS, str(path), "-l", "stage0", "-l", "stage1", "-l", "last",
                "-M", "gradcam,refinecam"])
    assert both.exit_code == 0, both.stderr
    assert "stage1 and last: one module (resnet.encoder.stages.1)" in both.stderr
    once = cli(["cam", "-m", CLS, str(path), "-l", "stage0", "-l", "resnet.encoder.stages.1",
                "-M", "gradcam,refinecam"])
    assert once.exit_code == 0, once.stderr
    (rec,), (ref,) = records(both.stdout), records(once.stdout)
    assert sorted(k for k in rec.arrays if k.startswith("cam/")) == [
        "cam/gradcam/last", "cam/gradcam/stage0", "cam/gradcam/stage1", "cam/refinecam/stage0+stage1+last"]
    expected = ref.arrays["cam/gradcam/resnet.encoder.stages.1"]
    assert expected.max() > 0
    for name in ("stage1", "last"):
        assert np.array_equal(rec.arrays[f"cam/gradcam/{name}"], expected), name
        info = rec.meta["maps"][f"cam/gradcam/{name}"]
        assert info["layer"] == name and info["module"] == "resnet.encoder.stages.1"
    assert np.array_equal(rec.arrays["cam/gradcam/stage0"], ref.arrays["cam/gradcam/stage0"])
    # the product over stage0 and stages.1, not over stage0, stages.1 and stages.1 again
    assert np.array_equal(rec.arrays["cam/refinecam/stage0+stage1+last"],
                          ref.arrays["cam/refinecam/stage0+resnet.encoder.stages.1"])
    assert (rec.meta["maps"]["cam/refinecam/stage0+stage1+last"]["module"]
            == "resnet.encoder.stages.0+resnet.encoder.stages.1")
    assert rec.meta["history"][-1]["parameters"]["layers"] == {
        "stage0": "resnet.encoder.stages.0", "stage1": "resnet.encoder.stages.1", "last": "resnet.encoder.stages.1"}


def test_alias_and_module_path_of_one_module_on_a_segmenter(cli, seg_png, seg_run):
    path, _ = seg_png
    res = cli(["cam", "-m", SEG, str(path), "-l", "encoder_last", "-l", "encoder.model.layer2"])
    assert res.exit_code == 0, res.stderr
    (rec,), (ref,) = records(res.stdout), records(seg_run.stdout)
    a, b = rec.arrays["cam/gradcam/encoder_last"], rec.arrays["cam/gradcam/encoder.model.layer2"]
    assert np.array_equal(a, b)
    # the same map as encoder_last computed next to decoder_last in another run
    expected = ref.arrays["cam/gradcam/encoder_last"]
    assert expected.max() > 0 and np.abs(a - expected).max() <= 1e-5 * expected.max()
    assert rec.meta["maps"]["cam/gradcam/encoder.model.layer2"]["module"] == "encoder.model.layer2"


def test_a_module_that_runs_twice_is_still_refused_when_named_twice():
    """The hook counts calls per module: a module the forward pass calls twice is refused,
    also under two names (one hook, so 2 calls, not 4)."""
    from torch import nn

    from xaicli.errors import XaiError
    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.layers import Layer
    from xaicli.models.preprocess import Preprocessing

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.Tanh()
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.act(self.act(self.conv(x))))

    torch.manual_seed(0)
    ad = ModelAdapter(LogitsModule(Twice().eval()), "segmentation", ["a", "b"], Preprocessing(size=(16, 16)),
                      torch.device("cpu"))
    act = ad.module.act
    img = np.full((16, 16, 3), 128, np.uint8)
    target = [Target("all-pixels", 1, "b", np.ones((16, 16), bool))]
    for names in (["act"], ["act", "model.act"]):
        layers = [Layer(n, None, "act", act, (1, 4, 16, 16)) for n in names]
        with pytest.raises(XaiError, match="layer act ran 2 times in one forward pass; pick its parent"):
            CamEngine(ad, layers, ["gradcam"]).explain(img, target)
        assert not act._forward_hooks


@pytest.mark.parametrize("value", ["", ",", " , ", "gradcam,"])
def test_empty_method_is_refused(cli, cls_png, value):
    res = cli(["cam", "-m", CLS, str(cls_png[0]), "-M", value])
    one_line_error(res, 2, f"--method {value!r}", "empty method name", "gradcam", "all")


@pytest.mark.parametrize("values", [[""], [" "], ["encoder_last", ""]])
def test_empty_layer_is_refused(cli, seg_png, values):
    """An empty --layer resolved to the whole model (module path '') and wrote cam/gradcam/."""
    args = ["cam", "-m", SEG, str(seg_png[0])]
    for v in values:
        args += ["-l", v]
    one_line_error(cli(args), 2, f"--layer {values[-1]!r}", "empty", "--list-layers")
