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


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A tiny Hugging Face ConvNeXt with its own image processor (32², its own mean and std)."""
    from helpers_models import save_tiny_convnext

    from xaicli.models.loader import load_model

    return load_model(str(save_tiny_convnext(tmp_path_factory.mktemp("convnext"))), device="cpu")


@pytest.fixture(scope="module")
def smp_model(tmp_path_factory):
    """An untrained smp U-Net++ with a resnet18 encoder, saved and loaded as a user's."""
    from helpers_models import save_unetpp_resnet18

    from xaicli.models.loader import load_model

    return load_model(str(save_unetpp_resnet18(tmp_path_factory.mktemp("unetpp"))), device="cpu")


MODELS = {"cls": "cls_model", "seg": "seg_model", "hf": "hf_model", "smp": "smp_model"}


@pytest.fixture
def model(which, request):
    """The model of the test's `which`: the built-ins, or the HF ConvNeXt / smp U-Net++ built here."""
    return request.getfixturevalue(MODELS[which])


def case(model, seed):
    """(image, target index, predicted region or None) for one built-in sample (32² for the HF
    ConvNeXt, whose processor would resize it); an untrained segmenter's region is the upper half
    of its logits where its own would be empty or full."""
    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(seed, model.task)
    if model.preprocessing.pipeline is not None:
        image = np.ascontiguousarray(image[::2, ::2])
    with torch.no_grad():
        logits = model.forward(model.prepare(image))
    if model.task == "classification":
        return image, int(logits.argmax()), None
    region = (logits[0, 0] > 0).numpy()
    if not 0 < region.mean() < 1:
        region = (logits[0, 0] > logits[0, 0].median()).numpy()
    return image, 0, region


def run_metric(name, model, image, index, region, maps, recorded=None, **options):
    """Our metric through the registry, as `xai stats` runs it: one group of maps sharing the target
    (`recorded`: the (key, meta) the maps were made with, for metrics that recompute them)."""
    rec = Record.new("r")
    rec.meta["task"] = model.task
    rec.arrays["image"] = image
    kind = "class" if region is None else "mask"
    group = [MapTarget(rec, *(recorded or (f"cam/m{i}/x", {"kind": "cam"})), 0, {"kind": kind, "index": index}, m,
                       np.asarray(m, np.float64), region) for i, m in enumerate(maps)]
    opts = {"batch_size": 8, "steps": 4, "perturb_baseline": "black", "seed": 0, **options}
    ctx = Context(model, image, rec.id, opts)
    return registry.metrics()[name].run(ctx, group), ctx, group


def gradcam_target(index, region):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, SemanticSegmentationTarget

    return ClassifierOutputSoftmaxTarget(index) if region is None else \
        SemanticSegmentationTarget(index, region.astype(np.float32))


# -- confidence drop / increase ------------------------------------------------------------------

@pytest.mark.parametrize("which", ["cls", "seg", "hf", "smp"])
def test_confidence_drop_and_increase_equal_gradcams(which, model):
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence

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


# -- ROAD -----------------------------------------------------------------------------------------

def test_linear_imputation_keeps_a_linear_ramp_and_equals_gradcams_system():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    from xaicli.explain.evaluation.road import linear_imputation

    yy, xx = np.mgrid[:12, :10].astype(np.float64)
    ramp = np.stack([2 * yy - xx, 0.5 * xx + 3])
    hole = np.zeros((12, 10), bool)
    hole[3:8, 2:7] = True                                  # inside: every neighbour weight is there
    assert np.allclose(linear_imputation(ramp, hole), ramp[:, hole], atol=1e-10)
    rng = np.random.default_rng(0)
    img = rng.random((3, 12, 10))
    missing = rng.random((12, 10)) < 0.6                   # touching the borders too
    a, b = NoisyLinearImputer.setup_sparse_system((~missing).astype(np.float32), img, NoisyLinearImputer().weighting)
    assert np.allclose(linear_imputation(img, missing), spsolve(csc_matrix(a), b).T, atol=1e-12)
    # Quantus's ROAD imputes with its own copy of the same system: a second check
    from quantus.functions.perturb_func import noisy_linear_imputation

    quantus = noisy_linear_imputation(img, np.flatnonzero(missing), noise=0.0).reshape(3, -1)
    assert np.allclose(linear_imputation(img, missing), quantus[:, missing.ravel()], atol=1e-12)


