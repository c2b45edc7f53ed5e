"""Deletion/insertion and the randomisation sanity check: hand-made models, then the built-in ones."""

import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xaicli.explain import faithfulness as fa  # noqa: E402
from xaicli.explain import randomization as rz  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


class PixelModel:
    """A 'segmenter' whose logit map is the image's first channel: scores are sums of pixels."""

    task = "segmentation"
    num_classes = 1

    def image_to_unit(self, image):
        return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]

    def normalize(self, x):
        return x

    def forward(self, x):
        return x[:, :1]

    def to_image_size(self, maps, hw):
        return maps

    def probabilities(self, logits):
        return torch.sigmoid(logits)


def white(h=1, w=4):
    return np.full((h, w, 3), 255, np.uint8)


def test_auc_is_the_trapezoid_over_a_unit_axis():
    assert fa.auc([0.0, 1.0]) == 0.5
    assert fa.auc([1.0, 1.0, 1.0]) == 1.0
    assert fa.auc([0.0, 1.0, 0.0]) == 0.5


def test_deletion_and_insertion_curves_by_hand():
    smap = np.array([[4.0, 3.0, 2.0, 1.0]])            # removal order: pixel 0, 1, 2, 3
    r = fa.deletion_insertion(PixelModel(), white(), smap, 0, region=np.ones((1, 4)), steps=4)
    assert r["deletion_curve"] == [4, 3, 2, 1, 0]
    assert r["insertion_curve"] == [0, 1, 2, 3, 4]
    assert r["deletion_auc"] == pytest.approx((4 / 2 + 3 + 2 + 1 + 0 / 2) / 4)
    # the region is the pixel the map ranks last: deleting leaves it until the end
    r = fa.deletion_insertion(PixelModel(), white(), smap, 0, region=np.array([[0, 0, 0, 1]]), steps=4)
    assert r["deletion_curve"] == [1, 1, 1, 1, 0] and r["deletion_auc"] == pytest.approx(3.5 / 4)
    assert r["insertion_curve"] == [0, 0, 0, 0, 1] and r["insertion_auc"] == pytest.approx(0.5 / 4)


def test_mean_baseline_replaces_pixels_with_the_image_mean():
    img = np.zeros((1, 4, 3), np.uint8)
    img[0, :2] = 255                                    # channel mean 0.5
    r = fa.deletion_insertion(PixelModel(), img, np.array([[4.0, 3.0, 2.0, 1.0]]), 0,
                              region=np.ones((1, 4)), steps=2, baseline="mean")
    # 0: 1+1+0+0; half deleted: 0.5+0.5+0+0; all: 4 x 0.5
    assert r["deletion_curve"] == [2.0, 1.0, 2.0]


def test_many_maps_share_end_points_and_match_single_runs():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    maps = [rng.random((3, 3)) for _ in range(3)]
    region = np.ones((3, 3))
    many = fa.deletion_insertion_many(PixelModel(), img, maps, 0, region=region, steps=3, batch_size=4)
    for m, got in zip(maps, many):
        one = fa.deletion_insertion(PixelModel(), img, m, 0, region=region, steps=3)
        assert got["deletion_curve"] == pytest.approx(one["deletion_curve"])
        assert got["insertion_auc"] == pytest.approx(one["insertion_auc"])


def test_nan_map_or_empty_region_give_null():
    nan = np.array([[1.0, np.nan, 0.0, 0.0]])
    assert fa.deletion_insertion(PixelModel(), white(), nan, 0, region=np.ones((1, 4)))["deletion_auc"] is None
    r = fa.deletion_insertion(PixelModel(), white(), np.ones((1, 4)), 0, region=np.zeros((1, 4)))
    assert r["deletion_auc"] is None and r["insertion_auc"] is None


