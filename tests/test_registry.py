"""The method registry: declarations found by discovery, resolved by name, and one class is enough
for a new method to get its CLI option, its engine run, its meta and `stats --randomize`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from xaicli.explain import registry

FAMILIES = list(registry.PACKAGES)


@pytest.fixture
def sandbox():
    """Methods declared by a test stay in the test."""
    for family in FAMILIES:
        registry.methods(family)
    saved = {f: dict(d) for f, d in registry._REGISTRY.items()}
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.fixture(scope="module")
def classifier():
    from helpers_models import tiny_classifier

    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    model = tiny_classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    ad = ModelAdapter(LogitsModule(model), "classification", ["a", "b", "c"], Preprocessing(size=(24, 24)),
                      torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    return ad, image


@pytest.mark.parametrize("family", FAMILIES)
def test_every_declaration_is_complete(family):
    methods = registry.methods(family)
    assert len(methods) >= 5
    assert sum(m.default for m in methods.values()) == 1
    keys = [m.key for m in methods.values()]
    assert len(set(keys)) == len(keys)
    for m in methods.values():
        assert m.summary and m.reference and m.reference_package and m.checked and m.notes, m.name
        assert set(m.tasks) <= set(registry.TASKS) and m.tasks, m.name
    for o in registry.options(family):
        assert o.help and all(d.startswith("-") for d in o.decls), o.name


def test_discovery_imports_no_torch_and_no_numpy():
    """The CLI imports every method module for --help and completion."""
    probe = ("import json, sys\nfrom xaicli.explain import registry\n"
             "names = {f: list(registry.methods(f)) for f in registry.PACKAGES}\n"
             "[registry.options(f) for f in registry.PACKAGES]\n"
             "print(json.dumps([names, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy'})]))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    names, heavy = json.loads(proc.stdout)
    assert heavy == [] and "gradcam" in names["cam"] and "saliency" in names["attribution"]


@pytest.mark.parametrize("family,spelling,name", [
    ("attribution", "ig", "integrated-gradients"), ("attribution", "integrated_gradients", "integrated-gradients"),
    ("attribution", "InputXGradient", "input-x-gradient"), ("attribution", "input_x_gradient", "input-x-gradient"),
    ("attribution", "smoothgrad_ig", "smoothgrad-ig"), ("cam", "kpca_cam", "kpcacam"),
    ("cam", "gradcam_elementwise", "gradcam-elementwise"), ("cam", "Grad-CAM++", "gradcam++"),
    ("cam", "random", "randomcam"),
])
def test_spellings_resolve(family, spelling, name):
    assert registry.lookup(family, spelling).name == name
    assert registry.lookup(family, spelling + "x") is None


def test_all_is_what_fits_the_model_and_the_layers():
    names = lambda *a: [m.name for m in registry.resolve(*a)]   # noqa: E731
    cls, seg = names("cam", ["all"], "classification", 1), names("cam", ["all"], "segmentation", 2)
    assert "finercam" in cls and "finercam" not in seg
    assert "refinecam" not in cls and "refinecam" in seg and "randomcam" not in cls + seg
    assert names("cam", ["gradcam,layercam", "gradcam"]) == ["gradcam", "layercam"]
    assert names("attribution", ["all"], "segmentation") == list(registry.methods("attribution"))
    assert names("attribution", None) == ["integrated-gradients"] and names("cam", None) == ["gradcam"]


@pytest.mark.parametrize("command,family", [("attribute", "attribution"), ("cam", "cam")])
def test_cli_options_and_choices_come_from_the_registry(command, family):
    import typer

    from xaicli.cli.app import app

    cmd = typer.main.get_command(app).commands[command]
    flags = {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    for o in registry.options(family):
        assert set("/".join(o.decls).split("/")) <= flags, o.name
    method = next(p for p in cmd.params if "--method" in p.opts)
    ctx = cmd.make_context(command, [], resilient_parsing=True)
    choices = [c.value for c in method.shell_complete(ctx, "")]
    assert choices == [*registry.methods(family), "all"]
    for name in registry.methods(family):
        assert name in cmd.help and name in method.help


def test_a_method_unfit_for_the_model_fails_when_named_and_is_left_out_of_all(sandbox, classifier, caplog):
    from xaicli.errors import XaiError
    from xaicli.explain.attribution import AttributionMethod

    class Picky(AttributionMethod):
        name = "test-picky"

        def unfit(self, adapter, image):
            return f"it cannot explain a {adapter.task} model; use saliency"

    ad, image = classifier
    fit = lambda names: [m.name for m in registry.applicable(   # noqa: E731
        "attribution", registry.resolve("attribution", names, ad.task), names, ad, image)]
    assert "test-picky" in [m.name for m in registry.resolve("attribution", ["all"])]   # the model unknown: kept
    with caplog.at_level("INFO", logger="xai"):
        fitting = fit(["all"])
    assert "test-picky" not in fitting and "saliency" in fitting
    assert "test-picky left out: it cannot explain a classification model" in caplog.text
    with pytest.raises(XaiError, match="^--method test-picky: it cannot explain a classification model; use "
                                       "saliency$") as err:
        fit(["saliency,test-picky"])
    assert err.value.exit_code == 1


def test_a_vit_only_method_is_left_out_of_all_elsewhere_and_refused_by_name(sandbox):
    from xaicli.errors import XaiUsageError
    from xaicli.explain.cams import CamMethod

    class TokensOnly(CamMethod):
        name = "test-tokens-only"
        token_layers = True

    names = lambda tokens: [m.name for m in registry.resolve("cam", ["all"], "classification", 1, tokens)]  # noqa: E731
    assert "test-tokens-only" in names(True) and "test-tokens-only" not in names(False)
    assert "test-tokens-only" in names(None)                     # the library, not told the layers: all
    with pytest.raises(XaiUsageError, match="ViT layers only"):
        registry.resolve("cam", ["test-tokens-only"], "classification", 1, False)


def test_an_option_declared_twice_is_refused(sandbox):
    from xaicli.explain.attribution import AttributionMethod
    from xaicli.explain.registry import Option

    class Twice(AttributionMethod):
        name = "test-twice"
        options = (Option("samples", int, 3, help="another --samples"),)

    with pytest.raises(RuntimeError, match="declared twice"):
        registry.options("attribution")


def test_a_taken_alias_is_refused(sandbox):
    from xaicli.explain.cams import CamMethod

    with pytest.raises(RuntimeError, match="already registered"):
        class Clash(CamMethod):
            name = "test-clash"
            aliases = ("grad-cam",)


# -- the contract: one class is a whole method ---------------------------------------

def test_one_attribution_class_is_a_method_end_to_end(sandbox, classifier):
    """A class with one new option: a CLI option, a map with its meta, and a redo from that meta."""
    from xaicli.cli.methods import with_method_options
    from xaicli.explain import attribute as engine
    from xaicli.explain.attribution import AttributionMethod, settle
    from xaicli.explain.registry import Option
    from xaicli.explain.targets import Target

    class ScaledGradient(AttributionMethod):
        name = "test-scaled-gradient"
        options = (Option("gradient_scale", float, 2.0, help="Scale of the test gradient."),)

        def job(self, x, baseline, options, key):
            from xaicli.explain.integrated_gradients import Job

            return Job(self.key, x, x, integral=False, scales=torch.full_like(x, options["gradient_scale"]))

    @with_method_options("attribution")
    def command(method=None, **options):
        return options

    assert "gradient_scale" in __import__("inspect").signature(command).parameters
    ad, image = classifier
    method = registry.resolve("attribution", ["test_scaled_gradient"])[0]
    options = settle({**registry.option_defaults("attribution"), "gradient_scale": 3.0})
    (m,) = engine.explain(ad, image, [Target("class", 1, "b")], [method], [], options, key="r")
    assert m.key == "attr/test_scaled_gradient/none" and m.info["gradient_scale"] == 3.0
    x = ad.image_to_unit(image).requires_grad_(True)
    (g,) = torch.autograd.grad(ad.forward(ad.normalize(x))[0, 1], x)
    np.testing.assert_allclose(m.values[0], 3.0 * g[0].numpy(), rtol=1e-5, atol=1e-7)
    redone = engine.redo(ad, image, Target("class", 1, "b"), method, m.info, "r")
    np.testing.assert_array_equal(redone, m.values[0])


def test_one_perturbation_class_is_a_method_end_to_end(sandbox, classifier):
    """A method that is no gradient path computes its map from the batched forward it is given."""
    from xaicli.explain import attribute as engine
    from xaicli.explain.attribution import AttributionMethod, settle
    from xaicli.explain.baselines import parse_baselines
    from xaicli.explain.targets import Target

    class Swap(AttributionMethod):
        """The score drop when the whole image becomes the baseline, spread evenly over its values."""
        name = "test-swap"
        baseline = True
        gradients = False

        def compute(self, step):
            s = step.scores(torch.cat([step.x, step.baseline]))            # (2, T)
            step.info["drop"] = (s[0] - s[1]).tolist()
            return ((s[0] - s[1]) / step.x[0].numel()).view(-1, 1, 1, 1).expand(-1, *step.x.shape[1:])

    ad, image = classifier
    method = registry.resolve("attribution", ["test-swap"])[0]
    targets = [Target("class", 0, "a"), Target("class", 2, "c")]
    options = settle(registry.option_defaults("attribution"))
    (m,) = engine.explain(ad, image, targets, [method], parse_baselines(["white"]), options, key="r")
    assert m.key == "attr/test_swap/white" and m.info["steps_evaluated"] == 2 and m.info["baseline"] == "white"
    with torch.no_grad():
        x = ad.image_to_unit(image)
        gap = ad.forward(ad.normalize(x))[0] - ad.forward(ad.normalize(torch.ones_like(x)))[0]
    np.testing.assert_allclose(m.info["drop"], gap[[0, 2]].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.values.reshape(2, -1).sum(1), gap[[0, 2]].numpy(), rtol=1e-4, atol=1e-5)
    redone = engine.redo(ad, image, targets[1], method, m.info, "r")
    np.testing.assert_array_equal(redone, m.values[1])


def test_one_cam_class_is_a_method_end_to_end(sandbox, classifier):
    """A CAM that overrides one step (channel weights): the pipeline runs it, stores its option, redoes it."""
    from xaicli.explain import cam as engine
    from xaicli.explain.cams import CamMethod
    from xaicli.explain.registry import Option
    from xaicli.explain.targets import Target
    from xaicli.models.layers import layer_table

    class Flat(CamMethod):
        name = "test-flat"
        gradients = False
        options = (Option("flat_weight", float, 1.0, help="The weight of every channel."),)

        def channel_weights(self, step):
            return np.full((step.targets, step.acts.shape[1]), step.options["flat_weight"], np.float32)

    ad, image = classifier
    layers = layer_table(ad, (24, 24)).resolve(None)
    targets = [Target("class", 0, "a"), Target("class", 2, "c")]
    maps = {m.key: m for m in engine.CamEngine(ad, layers, ["test-flat", "gradcam"], flat_weight=0.5)
            .explain(image, targets)}
    flat = maps[f"cam/test-flat/{layers[0].name}"]
    assert flat.info["flat_weight"] == 0.5 and flat.values.shape == (2, 20, 28)
    with torch.no_grad():       # the map by hand: 0.5 x the channel sum of the layer's output, ReLU'd, resized
        acts = {}
        handle = layers[0].module.register_forward_hook(lambda mod, i, o: acts.setdefault("a", o))
        ad.net(ad.prepare(image))
        handle.remove()
        by_hand = torch.relu(0.5 * acts["a"].sum(1, keepdim=True))
        by_hand = torch.nn.functional.interpolate(by_hand, size=(24, 24), mode="bilinear", align_corners=False)
        by_hand = ad.to_image_size(by_hand, (20, 28))[0, 0].numpy()
    np.testing.assert_allclose(flat.values[1], by_hand, rtol=1e-5, atol=1e-6)
    redone = engine.redo(ad, image, targets[1], registry.lookup("cam", "test-flat"), flat.info, "r")
    np.testing.assert_array_equal(redone, flat.values[1])