@pytest.mark.parametrize("which", ["cls", "seg", "hf", "smp"])
def test_road_equals_gradcams_with_the_same_noise(which, model):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    image, index, region = case(model, 3)
    maps = smooth_maps(image.shape[:2], 2, 3)
    maps[1] = np.round(maps[1] * 4) / 4                    # ties at the thresholds, as a coarse CAM has
    percentiles = (20, 50, 90)
    got, ctx, group = run_metric("road", model, image, index, region, maps, road_percentiles=percentiles)
    x = model.prepare(image)
    for mt, row in zip(group, got):
        cam = mt.smap.astype(np.float32)[None]
        ref = {}
        for order, cls in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
            diffs = []
            for p in percentiles:
                torch.manual_seed(ctx.seed(mt, f"road/{order}/{p:g}"))
                diffs.append(cls(p)(x, cam, [gradcam_target(index, region)], model.forward)[0])
            ref[order] = float(np.mean(np.float32(diffs)))
        scale = 1.0 if region is None else max(1.0, abs(ref["morf"]))
        assert row["road_morf"] == pytest.approx(ref["morf"], abs=1e-4 * scale)
        assert row["road_lerf"] == pytest.approx(ref["lerf"], abs=1e-4 * scale)
        assert row["road_combined"] == pytest.approx((ref["lerf"] - ref["morf"]) / 2, abs=1e-4 * scale)
        assert row["road_morf"] != row["road_lerf"]


def test_road_percentiles_option_is_checked():
    from xaicli.errors import XaiUsageError
    from xaicli.explain.evaluation.road import parse_percentiles

    assert parse_percentiles(None) == tuple(range(10, 100, 10))
    assert parse_percentiles("25,75") == (25.0, 75.0)
    for bad in ("", "0,50", "50,50", "ten", "100"):
        with pytest.raises(XaiUsageError, match="--road-percentiles"):
            parse_percentiles(bad)


# -- through `xai stats` ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seg_stream(tmp_path_factory):
    """Two shapes-seg records (predicted by `xai predict`), each with a CAM, a NaN map and a constant map."""
    import io

    import imageio.v3 as iio

    from conftest import invoke
    from xaicli.io.stream import TarWriter, read_tar
    from xaicli.models.builtin.shapes import make_sample

    folder = tmp_path_factory.mktemp("seg")
    for i in range(2):
        iio.imwrite(folder / f"img{i}.png", make_sample(9100 + i, "segmentation")[0])
    r = invoke(["predict", "-m", "builtin:shapes-seg", "--device", "cpu", folder])
    assert r.exit_code == 0, r.stderr
    buf = io.BytesIO()
    w = TarWriter(buf)
    for i, rec in enumerate(read_tar(io.BytesIO(r.stdout), "predict")):
        target = {"targets": [{"kind": "mask", "label": "blob", "index": 0}]}
        cam = smooth_maps(rec.image.shape[:2], 1, i)[0][None].astype(np.float32)
        nan = cam.copy()
        nan[0, 0, 0] = np.nan
        for name, values in (("good", cam), ("nan", nan), ("flat", np.ones_like(cam))):
            rec.add_map(f"cam/{name}/x", values, {"kind": "cam", "method": name, "layer": "x", **target})
        w.add_record(rec)
    w.close()
    return buf.getvalue()


def test_stats_model_metrics_null_with_one_warning_per_run(cli, seg_stream):
    import json

    r = cli(["stats", "-m", "builtin:shapes-seg", "--device", "cpu", "--metrics", "confidence,road",
             "--road-percentiles", "50", "-b", "8"], input=seg_stream)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 6 and "deletion_auc" not in rows[0] and "mean" not in rows[0]
    for row in rows:
        keys = ("confidence_drop", "confidence_increase", "road_morf", "road_lerf", "road_combined")
        if row["method"] == "good":
            assert all(isinstance(row[k], (int, float)) for k in keys), row
        else:
            assert all(row[k] is None for k in keys), row
    warnings = [ln for ln in r.stderr.splitlines() if "--metrics" in ln]
    # one per metric and reason for the whole run (2 records x 2 bad maps would be 8 per-record lines)
    assert len(warnings) == 4, r.stderr
    assert sum("NaN" in ln for ln in warnings) == 2 and sum("constant" in ln for ln in warnings) == 2


# -- Quantus 0.6: faithfulness correlation, monotonicity, IROF ------------------------------------

