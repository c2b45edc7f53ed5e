"""--scorecam-channels K (Faster Score-CAM, Wang et al. 2020): ScoreCAM over the K channels of
highest activation variance, checked against grad-cam's own ScoreCAM weights for those channels."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from test_cam_reference import norm, ours, pearson

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def segmenter():
    from xaicli.explain.targets import Target
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    ad = load_model("builtin:shapes-seg", device="cpu")
    img, _, _ = make_sample(5003, "segmentation")
    with torch.no_grad():
        pred = (ad.forward(ad.prepare(img))[0, 0] > 0).numpy()
    return ad, img, pred, Target("mask", 0, "blob", pred)


def test_the_kept_channels_are_the_most_varied_and_weigh_as_grad_cams_scorecam_over_them(segmenter):
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    ad, img, pred, target = segmenter
    mine, layers = ours(ad, ["scorecam"], ["encoder_last"], img, [target], scorecam_exact=True,
                        scorecam_channels=16)
    m = mine["cam/scorecam/encoder_last"]
    keep = m.info["scorecam"]["kept_channels"]
    x = ad.prepare(img)
    module = layers[0].module
    seen = []
    hook = module.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    with torch.no_grad():
        ad.net(x)
    hook.remove()
    acts = seen[0]                                                     # (1, 128, h, w)
    assert acts.shape[1] == 128 and len(keep) == 16
    assert keep == sorted(torch.topk(acts[0].flatten(1).var(1), 16).indices.tolist())
    cam = gc.ScoreCAM(ad.net, [module])
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            w = cam.get_cam_weights(x, module, [SemanticSegmentationTarget(0, pred.astype(np.float32))],
                                    acts[:, keep].numpy(), None)        # (1, 16): softmax over the kept
    finally:
        cam.activations_and_grads.release()
    ref = np.maximum((w[0][:, None, None] * acts[0, keep].numpy()).sum(0), 0)
    ref = scale_cam_image(ref[None], (img.shape[1], img.shape[0]))      # grad-cam's resize and min-max
    assert pearson(norm(m.values), ref) >= 0.999        # a peaked softmax: batch rounding moves single pixels
    assert np.abs(norm(m.values) - ref).max() <= 0.05   # as for full ScoreCAM (test_cam_reference.py)


def test_k_at_least_the_channels_is_full_scorecam_and_the_cli_records_the_kept(segmenter, cli, tmp_path):
    from helpers_models import stream_records, write_png

    ad, img, pred, target = segmenter
    # a fixed chunk: a chunk timed to the fastest can differ between the two runs under load, and
    # batched kernels round differently at different batch sizes
    full, _ = ours(ad, ["scorecam"], ["encoder_last"], img, [target], scorecam_exact=True, batch_size=8)
    same, _ = ours(ad, ["scorecam"], ["encoder_last"], img, [target], scorecam_exact=True, scorecam_channels=500,
                   batch_size=8)
    assert "kept_channels" not in same["cam/scorecam/encoder_last"].info["scorecam"]
    assert np.array_equal(full["cam/scorecam/encoder_last"].values, same["cam/scorecam/encoder_last"].values)
    path = write_png(tmp_path / "scan.png", img)
    r = cli(["cam", "-m", "builtin:shapes-seg", str(path), "-M", "scorecam", "--layer", "encoder_last",
             "--scorecam-channels", "8"])
    assert r.exit_code == 0, r.stderr
    (rec,) = stream_records(r.stdout)
    info = rec["meta"]["maps"]["cam/scorecam/encoder_last"]
    assert len(info["scorecam"]["kept_channels"]) == 8 and info["scorecam"]["channels"] == 8


def test_zero_channels_is_a_usage_error(cli, tmp_path):
    from conftest import error_line
    from helpers_models import rgb_image, write_png

    path = write_png(tmp_path / "x.png", rgb_image(64, 64))
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", str(path), "-M", "scorecam",
                           "--scorecam-channels", "0"]), 2)
    assert "--scorecam-channels" in line
