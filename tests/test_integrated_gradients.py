"""The IG engine against closed forms and Captum, on the same function, input, baseline,
target and steps; plus batching (targets, baselines, chunks, OOM) and the demo models'
known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicli.explain import quadrature as quad
from xaicli.explain.integrated_gradients import Job, attribute, integrated_gradients


# -- helpers ----------------------------------------------------------------------

def save_tiny_unetpp(folder):
    """smp U-Net++ with a small timm encoder (max-pool stem), 1 class, save_pretrained."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_weights=None, encoder_depth=3,
                     decoder_channels=(32, 16, 8), classes=1).eval().save_pretrained(str(folder))
    return folder


def save_tiny_convnext(folder, labels=("a", "b", "c")):
    import transformers
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    transformers.utils.logging.disable_progress_bar()
    cfg = ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32,
                         id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    torch.manual_seed(0)
    ConvNextForImageClassification(cfg).eval().save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0, image_mean=[0.4, 0.5, 0.6],
                           image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


def save_tiny_vit(folder, labels=("a", "b", "c")):
    import transformers
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    transformers.utils.logging.disable_progress_bar()
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, id2label=dict(enumerate(labels)),
                    label2id={k: i for i, k in enumerate(labels)})
    torch.manual_seed(0)
    ViTForImageClassification(cfg).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (adapter, unit image (1,C,H,W), weights (T,K[,h,w]), forward) for the three Captum models."""
    from xaicli.explain.targets import resolve_classification, resolve_segmentation
    from xaicli.models.loader import load_model

    root = tmp_path_factory.mktemp("ig_models")
    rng = np.random.default_rng(0)
    out = {}
    for name, save, shape in (("unetpp", save_tiny_unetpp, (64, 64, 3)),
                              ("convnext", save_tiny_convnext, (40, 48, 3)),
                              ("vit", save_tiny_vit, (36, 30, 3))):
        ad = load_model(str(save(root / name)), device="cpu")
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        unit = ad.image_to_unit(img).contiguous()

        def forward(x, ad=ad):
            return ad.forward(ad.normalize(x))

        with torch.no_grad():
            logits = forward(unit)
        if ad.task == "segmentation":
            prob = torch.sigmoid(ad.to_image_size(logits, shape[:2]))[0, 0]
            mask = (prob > prob.median()).numpy().astype(np.uint8)   # the predicted mask of a half-way cut
            targets = resolve_segmentation(["predicted"], ad.labels, mask)
            w = torch.stack([t.weight(1, tuple(logits.shape[-2:]), shape[:2]) for t in targets])
        else:
            targets = resolve_classification(["all"], ad.labels, torch.softmax(logits, 1)[0].numpy())
            w = torch.stack([t.weight(ad.num_classes, None, None) for t in targets])
        out[name] = (ad, unit, w, forward)
    return out


def captum_ig(forward, unit, baseline, weight, steps, method="gausslegendre", **kw):
    """Captum's IntegratedGradients on S(x) = Σ W·logits(x), one target."""
    from captum.attr import IntegratedGradients

    def score(x):
        return (forward(x) * weight).flatten(1).sum(1)

    attr, delta = IntegratedGradients(score).attribute(unit, baselines=baseline, n_steps=steps, method=method,
                                                       return_convergence_delta=True, **kw)
    return attr[0], float(delta[0])


def direct_delta(forward, unit, baseline, weight, attr):
    """Completeness gap from direct forward passes, independent of the engine's own numbers."""
    with torch.no_grad():
        fx = float((forward(unit) * weight).sum())
        fb = float((forward(baseline) * weight).sum())
    return float(attr.double().sum()) - (fx - fb), fx - fb


# -- quadrature ------------------------------------------------------------------

@pytest.mark.parametrize("name", quad.RULES)
def test_rules_integrate_constants_and_linear_functions_exactly(name):
    for n in (2, 3, 10, 33):
        a, w = quad.rule(name, n)
        assert a.min() >= 0 and a.max() <= 1 and len(a) == n
        assert abs(w.sum() - 1) < 1e-12
        if name != "riemann-left" and name != "riemann-right":
            assert abs((w * a).sum() - 0.5) < 1e-12


def test_gauss_legendre_is_exact_to_degree_2n_minus_1():
    a, w = quad.rule("gausslegendre", 5)
    for d in range(10):
        assert abs((w * a ** d).sum() - 1 / (d + 1)) < 1e-12