class ScoreNet(torch.nn.Module):
    """What Quantus calls: unit image in, our score out as a 'class' column (the segmenter's
    region logit sum as one class; the classifier's logits, Quantus applying the softmax)."""

    def __init__(self, model, region):
        super().__init__()
        self.net = model.net                  # a submodule: Quantus's randomisation reaches the weights
        self.model, self.region = model, region

    def adapter(self):
        import dataclasses

        return dataclasses.replace(self.model, net=self.net)

    def forward(self, u):
        model = self.adapter()
        logits = model.forward(model.normalize(model.match_channels(u)))
        if self.region is None:
            return logits
        return (logits[:, :1] * torch.from_numpy(self.region.astype(np.float32))).sum(dim=(-2, -1))


def quantus_score(metric, model, image, index, region, smap, seed, own_channels=False, **kw):
    """Quantus's value on the unit image: as the model takes it, or (`own_channels`) in the
    image's own channels (a gray image stays one channel)."""
    np.random.seed(seed % 2 ** 32)
    x = model.image_to_unit(image).numpy()
    if own_channels:
        x = (image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0))[None].astype(np.float32) / 255.0
    a = smap.astype(np.float32)[None, None]
    y = np.array([index if region is None else 0])
    return metric(model=ScoreNet(model, region).eval(), x_batch=x, y_batch=y, a_batch=a, device="cpu",
                  softmax=region is None, **kw)


@pytest.mark.parametrize("which", ["cls", "seg", "hf", "smp"])
def test_faithfulness_correlation_and_monotonicity_equal_quantus(which, model):
    import quantus

    image, index, region = case(model, 4)
    maps = smooth_maps(image.shape[:2], 2, 4)
    subset = min(2048, image.shape[0] * image.shape[1] // 2)
    opts = {"samples": 6, "subset_size": subset}
    fc, ctx, group = run_metric("faithfulness_correlation", model, image, index, region, maps, **opts)
    step = image.shape[0] * image.shape[1]      # Quantus wants it to divide H·W
    mono, _, _ = run_metric("monotonicity", model, image, index, region, maps, samples=3, subset_size=step)
    for mt, f, m in zip(group, fc, mono):
        ref = quantus_score(quantus.FaithfulnessCorrelation(nr_runs=6, subset_size=subset, perturb_baseline=0.0,
                                                            disable_warnings=True, return_aggregate=False),
                            model, image, index, region, mt.smap, ctx.seed(mt, "faithfulness_correlation"))[0]
        assert f["faithfulness_correlation"] == pytest.approx(ref, abs=1e-4)
        ref = quantus_score(quantus.MonotonicityCorrelation(nr_samples=3, features_in_step=step,
                                                            disable_warnings=True),
                            model, image, index, region, mt.smap, ctx.seed(mt, "monotonicity"))[0]
        assert m["monotonicity"] == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("which", ["cls", "hf"])     # the segmenter too in bench/check_stats_references.py
def test_irof_equals_quantus(which, model, monkeypatch):
    import quantus
    from quantus.functions.perturb_func import baseline_replacement_by_mask

    # Quantus 0.6 on numpy 2.4: np.trapz is gone (np.trapezoid is the same rule), and IROF's
    # (N,1,H,W) superpixel mask fails baseline_replacement_by_mask's shape check on 3 channels
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)

    def by_mask(arr, mask, **kw):
        return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kw)

    image, index, region = case(model, 5)
    maps = smooth_maps(image.shape[:2], 1, 5)          # one forward per superpixel (~100), twice
    got, ctx, group = run_metric("irof", model, image, index, region, maps)
    for mt, row in zip(group, got):
        ref = quantus_score(quantus.IROF(perturb_func=by_mask, disable_warnings=True, return_aggregate=False),
                            model, image, index, region, mt.smap, 0)[0]
        assert row["irof"] == pytest.approx(ref, abs=1e-4 * max(1.0, abs(ref)))


# -- Quantus 0.6: robustness and random logit (maps recomputed through their method) --------------

GRADCAM = {"cls": ("cam/gradcam/last", {"kind": "cam", "method": "gradcam", "layer": "last"}),
           "seg": ("cam/gradcam/decoder_last", {"kind": "cam", "method": "gradcam", "layer": "decoder_last"})}
GRADCAM.update(hf=GRADCAM["cls"], smp=GRADCAM["seg"])


