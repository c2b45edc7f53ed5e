"""GradientSHAP against Captum's `GradientShap` fed the same draws (noise, baseline picks, α), on a
small CNN, smp U-Net++ and a HF ConvNeXt; through the library and the CLI; `--method all` and
`stats --randomize` on its map."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from conftest import error_line
from helpers_models import stream_records
from test_method_occlusion import captum_score, classifier_on_disk, settled, tiny_models

from xaicli.explain import attribute as engine
from xaicli.explain import registry
from xaicli.explain.attribution.gradient_shap import draws

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("gradient_shap"))


def captum_gradient_shap(monkeypatch, ad, image, target, baselines, samples, noise_std, seed, key):
    """Captum's GradientShap with its three random draws replaced by ours: the noise NoiseTunnel adds,
    the baseline indices (np.random.choice) and α (np.random.uniform)."""
    from captum.attr import GradientShap, NoiseTunnel

    unit, score = captum_score(ad, image, target)
    noisy, index, alpha = draws(unit, baselines, samples, noise_std, seed=seed, key=key)
    with monkeypatch.context() as m:
        m.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, stdev, n: noisy.clone()))
        m.setattr(np.random, "choice", lambda k, n: np.asarray(index.tolist()))
        m.setattr(np.random, "uniform", lambda lo, hi, n: alpha.double().numpy())
        return GradientShap(score).attribute(unit, baselines, n_samples=samples, stdevs=0.5)[0].numpy()


def _baselines(ad, image, name, samples, seed, key, noise_std):
    from xaicli.explain.baselines import make_baselines, parse_baseline

    b = parse_baseline(name)
    return make_baselines(b, ad.image_to_unit(image), mean=ad.preprocessing.mean, samples=samples if b.random else 1,
                          seed=seed, key=key, noise_std=noise_std, to_unit=ad.image_to_unit)


@pytest.mark.parametrize("name,baseline,k", [("cnn", "uniform", 3), ("unetpp", "blur", 1), ("convnext", "noise", 4)])
def test_equals_captum_gradient_shap_with_the_same_draws(monkeypatch, models, name, baseline, k):
    from xaicli.explain.baselines import parse_baselines

    ad, image, targets = models[name]
    opts = settled(samples=6, noise_std=0.1, seed=5, baseline_samples=k)
    (m,) = engine.explain(ad, image, targets, [registry.lookup("attribution", "gradientshap")],
                          parse_baselines([baseline]), opts, key="img")
    assert m.key == f"attr/gradient_shap/{baseline}" and m.info["baseline_samples"] == k
    assert (m.info["samples"], m.info["noise_std"], m.info["seed"]) == (6, 0.1, 5)
    bases = _baselines(ad, image, baseline, k, 5, "img", 0.1)
    for t, target in enumerate(targets):
        ref = captum_gradient_shap(monkeypatch, ad, image, target, bases, 6, 0.1, 5, "img")
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(m.values[t], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_draws_are_seeded_by_seed_and_record_and_pick_every_baseline():
    x, b = torch.rand(1, 3, 8, 8), torch.rand(5, 3, 8, 8)
    one = draws(x, b, 200, 0.2, seed=0, key="a")
    assert all(torch.equal(u, v) for u, v in zip(one, draws(x, b, 200, 0.2, seed=0, key="a")))
    assert not torch.equal(one[0], draws(x, b, 200, 0.2, seed=1, key="a")[0])
    assert not torch.equal(one[2], draws(x, b, 200, 0.2, seed=0, key="b")[2])
    assert set(one[1].tolist()) == set(range(5)) and 0 <= float(one[2].min()) and float(one[2].max()) < 1
    assert abs(float((one[0] - x).std()) - 0.2 * float(x.max() - x.min())) < 0.01


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    return classifier_on_disk(tmp_path_factory.mktemp("gradient_shap_cli"), (36, 40, 3), seed=2)


def test_cli_all_equals_captum_and_stats_randomize_takes_it(cli, monkeypatch, classifier_files, tmp_path):
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    model, png, image = classifier_files
    r = cli(["attribute", "-m", model, png, "-M", "all", "-n", "4", "-B", "uniform", "--baseline-samples", "2",
             "--samples", "5", "--seed", "7", "--occlusion-window", "18", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    (tmp_path / "rec.tar").write_bytes(r.stdout)
    (rec,) = stream_records(r.stdout)
    arr, info = rec["attr/gradient_shap/uniform"], rec["meta"]["maps"]["attr/gradient_shap/uniform"]
    ad = load_model(model, device="cpu")
    key = rec["meta"]["id"]
    t = info["targets"][0]
    ref = captum_gradient_shap(monkeypatch, ad, image, Target("class", t["index"], t["label"]),
                               _baselines(ad, image, "uniform", 2, 7, key, 0.15), 5, 0.15, 7, key)
    np.testing.assert_allclose(arr[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    r = cli(["stats", "-m", model, "--randomize", "--rand-steps", "2", "-f", "csv", tmp_path / "rec.tar"])
    assert r.exit_code == 0, r.stderr
    rows = {row["method"]: row for row in csv.DictReader(io.StringIO(r.output))}
    assert rows["gradient_shap"]["rand_spearman_all"] != "" and rows["gradient_shap"]["rand_spearman_top"] != ""


def test_no_samples_is_a_usage_error(cli, classifier_files):
    model, png, _ = classifier_files
    line = error_line(cli(["attribute", "-m", model, png, "-M", "gradient-shap", "--samples", "0"]), 2)
    assert "--samples" in line
