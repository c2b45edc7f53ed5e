"""VarGrad against Captum's NoiseTunnel(Saliency) (nt_type 'vargrad', abs=False) fed the same noisy
copies, on a small CNN, smp U-Net++ and a HF ConvNeXt; through the library and the CLI; `--method
all` and `stats --randomize` on its map.

`captum_noise_tunnel` and `check_cli` are shared with test_method_smoothgrad_sq.py."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from helpers_models import stream_records
from test_method_occlusion import captum_score, classifier_on_disk, settled, tiny_models

from xaicli.explain import attribute as engine
from xaicli.explain import registry
from xaicli.explain.gradients import noisy_copies

pytestmark = pytest.mark.usefixtures("one_thread")


def captum_noise_tunnel(monkeypatch, ad, image, target, nt_type, samples, noise_std, seed, key):
    """NoiseTunnel(Saliency) over the raw gradient (abs=False), its noise replaced by our copies."""
    from captum.attr import NoiseTunnel, Saliency

    unit, score = captum_score(ad, image, target)
    noisy = noisy_copies(unit, samples, noise_std, seed=seed, key=key)
    with monkeypatch.context() as m:
        m.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, stdev, n: noisy.clone()))
        return NoiseTunnel(Saliency(score)).attribute(unit, nt_type=nt_type, nt_samples=samples, stdevs=0.5,
                                                      abs=False)[0].numpy()


def check_library(monkeypatch, models, method, nt_type):
    for name, (ad, image, targets) in models.items():
        (m,) = engine.explain(ad, image, targets, [registry.lookup("attribution", method)], [],
                              settled(samples=7, noise_std=0.2, seed=3), key="img")
        key = method.replace("-", "_")
        assert m.key == f"attr/{key}/none" and (m.info["samples"], m.info["noise_std"], m.info["seed"]) == (7, 0.2, 3)
        for t, target in enumerate(targets):
            ref = captum_noise_tunnel(monkeypatch, ad, image, target, nt_type, 7, 0.2, 3, "img")
            assert np.abs(ref).max() > 0
            np.testing.assert_allclose(m.values[t], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=name)


def check_cli(cli, monkeypatch, root, method, nt_type):
    """`-M all` on a HF ConvNeXt: the map equals Captum's; `stats --randomize` gives it a row."""
    from xaicli.explain.targets import Target
    from xaicli.models.loader import load_model

    model, png, image = classifier_on_disk(root, (36, 44, 3), seed=3)
    key = method.replace("-", "_")
    r = cli(["attribute", "-m", model, png, "-M", "all", "-n", "4", "--samples", "6", "--seed", "2",
             "--occlusion-window", "18", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    (root / "rec.tar").write_bytes(r.stdout)
    (rec,) = stream_records(r.stdout)
    arr, info = rec[f"attr/{key}/none"], rec["meta"]["maps"][f"attr/{key}/none"]
    t = info["targets"][0]
    ref = captum_noise_tunnel(monkeypatch, load_model(model, device="cpu"), image,
                              Target("class", t["index"], t["label"]), nt_type, 6, 0.15, 2, rec["meta"]["id"])
    np.testing.assert_allclose(arr[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    r = cli(["stats", "-m", model, "--randomize", "--rand-steps", "2", "-f", "csv", root / "rec.tar"])
    assert r.exit_code == 0, r.stderr
    rows = {row["method"]: row for row in csv.DictReader(io.StringIO(r.output))}
    assert rows[key]["rand_spearman_all"] != "" and rows[key]["rand_spearman_top"] != ""
    return rec


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("vargrad"))


def test_equals_captum_noise_tunnel_vargrad(monkeypatch, models):
    check_library(monkeypatch, models, "vargrad", "vargrad")


def test_cli_all_equals_captum_and_stats_randomize_takes_it(cli, monkeypatch, tmp_path):
    rec = check_cli(cli, monkeypatch, tmp_path, "vargrad", "vargrad")
    assert float(rec["attr/vargrad/none"].min()) >= 0