def quantus_explainer(group, adapter):
    """Quantus's explain_func: our recomputation of the map on Quantus's (perturbed) unit input."""
    from xaicli.explain.randomization import recompute_function
    from xaicli.explain.targets import Target

    explain = recompute_function(group[0])

    def explain_func(model, inputs, targets, **kw):
        chw = np.asarray(inputs[0], np.float64) * 255.0
        img = (chw[0] if chw.shape[0] == 1 else np.moveaxis(chw, 0, -1)).astype(np.float32)
        k = int(np.asarray(targets).ravel()[0])
        target = None if group[0].pred_mask is not None else Target("class", k, adapter.labels[k])
        used = model.adapter() if isinstance(model, ScoreNet) else adapter      # Quantus's randomised copy
        out = explain(used, image=img) if target is None else explain(used, image=img, target=target)
        return out.astype(np.float64)[None, None]

    return explain, explain_func


@pytest.mark.parametrize("which", ["cls", "seg", "hf", "smp"])
def test_max_sensitivity_and_local_lipschitz_equal_quantus(which, model):
    import quantus

    image, index, region = case(model, 6)
    kw = {"samples": 3, "noise": 0.05}
    sens, ctx, group = run_metric("max_sensitivity", model, image, index, region, [np.zeros(image.shape[:2])],
                                  recorded=GRADCAM[which], **kw)
    lip, _, _ = run_metric("local_lipschitz", model, image, index, region, [np.zeros(image.shape[:2])],
                           recorded=GRADCAM[which], **kw)
    explain, explain_func = quantus_explainer(group, model)
    a = explain(model)
    common = dict(nr_samples=3, disable_warnings=True, return_aggregate=False)
    ref = quantus_score(quantus.MaxSensitivity(lower_bound=0.05, **common), model, image, index, region, a,
                        ctx.seed(group[0], "max_sensitivity"), own_channels=True, explain_func=explain_func)[0]
    assert sens[0]["max_sensitivity"] == pytest.approx(ref, abs=1e-4) and ref > 1e-3
    ref = quantus_score(quantus.LocalLipschitzEstimate(perturb_std=0.05, **common), model, image, index, region,
                        a, ctx.seed(group[0], "local_lipschitz"), own_channels=True, explain_func=explain_func)[0]
    assert lip[0]["local_lipschitz"] == pytest.approx(ref, rel=1e-4) and ref > 1e-3


IG = ("attr/integrated_gradients/black", {"kind": "attribution", "method": "integrated_gradients",
                                          "baseline": "black", "layer": None, "steps": 8,
                                          "quadrature": "gausslegendre"})


@pytest.mark.parametrize("which", ["cls", "hf"])
def test_random_logit_equals_quantus(which, model):
    import quantus

    image, index, _ = case(model, 7)
    got, ctx, group = run_metric("random_logit", model, image, index, None, [np.zeros(image.shape[:2])],
                                 recorded=IG)
    explain, explain_func = quantus_explainer(group, model)
    seed = ctx.seed(group[0], "random_logit") % 2 ** 32
    ref = quantus_score(quantus.RandomLogit(num_classes=model.num_classes, seed=seed, disable_warnings=True),
                        model, image, index, None, explain(model), 0, explain_func=explain_func)[0]
    assert got[0]["random_logit"] == pytest.approx(ref, abs=1e-4)


def test_random_logit_is_null_on_a_segmenter(seg_model):
    image, index, region = case(seg_model, 7)
    got, ctx, _ = run_metric("random_logit", seg_model, image, index, region, [np.zeros(image.shape[:2])] * 2,
                             recorded=GRADCAM["seg"])
    assert [g["random_logit"] for g in got] == [None, None] and len(ctx.warned) == 1


