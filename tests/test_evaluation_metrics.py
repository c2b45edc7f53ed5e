"""The model metrics of `xai stats` (xaicli/explain/evaluation) against the implementations users
know: grad-cam's metrics and Quantus 0.6, on the built-in models, with small step counts."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xaicli.explain.evaluation import Context  # noqa: E402
from xaicli.io.record import Record  # noqa: E402
from xaicli.metrics import registry  # noqa: E402
from xaicli.metrics.report import MapTarget  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cls_model():
    from xaicli.models.loader import load_model

    return load_model("builtin:shapes-cls", device="cpu")


@pytest.fixture(scope="module")
def seg_model():
    from xaicli.models.loader import load_model

    return load_model("builtin:shapes-seg", device="cpu")


def smooth_maps(hw, n, seed=0):
    """n smooth random maps (H, W): a few Gaussian bumps each, no ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    out = []
    for _ in range(n):
        m = np.zeros(hw)
        for _ in range(3):
            cy, cx, s = rng.uniform(0, hw[0]), rng.uniform(0, hw[1]), rng.uniform(4, 16)
            m += rng.uniform(0.2, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out.append(m + 1e-6 * rng.random(hw))
    return out


def case(model, seed):
    """(image, target index, predicted region or None) for one built-in sample."""
    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(seed, model.task)
    with torch.no_grad():
        logits = model.forward(model.prepare(image))
    if model.task == "classification":
        return image, int(logits.argmax()), None
    return image, 0, (logits[0, 0] > 0).numpy()


def run_metric(name, model, image, index, region, maps, **options):
    """Our metric through the registry, as `xai stats` runs it: one group of maps sharing the target."""
    rec = Record.new("r")
    rec.meta["task"] = model.task
    rec.arrays["image"] = image
    kind = "class" if region is None else "mask"
    group = [MapTarget(rec, f"cam/m{i}/x", {"kind": "cam"}, 0, {"kind": kind, "index": index}, m,
                       np.asarray(m, np.float64), region) for i, m in enumerate(maps)]
    opts = {"batch_size": 8, "steps": 4, "perturb_baseline": "black", "seed": 0, **options}
    ctx = Context(model, image, rec.id, opts)
    return registry.metrics()[name].run(ctx, group), ctx, group


def gradcam_target(index, region):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, SemanticSegmentationTarget

    return ClassifierOutputSoftmaxTarget(index) if region is None else \
        SemanticSegmentationTarget(index, region.astype(np.float32))


# -- confidence drop / increase ------------------------------------------------------------------

@pytest.mark.parametrize("which", ["cls", "seg"])
def test_confidence_drop_and_increase_equal_gradcams(which, cls_model, seg_model):
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence

    model = cls_model if which == "cls" else seg_model
    drops, incs = [], []
    for seed in (1, 2):
        image, index, region = case(model, seed)
        maps = smooth_maps(image.shape[:2], 3, seed)
        got, _, _ = run_metric("confidence", model, image, index, region, maps)
        x = model.prepare(image)
        for m, row in zip(maps, got):
            cam = ((m - m.min()) / (m.max() - m.min())).astype(np.float32)[None]
            ref_drop = DropInConfidence()(x, cam, [gradcam_target(index, region)], model.forward)[0]
            ref_inc = IncreaseInConfidence()(x, cam, [gradcam_target(index, region)], model.forward)[0]
            scale = 1.0 if region is None else max(1.0, abs(float(ref_drop)))
            assert row["confidence_drop"] == pytest.approx(float(ref_drop), abs=1e-5 * scale)
            assert row["confidence_increase"] == int(ref_inc)
            drops.append(row["confidence_drop"])
            incs.append(row["confidence_increase"])
    assert max(drops) > 0                 # the comparison saw real drops, not only zeros


def test_confidence_is_null_and_warned_once_for_nan_and_constant_maps(cls_model, caplog):
    image, index, _ = case(cls_model, 1)
    nan = np.ones(image.shape[:2])
    nan[0, 0] = np.nan
    got, ctx, _ = run_metric("confidence", cls_model, image, index, None, [nan, nan, np.ones(image.shape[:2])])
    assert all(r["confidence_drop"] is None and r["confidence_increase"] is None for r in got)
    assert len(ctx.warned) == 2           # one per reason, not one per map
