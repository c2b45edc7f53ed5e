"""IS-CAM against torchcam 0.5's ISCAM on the same model, layer and target (a CNN, an smp U-Net++ with
a region target, a ViT block), through the CLI, its option's error and `stats --randomize`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import error_line
from test_method_sscam import (TOL, cli_map_and_randomize, cls_png, compare_with_torchcam, minmax,  # noqa: F401
                               models, targets_of)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name,samples", [("cnn", 10), ("unetpp", 3), ("vit", 4)])
def test_equals_torchcam(models, name, samples):  # noqa: F811
    from torchcam.methods import ISCAM

    err, ours = compare_with_torchcam(models, name, "iscam", ISCAM, {"iscam_samples": samples},
                                      num_samples=samples, batch_size=7)
    assert err <= TOL, err
    assert ours.info["iscam_samples"] == samples and ours.info["iscam"] == {"samples": samples}


def test_the_scales_matter(models):  # noqa: F811
    """The scaled masks reach the weights: one step (scale 1) and ten (scales up to 5.5) give other maps."""
    from xaicli.explain.cam import CamEngine
    from xaicli.models.layers import layer_table

    ad, image, lname = models["unetpp"]
    layers = layer_table(ad, (64, 64)).resolve([lname])
    t = targets_of(ad, image)
    one, ten = (CamEngine(ad, layers, ["iscam"], iscam_samples=n).explain(image, t)[0].values for n in (1, 10))
    assert np.abs(minmax(one) - minmax(ten)).max() > 1e-3


def test_cli_and_randomize(cli, cls_png):  # noqa: F811
    arr, info, _ = cli_map_and_randomize(cli, cls_png, "iscam", "--iscam-samples", "2")
    assert arr.shape == (1, 64, 64) and arr.max() > 0
    assert info["iscam_samples"] == 2 and info["reference"] == "torchcam.methods.ISCAM"


def test_bad_samples_is_a_usage_error(cli, cls_png):  # noqa: F811
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", "-M", "iscam", "--iscam-samples", "0", str(cls_png)]), 2)
    assert "--iscam-samples" in line