def test_completeness_is_the_gap_to_the_score_difference_the_model_gives(cli, cls_model, tmp_path):
    import io
    import json

    import imageio.v3 as iio

    from xaicli.io.stream import read_tar
    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(8, "classification")
    iio.imwrite(tmp_path / "img.png", image)
    r = cli(["attribute", "-m", "builtin:shapes-cls", "--device", "cpu", "-n", "4", "--baseline", "black",
             "-M", "integrated-gradients,deeplift", tmp_path / "img.png"])
    assert r.exit_code == 0, r.stderr
    [rec] = read_tar(io.BytesIO(r.stdout), "attribute")
    s = cli(["stats", "--metrics", "completeness,delta", "--map", "attr/*"], input=r.stdout)
    rows = {row["map"]: row for row in map(json.loads, s.output.splitlines())}
    assert set(rows) == {"attr/integrated_gradients/black", "attr/deeplift/black"}
    k = rows["attr/deeplift/black"]["target_index"]
    with torch.no_grad():
        unit = cls_model.image_to_unit(rec.image)
        logits = cls_model.forward(cls_model.normalize(torch.cat([unit, torch.zeros_like(unit)])))
    gap = float(logits[0, k] - logits[1, k])
    for key, row in rows.items():             # DeepLift stores its scores as IG does: the same key applies
        total = float(rec.arrays[key][0].astype(np.float64).sum())
        assert row["completeness"] == pytest.approx(abs(total - gap) / abs(gap), rel=1e-3, abs=1e-6), key
        assert row["completeness"] == pytest.approx(abs(row["relative_delta"]), rel=1e-3, abs=1e-6), key
    assert rows["attr/integrated_gradients/black"]["completeness"] > 0   # 4 steps leave a gap: it is measured
    cam = cli(["stats", "--metrics", "completeness"],
              input=cli(["cam", "-m", "builtin:shapes-cls", "--device", "cpu", "-M", "gradcam",
                         tmp_path / "img.png"]).stdout)
    assert [json.loads(line)["completeness"] for line in cam.output.splitlines()] == [None]


@pytest.mark.parametrize("which", ["cls", "hf"])
def test_efficient_mprt_equals_quantus(which, model):
    import quantus

    image, index, _ = case(model, 9)
    got, ctx, group = run_metric("efficient_mprt", model, image, index, None, [np.zeros(image.shape[:2])],
                                 recorded=IG, seed=3)
    explain, explain_func = quantus_explainer(group, model)
    ref = quantus_score(quantus.EfficientMPRT(seed=3, complexity_func_kwargs={"n_bins": 100}, disable_warnings=True),
                        model, image, index, None, explain(model), 0, explain_func=explain_func)[0]
    assert got[0]["efficient_mprt"] == pytest.approx(ref, abs=1e-4) and abs(ref) > 1e-3