def test_checkpoints_and_column_names():
    assert rz.checkpoints(10, 1) == [1]
    assert rz.checkpoints(10, 4) == [1, 4, 7, 10]
    assert rz.checkpoints(2, 5) == [1, 2]
    assert rz.column("decoder.blocks.x_0_4") == "rand_spearman_decoder_blocks_x_0_4"


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 2, 1)
        self.b = torch.nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_randomizer_cascades_from_the_output_end_and_leaves_the_model_alone():
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    net = TwoLayer()
    ad = ModelAdapter(LogitsModule(net), "segmentation", ["x"], Preprocessing(channels=1, mean=(0.0,), std=(1.0,)),
                      torch.device("cpu"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    r = rz.Randomizer(ad, steps=2, seed=0)
    r.prepare(img)
    assert r.layers == ["b", "a"]                                  # top (last run) first
    (n1, m1), (n2, m2) = r.models
    assert (n1, n2) == ("b", "a")
    assert torch.equal(m1.module.a.weight, net.a.weight) and not torch.equal(m1.module.b.weight, net.b.weight)
    assert not torch.equal(m2.module.a.weight, net.a.weight)
    assert torch.equal(m2.module.b.weight, m1.module.b.weight)     # one cascade: the top stays as randomised
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # a 'map' that ignores the model never changes: flagged; one that follows the weights is not
    out = r.scores(img, lambda a: np.arange(16.0).reshape(4, 4))
    assert out["rand_spearman_top"] == 1.0 and out["rand_spearman_all"] == 1.0 and out["rand_flag"] == 1
    assert out["rand_spearman_b"] == 1.0 and out["rand_spearman_a"] == 1.0


# -- the built-in models -----------------------------------------------------------

@pytest.fixture(scope="module")
def seg_model():
    from xaicli.models.loader import load_model

    return load_model("builtin:shapes-seg", device="cpu")


def test_evidence_first_map_beats_a_random_map_on_50_images(seg_model):
    """Deletion AUC lower and insertion AUC higher than a random ranking's on ≥ 95% of images."""
    from xaicli.models.builtin.shapes import make_sample

    deletion_wins = insertion_wins = 0
    for seed in range(50):
        image, evidence, _ = make_sample(5000 + seed, "segmentation")
        rng = np.random.default_rng(seed)
        truth = evidence + 1e-3 * rng.random(evidence.shape)      # evidence first, ties broken at random
        noise = rng.random(evidence.shape)
        good, rand = fa.deletion_insertion_many(seg_model, image, [truth, noise], 0, region=evidence,
                                                steps=3, batch_size=32)
        deletion_wins += good["deletion_auc"] < rand["deletion_auc"]
        insertion_wins += good["insertion_auc"] > rand["insertion_auc"]
    assert deletion_wins >= 48 and insertion_wins >= 48, (deletion_wins, insertion_wins)


def _predicted_records(cli, tmp_path, n=2, no_image=False):
    import imageio.v3 as iio

    from xaicli.io.stream import read_tar
    from xaicli.models.builtin.shapes import make_sample

    paths, evidence = [], []
    for i in range(n):
        image, ev, _ = make_sample(9000 + i, "segmentation")
        p = tmp_path / f"img{i}.png"
        iio.imwrite(p, image)
        paths.append(p)
        evidence.append(ev)
    r = cli(["predict", "-m", "builtin:shapes-seg", *paths] + (["--no-image"] if no_image else []))
    assert r.exit_code == 0, r.stderr
    return list(read_tar(io.BytesIO(r.stdout), "predict")), evidence


def test_stats_with_a_model_adds_deletion_and_insertion(cli, tmp_path):
    from xaicli.io.stream import TarWriter

    records, evidence = _predicted_records(cli, tmp_path)
    buf = io.BytesIO()
    w = TarWriter(buf)
    rng = np.random.default_rng(0)
    for rec, ev in zip(records, evidence):
        target = {"targets": [{"kind": "mask", "label": "blob", "index": 0}]}
        rec.add_map("cam/evidence/x", ev[None].astype(np.float32) + 1e-3 * rng.random((1, *ev.shape), np.float32),
                    {"kind": "cam", "method": "evidence", "layer": "x", **target})
        rec.add_map("cam/random/x", rng.random((1, *ev.shape), np.float32),
                    {"kind": "cam", "method": "random", "layer": "x", **target})
        w.add_record(rec)
    w.close()
    r = cli(["stats", "-m", "builtin:shapes-seg", "--steps", "4", "--device", "cpu"], input=buf.getvalue())
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 4
    by = {(x["id"], x["method"]): x for x in rows}
    for rid in {x["id"] for x in rows}:
        assert by[rid, "evidence"]["deletion_auc"] < by[rid, "random"]["deletion_auc"]
        assert by[rid, "evidence"]["insertion_auc"] > by[rid, "random"]["insertion_auc"]
    # without -m the same records give the same model-free numbers and no model keys
    r2 = cli(["stats"], input=buf.getvalue())
    plain = [json.loads(line) for line in r2.output.splitlines()]
    assert "deletion_auc" not in plain[0]
    assert plain[0]["focus_fraction"] == rows[0]["focus_fraction"]


def test_records_without_image_are_refused_for_deletion(cli, tmp_path):
    records, evidence = _predicted_records(cli, tmp_path, n=1, no_image=True)
    rec = records[0]
    rec.add_map("cam/evidence/x", evidence[0][None].astype(np.float32), {"targets": [{"kind": "mask", "index": 0}]})
    r = cli(["stats", "-m", "builtin:shapes-seg"], input=rec.to_bytes())
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "--no-image" in r.stderr


# -- randomisation on the built-in segmenter ---------------------------------------------

def _seg_target(model, seed):
    from xaicli.explain.targets import Target
    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(seed, "segmentation")
    with torch.no_grad():
        logits = model.to_image_size(model.forward(model.prepare(image)), image.shape[:2])
    return image, Target("mask", 0, "blob", (logits[0, 0] > 0).numpy())


RECORDED = {
    "integrated_gradients": ("attr/integrated_gradients/black",
                             {"kind": "attribution", "method": "integrated_gradients", "baseline": "black",
                              "layer": None, "steps": 8, "quadrature": "gausslegendre"}),
    "gradcam": ("cam/gradcam/decoder_last", {"kind": "cam", "method": "gradcam", "layer": "decoder_last"}),
}


@pytest.mark.parametrize("method", list(RECORDED))
def test_randomising_the_trained_segmenter_decorrelates_ig_and_gradcam(seg_model, method):
    """The cascade ends with |rho| < 0.3 and no flag. The top layer alone (the 8->1 head conv)
    leaves |rho| at 0.3-0.8 on this model (its decoder features already outline the blob),
    so the top-layer value is only required to be further from 0 than the bottom one."""
    from xaicli.io.record import Record
    from xaicli.metrics.report import MapTarget

    image, target = _seg_target(seg_model, 2)
    rec = Record.new("r")
    rec.meta["task"] = "segmentation"
    rec.arrays["image"] = image
    key, info = RECORDED[method]
    mt = MapTarget(rec, key, info, 0, {"kind": "mask", "index": 0, "label": "blob"}, None, None, target.mask)
    explain = rz.recompute_function(mt)                  # the library path `xai stats --randomize` takes
    r = rz.Randomizer(seg_model, steps=2, seed=0)
    out = r.scores(image, explain)
    assert r.layers[0] == "segmentation_head.0" and r.layers[-1] == "encoder.model.conv1.0"
    assert out["rand_spearman_segmentation_head_0"] == out["rand_spearman_top"]
    assert out["rand_spearman_encoder_model_conv1_0"] == out["rand_spearman_all"]
    assert abs(out["rand_spearman_all"]) < 0.3 and out["rand_flag"] == 0
    assert abs(out["rand_spearman_top"]) > abs(out["rand_spearman_all"])
    assert abs(out["rand_spearman_top"]) < 0.95                      # the map did change


CLS_RECORDED = {
    "integrated_gradients": RECORDED["integrated_gradients"],
    "gradcam": ("cam/gradcam/last", {"kind": "cam", "method": "gradcam", "layer": "last"}),
}


@pytest.mark.parametrize("method", list(CLS_RECORDED))
def test_randomising_the_trained_classifier_decorrelates_ig_and_gradcam(method):
    """On 10 images of the colour classifier the full cascade leaves median |rho| < 0.3.

    Measured, not asserted: the top layer alone (the linear head) leaves median |rho| at
    0.31 (IG) and 0.55 (Grad-CAM): a random head mixes last-stage channels that all fire
    on the one object, so the object stays lit (see the issue note). Seed 0 is fixed:
    Grad-CAM's full-cascade median over 20 images is 0.18, 0.36 and 0.32 for seeds 0-2
    (README, sanity check), so this checks one draw, not every draw."""
    from xaicli.io.record import Record
    from xaicli.metrics.report import MapTarget
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    model = load_model("builtin:shapes-cls", device="cpu")
    r = rz.Randomizer(model, steps=2, seed=0)
    key, info = CLS_RECORDED[method]
    rho_all, rho_top = [], []
    for seed in range(5000, 5010):
        image, _, _ = make_sample(seed, "classification")
        with torch.no_grad():
            k = int(model.forward(model.prepare(image)).argmax())
        rec = Record.new("r")
        rec.meta["task"] = "classification"
        rec.arrays["image"] = image
        mt = MapTarget(rec, key, info, 0, {"kind": "class", "index": k, "label": model.labels[k]}, None, None, None)
        out = r.scores(image, rz.recompute_function(mt))
        # None: the randomised map is constant (Grad-CAM all zero after its ReLU), so it kept
        # none of the original's ranking; other Randomizer seeds give that on some images.
        rho_all.append(abs(out["rand_spearman_all"] or 0.0))
        rho_top.append(abs(out["rand_spearman_top"] or 0.0))
    assert r.layers[0] == "classifier.1" and r.layers[-1] == "resnet.embedder.embedder.convolution"
    assert np.median(rho_all) < 0.3, rho_all
    assert np.median(rho_top) < 0.95, rho_top                     # the head alone changes the map too


def test_pipeline_attribute_cam_stats_randomize(cli, tmp_path):
    """predict | attribute | cam | stats -m --randomize: every map gets its rand_ and AUC keys."""
    import csv

    import imageio.v3 as iio

    from xaicli.models.builtin.shapes import make_sample

    image, _, _ = make_sample(2, "segmentation")
    iio.imwrite(tmp_path / "img.png", image)
    m = ["-m", "builtin:shapes-seg", "--device", "cpu"]
    r = cli(["predict", *m, tmp_path / "img.png"])
    r = cli(["attribute", *m, "-n", "8"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    r = cli(["cam", *m, "-M", "gradcam"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    r = cli(["stats", *m, "--randomize", "--rand-steps", "2", "--steps", "2", "-f", "csv"], input=r.stdout)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert sorted(row["method"] for row in rows) == ["gradcam", "integrated_gradients"]
    for row in rows:
        for key in ("rand_spearman_top", "rand_spearman_all", "rand_flag", "rand_spearman_segmentation_head_0",
                    "rand_spearman_encoder_model_conv1_0", "deletion_auc", "insertion_auc", "delta"
                    if row["method"] == "integrated_gradients" else "roc_auc"):
            assert row[key] != "", (row["method"], key)
        assert abs(float(row["rand_spearman_all"])) < 0.3 and row["rand_flag"] == "0"