@pytest.mark.parametrize("name", ["gausslegendre", "riemann-left", "riemann-right", "riemann-middle"])
def test_nodes_and_weights_match_captum(name):
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(name.replace("-", "_"))
    a, w = quad.rule(name, 16)
    np.testing.assert_allclose(a, alphas(16), atol=1e-7)
    np.testing.assert_allclose(w, step_sizes(16), atol=1e-12)


def test_unknown_quadrature_and_too_few_steps():
    with pytest.raises(ValueError):
        quad.canonical("simpson")
    with pytest.raises(ValueError):
        quad.rule("riemann-trapezoid", 1)


# -- closed form -------------------------------------------------------------------

@pytest.mark.parametrize("name", quad.RULES)
@pytest.mark.parametrize("steps", [2, 5, 32])
def test_linear_classifier_ig_is_input_minus_baseline_times_weight(name, steps):
    torch.manual_seed(1)
    lin = torch.nn.Linear(3 * 6 * 5, 4)
    for p in lin.parameters():
        p.requires_grad_(False)
    x, b = torch.rand(1, 3, 6, 5), torch.rand(1, 3, 6, 5)
    weights = torch.eye(4)[[2, 0]]
    res = integrated_gradients(lambda u: lin(u.flatten(1)), x, b, weights, steps=steps, quadrature=name)
    expect = (x - b)[0] * lin.weight[[2, 0]].view(2, 3, 6, 5)
    torch.testing.assert_close(res.attributions, expect, atol=1e-6, rtol=1e-5)
    assert max(abs(d) for d in res.delta) < 1e-4
    assert res.steps == [steps, steps]