@pytest.mark.parametrize("which", ["cls", "hf"])     # the segmenter too in bench/check_stats_references.py
def test_smooth_mprt_equals_quantus(which, model):
    """Quantus's SmoothMPRT explains with its own `quantus.explain` (Captum): our saliency equals Captum's."""
    import quantus

    image, index, region = case(model, 10)
    if image.ndim == 2:     # as RGB: Quantus's saliency of a gray input is |Σ_c dS/dx_c|, not Σ_c |dS/dx_c|
        image = np.repeat(image[..., None], 3, axis=-1)
    recorded = ("attr/saliency/none", {"kind": "attribution", "method": "saliency", "baseline": None})
    got, ctx, group = run_metric("smooth_mprt", model, image, index, region, [np.zeros(image.shape[:2])],
                                 recorded=recorded, samples=3, seed=5)
    from xaicli.explain.evaluation.mprt import smooth
    from xaicli.explain.randomization import recompute_function

    explain = recompute_function(group[0])
    seed = ctx.seed(group[0], "smooth_mprt") % 2 ** 32
    intact = smooth(ctx, explain, model, np.random.RandomState(seed))
    metric = quantus.SmoothMPRT(seed=5, nr_samples=3, return_last_correlation=True, skip_layers=True,
                                disable_warnings=True)
    ref = quantus_score(metric, model, image, index, region, intact, seed, own_channels=True,
                        explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"})[0]
    assert got[0]["smooth_mprt"] == pytest.approx(ref, abs=1e-4) and abs(ref) < 0.99


def test_stats_recomputing_metrics_warn_once_for_what_they_cannot_redo(cli, seg_stream):
    import json

    r = cli(["stats", "-m", "builtin:shapes-seg", "--device", "cpu", "--metrics", "max_sensitivity,random_logit",
             "--samples", "1"], input=seg_stream)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 6 and all(x["max_sensitivity"] is None and x["random_logit"] is None for x in rows)
    warnings = [ln for ln in r.stderr.splitlines() if "--metrics" in ln]
    # max_sensitivity: the NaN map, and methods 'good' and 'flat' (not registered); random_logit: a segmenter
    assert len(warnings) == 4, r.stderr
    assert sum("segmenter" in ln for ln in warnings) == 1 and sum("NaN" in ln for ln in warnings) == 1


# -- sufficiency: the metric that compares records ------------------------------------------------

@pytest.fixture(scope="module")
def cls_cam_stream(tmp_path_factory):
    """Seven shapes-cls records, every class, each with a Grad-CAM and a Grad-CAM++ map."""
    import imageio.v3 as iio

    from conftest import invoke
    from xaicli.models.builtin.shapes import make_sample

    folder = tmp_path_factory.mktemp("cls")
    for i in range(7):
        iio.imwrite(folder / f"img{i}.png", make_sample(9300 + i, "classification")[0])
    r = invoke(["cam", "-m", "builtin:shapes-cls", "--device", "cpu", "-M", "gradcam,gradcam++", folder])
    assert r.exit_code == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("window", [3, 64])
def test_sufficiency_equals_quantus_window_by_window(cli, cls_model, cls_cam_stream, window):
    import io
    import json

    import quantus

    from xaicli.io.stream import read_tar

    r = cli(["stats", "-m", "builtin:shapes-cls", "--device", "cpu", "--metrics", "sufficiency",
             "--window", str(window)], input=cls_cam_stream)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.output.splitlines()]
    records = list(read_tar(io.BytesIO(cls_cam_stream), "cam"))
    x = torch.cat([cls_model.image_to_unit(rec.image) for rec in records]).numpy()
    seen = []
    keys = sorted({row["map"] for row in rows})
    assert len(keys) == 2
    for key in keys:
        got = [row["sufficiency"] for row in rows if row["map"] == key]
        a = np.stack([rec.arrays[key][0] for rec in records]).astype(np.float32)[:, None]
        ref = quantus.Sufficiency(disable_warnings=True)(model=ScoreNet(cls_model, None).eval(), x_batch=x,
                                                          y_batch=np.zeros(len(records), int), a_batch=a,
                                                          device="cpu", batch_size=window)
        assert len(got) == len(ref) == 7
        for i, (g, q) in enumerate(zip(got, ref)):
            if i // window * window == 6:              # alone in the last window: null (Quantus says 0)
                assert g is None and q == 0
            else:
                assert g == pytest.approx(float(q), abs=1e-4), (key, i)
        seen += [g for g in got if g is not None]
    assert 0 < len(set(seen)) and min(seen) < max(seen)      # the comparison saw differing scores


def test_sufficiency_is_null_with_one_warning_on_a_segmenter(cli, seg_stream):
    import json

    r = cli(["stats", "-m", "builtin:shapes-seg", "--device", "cpu", "--metrics", "sufficiency"], input=seg_stream)
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["sufficiency"] for line in r.output.splitlines()] == [None] * 6
    assert [ln for ln in r.stderr.splitlines() if "--metrics" in ln] == \
        ["xai: WARNING: --metrics sufficiency: it compares predicted classes, so it needs a classifier; "
         "segmenter maps give null"]


@pytest.mark.parametrize("which", ["cls", "hf"])
def test_sufficiency_run_and_combine_equal_quantus_on_one_batch(which, model):
    """The metric's own two steps (run per record, combine over the window) on 6 images and maps,
    against quantus.Sufficiency on the same batch (the CLI test above covers the windows)."""
    import quantus

    from xaicli.metrics.registry import settle

    metric = registry.metrics()["sufficiency"]
    rows, units, maps = [], [], []
    for seed in range(6):
        image, index, _ = case(model, 20 + seed)
        # maps in two families (so some are alike), each with its own faint noise
        m = smooth_maps(image.shape[:2], 1, seed % 2)[0] + 0.05 * np.random.default_rng(seed).random(image.shape[:2])
        got, _, group = run_metric("sufficiency", model, image, index, None, [m])
        rows.append(got[0])
        units.append(model.image_to_unit(image))
        maps.append(group[0].smap)
    settle(rows, [metric])
    ref = quantus.Sufficiency(disable_warnings=True)(
        model=ScoreNet(model, None).eval(), x_batch=torch.cat(units).numpy(), y_batch=np.zeros(6, int),
        a_batch=np.stack(maps).astype(np.float32)[:, None], device="cpu", batch_size=6)
    assert [r["sufficiency"] for r in rows] == pytest.approx([float(v) for v in ref], abs=1e-4)
    assert len({r["sufficiency"] for r in rows}) > 1          # not one value for every record