def test_linear_segmenter_with_region_target_closed_form():
    """1x1 conv segmenter, score = sum of the class logit over a region: IG = (x-x')·w_c·region."""
    from xaicli.explain.targets import Target

    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 2, 1)
    for p in conv.parameters():
        p.requires_grad_(False)
    region = np.zeros((8, 8), bool)
    region[2:5, 3:7] = True
    w = Target("region", 1, "c1", region).weight(2, (8, 8), (8, 8))[None]
    x, b = torch.rand(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    res = integrated_gradients(conv, x, b, w, steps=3)
    expect = x[0] * conv.weight[1, :, 0, 0].view(3, 1, 1) * torch.as_tensor(region)
    torch.testing.assert_close(res.attributions[0], expect, atol=1e-6, rtol=1e-5)


# -- Captum equality ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["unetpp", "convnext", "vit"])
def test_equals_captum_integrated_gradients(tiny, name):
    ad, unit, w, forward = tiny[name]
    base = torch.zeros_like(unit)
    res = integrated_gradients(forward, unit, base, w, steps=16)
    for t in range(w.shape[0]):
        ref, ref_delta = captum_ig(forward, unit, base, w[t:t + 1], 16)
        scale = float(ref.abs().max())
        assert scale > 0
        assert float((res.attributions[t] - ref).abs().max()) <= 1e-4 * scale
        assert abs(res.delta[t] - ref_delta) <= 1e-3 * abs(res.f_x[t] - res.f_baseline[t]) + 1e-5


def test_equals_captum_with_other_baseline_quadrature_and_chunk(tiny):
    """A non-zero baseline (the blur one), Riemann midpoints and a chunk that splits the steps."""
    from xaicli.explain.baselines import Baseline, make_baselines

    ad, unit, w, forward = tiny["convnext"]
    base = make_baselines(Baseline("blur", "blur"), unit, mean=ad.preprocessing.mean, blur_sigma=3.0)
    res = integrated_gradients(forward, unit, base, w[1:2], steps=12, quadrature="riemann-middle", batch_size=5)
    ref, _ = captum_ig(forward, unit, base, w[1:2], 12, method="riemann_middle", internal_batch_size=12)
    assert float((res.attributions[0] - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


# -- completeness ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unetpp", "convnext", "vit"])
def test_default_settings_reach_one_percent_delta(tiny, name):
    ad, unit, w, forward = tiny[name]
    base = torch.zeros_like(unit)
    res = integrated_gradients(forward, unit, base, w)          # defaults: 32 Gauss-Legendre steps
    for t in range(w.shape[0]):
        delta, gap = direct_delta(forward, unit, base, w[t:t + 1], res.attributions[t])
        assert abs(delta) <= 0.01 * abs(gap)
        assert res.relative_delta[t] == pytest.approx(abs(delta) / abs(gap), rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("name,tol", [("unetpp", 3e-3), ("convnext", 1e-4)])
def test_tolerance_meets_its_bound(tiny, name, tol):
    ad, unit, w, forward = tiny[name]
    base = torch.ones_like(unit) * 0.5
    res = integrated_gradients(forward, unit, base, w, steps=2, tolerance=tol, max_steps=256)
    assert all(res.converged)
    assert max(res.steps) > 2                                   # it had to raise the steps
    for t in range(w.shape[0]):
        delta, gap = direct_delta(forward, unit, base, w[t:t + 1], res.attributions[t])
        assert abs(delta) <= tol * abs(gap) * 1.01 + 1e-6
        # the stored map is the estimate at the recorded step count, as Captum gives it
        ref, _ = captum_ig(forward, unit, base, w[t:t + 1], res.steps[t])
        assert float((res.attributions[t] - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_tolerance_gives_up_at_max_steps():
    """A kinked path (|x| crossing 0) converges slowly with Riemann sums: report, don't loop."""
    x, b = torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), -0.7)
    res = integrated_gradients(lambda u: u.abs().flatten(1), x, b, torch.ones(1, 1), steps=2,
                               quadrature="riemann-left", tolerance=1e-9, max_steps=16)
    assert res.converged == [False] and res.steps == [16]


# -- batching -----------------------------------------------------------------------

def test_multi_target_equals_single_target_runs(tiny):
    for name in ("convnext", "unetpp"):
        ad, unit, w, forward = tiny[name]
        if w.shape[0] == 1:                                   # segmenter: add an all-pixels target
            w = torch.cat([w, torch.ones_like(w) / w.numel()])
        base = torch.zeros_like(unit)
        many = integrated_gradients(forward, unit, base, w, steps=8, batch_size=3)
        for t in range(w.shape[0]):
            one = integrated_gradients(forward, unit, base, w[t:t + 1], steps=8, batch_size=3)
            torch.testing.assert_close(many.attributions[t], one.attributions[0], atol=1e-6, rtol=1e-5)
            assert many.delta[t] == pytest.approx(one.delta[0], abs=1e-6)


def test_several_jobs_in_one_call_equal_separate_calls(tiny):
    ad, unit, w, forward = tiny["convnext"]
    b1, b2 = torch.zeros_like(unit), torch.rand((2, *unit.shape[1:]), generator=torch.Generator().manual_seed(3))
    jobs = [Job("a", b1, unit), Job("b", b2, unit.expand(2, -1, -1, -1))]
    both = attribute(forward, jobs, w, steps=6, batch_size=4)
    for job, res in zip(jobs, both):
        alone = integrated_gradients(forward, unit, job.starts, w, steps=6)
        torch.testing.assert_close(res.attributions, alone.attributions, atol=1e-6, rtol=1e-5)
    # two baseline samples: the mean of the two single-baseline maps (closed form of the average)
    singles = [integrated_gradients(forward, unit, b2[i:i + 1], w, steps=6).attributions for i in range(2)]
    torch.testing.assert_close(both[1].attributions, (singles[0] + singles[1]) / 2, atol=1e-6, rtol=1e-5)


def test_out_of_memory_halves_the_chunk_and_keeps_the_result():
    torch.manual_seed(4)
    lin = torch.nn.Linear(12, 3)
    for p in lin.parameters():
        p.requires_grad_(False)
    seen = []

    def forward(u):
        seen.append(u.shape[0])
        if u.shape[0] > 3 and u.requires_grad:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return lin(u.flatten(1))

    x, b = torch.rand(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    res = integrated_gradients(forward, x, b, torch.eye(3), steps=20, batch_size=16)
    torch.testing.assert_close(res.attributions, x[0] * lin.weight.view(3, 3, 2, 2), atol=1e-6, rtol=1e-5)
    assert 16 in seen and 8 in seen and 2 in seen and res.batch_size == 2


def test_out_of_memory_with_one_sample_is_a_clear_error():
    from xaicli.errors import XaiError

    def forward(u):
        if u.requires_grad:
            raise RuntimeError("CUDA out of memory.")
        return u.flatten(1)

    with pytest.raises(XaiError, match="out of memory"):
        integrated_gradients(forward, torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 4), steps=4)


def test_other_errors_are_not_retried():
    calls = []

    def forward(u):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        integrated_gradients(forward, torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 4), steps=4)
    assert len(calls) == 1


def test_chunk_bound_follows_memory(monkeypatch):
    from xaicli.explain import chunking

    cpu = torch.device("cpu")
    assert chunking.choose_batch_size(cpu, 10, 100, requested=7) == 7
    assert chunking.choose_batch_size(cpu, 10, 5, requested=7) == 5
    monkeypatch.setattr("xaicli.models.device.free_memory_bytes", lambda d: 3 * 2 * 100)
    assert chunking.choose_batch_size(cpu, 100, 64) == 1        # half of free / (2 x per sample)
    monkeypatch.setattr("xaicli.models.device.free_memory_bytes", lambda d: 1 << 40)
    assert chunking.choose_batch_size(cpu, 100, 1000) == chunking.CPU_MAX_ROWS
    big = chunking.activation_bytes(lambda u: (u * 2).relu().sum(1), torch.rand(1, 3, 64, 64))
    assert big >= 3 * 64 * 64 * 4


def _fake_clock_work(monkeypatch, cost, spoil=None):
    """work(lo, hi) advancing a fake clock: cost[n] s per sample, +50% on a size's first use,
    x3 on the uses listed in `spoil` (another process took the CPU)."""
    from xaicli.explain import chunking

    clock, used = [0.0], []
    monkeypatch.setattr(chunking, "_clock", lambda: (lambda: clock[0]))

    def work(lo, hi):
        n = hi - lo
        factor = 1.5 if n not in used else 3.0 if spoil and len(used) in spoil else 1.0
        clock[0] += n * cost.get(n, 1.0) * factor
        used.append(n)

    return work, used


@pytest.mark.parametrize("cost,climb,best", [
    ({8: 0.6, 16: 0.65, 4: 0.7}, [8, 8, 16, 16, 4, 4], 8),                 # 8 is best: up, then down, back
    ({8: 0.6, 16: 0.5, 32: 0.55}, [8, 8, 16, 16, 32, 32], 16),              # climbs up
    ({8: 0.6, 16: 0.65, 4: 0.5, 2: 0.55}, [8, 8, 16, 16, 4, 4, 2, 2], 4),   # climbs down
])
def test_cpu_chunk_is_tuned_by_measured_time(monkeypatch, cost, climb, best):
    from xaicli.explain import chunking

    work, used = _fake_clock_work(monkeypatch, cost)
    planner = chunking.BatchPlanner(torch.device("cpu"))
    sample = torch.zeros(1, 3, 4, 4)
    planner.runner(sample, 400).run(400, work)
    assert used[0] == 1                                           # one sample measures the memory
    assert used[1:1 + len(climb)] == climb                       # each size warmed once, then timed
    assert planner.plan_for(sample).best == best
    rest = used[1 + len(climb):-1]
    assert set(rest) <= {best // 2, best, best * 2} and rest.count(best) >= 0.8 * len(rest)
    used.clear()
    planner.runner(sample, 8).run(8, work)                       # the next image starts at the choice
    assert used[0] == min(best, 8)


def test_cpu_chunk_tuning_recovers_from_a_spoilt_measurement(monkeypatch):
    from xaicli.explain import chunking

    # the first timed use of 8 (the 3rd chunk) is spoilt: the climb settles on 16 ...
    work, used = _fake_clock_work(monkeypatch, {8: 0.6, 16: 0.65, 32: 0.9, 4: 0.7}, spoil={2})
    planner = chunking.BatchPlanner(torch.device("cpu"))
    sample = torch.zeros(1, 3, 4, 4)
    planner.runner(sample, 120).run(120, work)                   # 1, 8, 8 (spoilt), 16, 16, 32, 32, 7
    assert planner.plan_for(sample).best == 16
    planner.runner(sample, 600).run(600, work)                   # ... and re-timing the neighbours finds 8
    assert planner.plan_for(sample).best == 8


def test_first_chunk_is_one_sample_and_bounds_memory(monkeypatch):
    from xaicli.explain import chunking

    monkeypatch.setattr("xaicli.models.device.free_memory_bytes", lambda d: 8 * 2 * 1000)  # 4 samples
    used = []
    planner = chunking.BatchPlanner(torch.device("cpu"))
    x = torch.zeros(1, 10, 10, 10, requires_grad=True)          # 4000 bytes saved per sample

    def work(lo, hi):
        used.append(hi - lo)
        (x.expand(hi - lo, -1, -1, -1) * 2).relu().sum().backward()

    planner.runner(x, 30).run(30, work)
    assert used[0] == 1 and max(used) <= 2                        # half of 16 kB / (2 x 4 kB) = 2


def test_cuda_chunk_is_bounded_by_the_measured_peak(monkeypatch):
    """On CUDA the allocator's peak over the one-sample chunk, not saved bytes × 2, sets the bound."""
    from xaicli.explain import chunking

    peak = {"now": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 500)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: peak.update(now=500))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: peak["now"])
    monkeypatch.setattr("xaicli.models.device.free_memory_bytes", lambda d: 30000)
    x = torch.zeros(1, 10, 10, 10, requires_grad=True)          # 4000 bytes saved per sample
    used = []

    def work(lo, hi):
        used.append(hi - lo)
        peak["now"] = max(peak["now"], 500 + 3000 * (hi - lo))  # what the fake GPU needed at once
        (x.expand(hi - lo, -1, -1, -1) * 2).relu().sum().backward()

    planner = chunking.BatchPlanner(torch.device("cuda"))
    planner.runner(x, 30).run(30, work)
    # 60% of 30 kB over a 3 kB peak: 6 rows (saved bytes x 2 would have allowed 2)
    assert used == [1, 6, 6, 6, 6, 5]
    assert planner.plan_for(x).best == 6


def test_requested_batch_size_is_used_as_is():
    from xaicli.explain import chunking

    used = []
    chunking.BatchPlanner(torch.device("cpu"), requested=5).runner(torch.zeros(1, 1), 12).run(
        12, lambda lo, hi: used.append(hi - lo))
    assert used == [5, 5, 2]


# -- the demo models: a known answer ----------------------------------------------------

def _require_builtin(name):
    from xaicli.models.builtin import builtin_path

    if not (builtin_path(name) / "model.safetensors").exists():
        pytest.fail(f"builtin:{name} has no weights yet (train it: python -m xaicli.models.builtin.train)")


@pytest.mark.slow
@pytest.mark.parametrize("task,name", [
    ("segmentation", "shapes-seg"),
    ("classification", "shapes-cls"),
])
def test_demo_models_top_pixel_lies_in_the_evidence(task, name):
    """On 100 generated images, IG's top pixel falls in the evidence region >= 95%.

    The top pixel holds the map's largest value (over channels and pixels). Not the channel
    sum: for a colour classifier the other channels of the object count against the class
    (a red object's green and blue rise from the black baseline too) and cancel its red.

    All 100 images go through one engine call (one job per image, each with its own target),
    which also exercises per-job weights across chunks that span images.
    """
    from xaicli.explain.targets import resolve_classification, resolve_segmentation
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.loader import load_model

    _require_builtin(name)
    ad = load_model(f"builtin:{name}", device="cpu")

    def forward(x):
        return ad.forward(ad.normalize(x))

    samples = [make_sample(seed, task) for seed in range(1000, 1100)]
    units = torch.cat([ad.image_to_unit(img) for img, _, _ in samples]).contiguous()
    with torch.no_grad():
        logits = torch.cat([forward(units[i:i + 25]) for i in range(0, 100, 25)])
    black = torch.zeros_like(units[:1])                 # one tensor for all jobs: S(x') is computed once
    jobs, evidence = [], []
    for i, (img, ev, _) in enumerate(samples):
        if task == "segmentation":
            mask = (torch.sigmoid(ad.to_image_size(logits[i:i + 1], img.shape[:2]))[0, 0] > 0.5).numpy()
            t = resolve_segmentation(["predicted"], ad.labels, mask.astype(np.uint8))[0]
            w = t.weight(1, tuple(logits.shape[-2:]), img.shape[:2])[None]
        else:
            t = resolve_classification(["top1"], ad.labels, torch.softmax(logits[i], 0).numpy())[0]
            w = t.weight(ad.num_classes, None, None)[None]
        jobs.append(Job(str(i), black, units[i:i + 1], weights=w))
        evidence.append(ev)
    results = attribute(forward, jobs, None, steps=STEPS_DEMO, batch_size=32)
    hits = sum(bool(ev.reshape(-1)[int(r.attributions[0].amax(0).argmax())]) for r, ev in zip(results, evidence))
    assert hits >= 95, f"top pixel in the evidence on {hits}/100 images"


STEPS_DEMO = 4
