"""Adaptive dyadic trapezoid refinement (explain/adaptive.py) on integrands with known integrals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicli.explain.adaptive import AdaptivePath

pytestmark = pytest.mark.usefixtures("one_thread")


def integrate(g, targets=1, tol=1e-3, batch=4, cap=4000):
    """Run the refinement loop as the engine does; returns the path and (true error, estimate) per round."""
    path = AdaptivePath(targets)
    rounds = []
    while True:
        want = path.wanted()
        path.add(want, torch.stack([g(a) for a in want]))
        est, err = path.estimate(), path.error()
        rounds.append((est, err))
        if bool((err <= tol).all()) or path.points >= cap:
            return path, rounds
        path.refine(batch)


def rel(a, b):
    return float((a - b).flatten().norm() / b.flatten().norm())


def uniform_trapezoid(g, n):
    """The textbook trapezoid of g over [0, 1] on n evenly spaced points."""
    a = torch.linspace(0, 1, n, dtype=torch.float64)
    return sum((0.5 if i in (0, n - 1) else 1) / (n - 1) * g(float(a[i])) for i in range(n))


def test_a_constant_is_exact_from_the_start():
    def g(a):
        return torch.full((1, 3, 4), 2.5, dtype=torch.float64)

    path, rounds = integrate(g)
    assert len(rounds) == 1 and path.points == 9
    assert torch.allclose(path.estimate(), torch.full((1, 3, 4), 2.5, dtype=torch.float64))
    assert float(path.error()[0]) == 0


def test_a_smooth_integrand_converges_and_the_estimate_bounds_the_error():
    w = torch.linspace(0.5, 2.0, 12, dtype=torch.float64).view(1, 12)
    def g(a):
        return torch.exp(-3 * a * w) + a ** 2

    truth = (1 - torch.exp(-3 * w)) / (3 * w) + 1 / 3
    path, rounds = integrate(g, tol=1e-4)
    assert rel(path.estimate(), truth) <= 1e-4
    for est, err in rounds:
        assert float(err[0]) >= rel(est, truth)          # trapezoid halving: the change bounds the error


def test_cubics_are_nearly_exact_at_the_first_cut_where_a_trapezoid_is_not():
    """Simpson's value where an element's change shrank as a smooth integrand's does (IG's integrand
    on GELU/SiLU networks): exact on cubics, but for the elements whose curvature changes sign near an
    interval (their change need not shrink there: the trapezoid's value is kept)."""
    c = torch.from_numpy(np.random.default_rng(2).normal(size=(4, 1, 64)))
    def g(a):
        return c[0] + c[1] * a + c[2] * a ** 2 + 3 * c[3] * a ** 3

    truth = c[0] + c[1] / 2 + c[2] / 3 + 3 * c[3] / 4
    path = AdaptivePath(1)
    want = path.wanted()
    path.add(want, torch.stack([g(a) for a in want]))
    trapezoid = uniform_trapezoid(g, 9)
    assert rel(trapezoid, truth) > 1e-3
    assert rel(path.estimate(), truth) < rel(trapezoid, truth) / 10
    assert float(path.error()[0]) >= rel(path.estimate(), truth)


def test_a_jump_keeps_the_trapezoid_on_its_interval():
    """g jumps at 0.3: [0.25, 0.5] changed by half its parent's change (a smooth g: an eighth), so
    it keeps T2; the others are constant, where both rules agree."""
    path = AdaptivePath(1)
    want = path.wanted()
    path.add(want, torch.tensor([[[float(a < 0.3)]] for a in want], dtype=torch.float64))
    assert float(path.estimate()[0, 0]) == pytest.approx(0.25 + 0.25 / 4)     # Simpson would give 0.25 + 0.25/6


def test_jumps_get_the_points_and_the_estimate_bounds_the_error():
    """A piecewise-constant map (each pixel jumps at its own α, most of them early, as IG's
    integrand does on a ReLU network from a black baseline)."""
    rng = np.random.default_rng(0)
    cuts = torch.from_numpy(rng.beta(0.7, 4, size=(1, 256)))            # crowded near α = 0
    heights = torch.from_numpy(rng.normal(size=(1, 256)))
    def g(a):
        return heights * (a < cuts)

    truth = heights * cuts
    path, rounds = integrate(g, tol=0.01, batch=4)
    assert rel(path.estimate(), truth) <= 0.01
    bounded = [float(err[0]) >= rel(est, truth) for est, err in rounds]
    assert np.mean(bounded) >= 0.95
    alphas = np.array(sorted(path.values))
    assert np.mean(alphas < 0.25) > 0.5                                   # the points went where the jumps are
    assert rel(path.estimate(), truth) < rel(uniform_trapezoid(g, int(1.5 * path.points)), truth)   # 1.5x the points


def test_a_frozen_target_keeps_its_estimate_and_stops_steering():
    slow = torch.from_numpy(np.random.default_rng(1).random((1, 64)))
    def g(a):
        return torch.cat([torch.full((1, 64), 1.0, dtype=torch.float64), (a < slow).double()])

    path = AdaptivePath(2)
    want = path.wanted()
    path.add(want, torch.stack([g(a) for a in want]))
    assert float(path.error()[0]) == 0 and float(path.error()[1]) > 0.01
    path.freeze(0)
    kept = path.estimate()[0].clone()
    for _ in range(20):
        path.refine(4, active=torch.tensor([False, True]))
        want = path.wanted()
        maps = torch.stack([g(a) for a in want])
        maps[:, 0] = 0                                                    # frozen: not computed any more
        path.add(want, maps)
    assert torch.equal(path.estimate()[0], kept)
    assert rel(path.estimate()[1:], slow) < 0.02


@pytest.mark.parametrize("batch", [1, 8])
def test_points_are_nested_never_recomputed(batch):
    calls = []

    def g(a):
        calls.append(a)
        return torch.tensor([[float(a > 0.37)]], dtype=torch.float64)

    integrate(g, tol=1e-3, batch=batch)
    assert len(calls) == len(set(calls))


# -- the engine's adaptive mode (integrated_gradients.attribute, quadrature "adaptive") -------------

def _relu_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).double()


@pytest.mark.parametrize("seed,dtype", [(0, torch.float64), (1, torch.float64), (1, torch.float32)])
def test_engine_map_is_as_close_to_a_long_reference_as_it_estimates(seed, dtype):
    """A ReLU CNN (piecewise-constant gradients): each target's stored estimate bounds its measured
    distance to 1024 Gauss–Legendre nodes (0.1% off the exact map here), both within 1%, and
    completeness holds to 1%; a float32 model's points are kept and summed in float32."""
    from xaicli.explain.integrated_gradients import integrated_gradients

    net = _relu_net(seed).to(dtype)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(dtype)
    base, w = torch.zeros_like(x), torch.eye(4, dtype=dtype)[:3]
    ref = integrated_gradients(net, x, base, w, steps=1024, batch_size=512).attributions
    res = integrated_gradients(net, x, base, w, quadrature="adaptive", tolerance=0.01, accuracy=0.01)
    for t in range(3):
        err = rel(res.attributions[t], ref[t])
        assert err <= res.info["estimated_error"][t] <= 0.01
        assert res.relative_delta[t] <= 0.01 and res.converged[t]
        assert 9 <= res.steps[t] <= res.steps_evaluated <= 512


def test_engine_linear_model_is_exact_at_the_first_cut():
    """IG of a linear model is (x − x') ⊙ w in closed form; the integrand is constant along the path."""
    from xaicli.explain.integrated_gradients import integrated_gradients

    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).double()
    x, base = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    res = integrated_gradients(lin, x, base, torch.eye(2, dtype=torch.float64), quadrature="adaptive")
    closed = (x - base) * lin[1].weight.view(2, 3, 8, 8)
    assert torch.allclose(res.attributions, closed, atol=1e-12)
    assert res.steps == [9, 9] and res.steps_evaluated == 9 and max(res.info["estimated_error"]) < 1e-12


def test_engine_quartic_model_is_exact_and_stops_at_the_second_cut():
    """S(x) = Σ w·x⁴ from a zero baseline: IG is w·x⁴ in closed form and its integrand 4w·x⁴·α³ is
    cubic in α, so Simpson's value is exact from the first cut on, |delta| < 1e-12. The estimate is
    still the trapezoid's error, not Simpson's: ∫α³ = 1/4 is 1.6% off at 9 points, and the changes,
    weighted by their shrink ratios (1/16 to 3/16: a third to 0.6), estimate 2.0% there and about
    0.5% at 17 points, where it stops (the whole change would estimate 1.2% at 17: 25 points)."""
    from xaicli.explain.integrated_gradients import integrated_gradients

    w = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def quartic(inp):
        return (inp.unsqueeze(1) ** 4 * w).flatten(2).sum(2)

    res = integrated_gradients(quartic, x, torch.zeros_like(x), torch.eye(2, dtype=torch.float64),
                               quadrature="adaptive")
    assert torch.allclose(res.attributions, w * x ** 4, rtol=1e-10, atol=1e-14)
    assert res.steps == [17, 17] and max(res.relative_delta) < 1e-12


def test_engine_shares_passes_with_gradient_jobs_and_averages_paths():
    """Two paths in one job (as random baselines are) and a saliency job in the same call: the saliency
    map is |∇S(x)|, and the two-path map is as close to its 1024-node reference as it estimates."""
    from xaicli.explain.integrated_gradients import Job, attribute

    net = _relu_net(2)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    starts = torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.2)]).double()
    w = torch.eye(4, dtype=torch.float64)[1:2]
    jobs = [Job("ig", starts, x.expand(2, 3, 8, 8)), Job("saliency", x, x, integral=False, absolute=True)]
    ig, sal = attribute(net, jobs, w, quadrature="adaptive", tolerance=0.01)
    (ref,) = attribute(net, jobs[:1], w, steps=1024, batch_size=512)
    assert rel(ig.attributions, ref.attributions) <= ig.info["estimated_error"][0] <= 0.01
    assert ig.steps_evaluated == 2 * ig.steps[0]                  # every point on both paths
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xg)[0, 1], xg)
    assert torch.allclose(sal.attributions[0], grad.abs()[0]) and sal.steps == [None]


def test_engine_cap_stops_and_says_so():
    from xaicli.explain.integrated_gradients import integrated_gradients

    net = _relu_net(3)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    res = integrated_gradients(net, x, torch.zeros_like(x), torch.eye(4, dtype=torch.float64),
                               quadrature="adaptive", accuracy=1e-9, max_steps=25)
    assert res.steps_evaluated <= 25 and res.converged == [False] * 4 and max(res.steps) <= 25


def test_a_delta_that_points_cannot_lower_stops_early_and_says_so(caplog):
    """A model whose scores carry a part without gradient (here rounded, as float32 rounds a score
    the model barely moves): the map is exact at the first cut, its sum cannot reach
    S(x) − S(x'), and more points would not change that. It stops there, not at the cap, and is
    not called converged; the warning says the delta is not quadrature error."""
    from types import SimpleNamespace

    from xaicli.explain.attribute import _warn
    from xaicli.explain.integrated_gradients import integrated_gradients

    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).double()

    def forward(x):
        out = lin(x)
        return out + (out * 7).round().detach()          # a step no gradient sees

    x, base = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    res = integrated_gradients(forward, x, base, torch.eye(2, dtype=torch.float64), quadrature="adaptive",
                               max_steps=512)
    assert torch.allclose(res.attributions, (x - base) * lin[1].weight.view(2, 3, 8, 8), atol=1e-12)
    off = [t for t in range(2) if res.relative_delta[t] > 0.01]
    assert off, "the rounded step should leave a delta the quadrature cannot remove"
    assert res.steps_evaluated == 9 and res.info["still"] == off
    assert [res.converged[t] for t in off] == [False] * len(off)
    options = {"tolerance": 0.01, "steps": None, "accuracy": 0.01, "max_steps": 512}
    with caplog.at_level("WARNING", logger="xai"):
        _warn("img", SimpleNamespace(integral=True, key="integrated_gradients"), "black", res, options)
    assert caplog.text.count("is not quadrature error") == len(off) and "did not reach" not in caplog.text


def test_points_stay_on_a_cuda_device_only_where_max_steps_of_them_fit(monkeypatch):
    """The kept g(α) take max_steps × maps × a map's bytes at the cap; a CUDA device keeps them where that
    is within STORE_FRACTION of its free memory, else they go to the CPU; other devices never keep them."""
    from xaicli.explain import adaptive

    free = {}
    monkeypatch.setattr("xaicli.models.device.free_memory_bytes", lambda d: free["bytes"])
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    need = 512 * 2 * (3 * 256 * 256 * 4)          # 512 points of 2 float32 maps of 256² RGB: 0.8 GB
    free["bytes"] = need / adaptive.STORE_FRACTION
    assert adaptive.store_device(cuda, 3 * 256 * 256 * 4, 2, 512) == cuda
    free["bytes"] -= 1
    assert adaptive.store_device(cuda, 3 * 256 * 256 * 4, 2, 512) == cpu
    assert adaptive.store_device(cuda, 3 * 256 * 256 * 4, 2, 511) == cuda       # a lower --max-steps fits
    free["bytes"] = 1 << 60
    for device in ("cpu", "mps"):                           # MPS: its free memory is not known
        assert adaptive.store_device(torch.device(device), 10, 1, 512) == cpu


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_engine_asks_for_the_store_of_every_job_and_target_at_the_cap(monkeypatch, dtype):
    """The engine sizes the store for all its jobs' targets at --max-steps, at the image's size, in
    the model's dtype, which the kept points then have."""
    from xaicli.explain import adaptive
    from xaicli.explain.integrated_gradients import Job, attribute

    asked, kept = [], []
    monkeypatch.setattr(adaptive, "store_device", lambda *a: asked.append(a) or torch.device("cpu"))
    add = adaptive.AdaptivePath.add
    monkeypatch.setattr(adaptive.AdaptivePath, "add",
                        lambda self, alphas, maps: kept.extend(v.dtype for v in self.values.values())
                        or add(self, alphas, maps))
    net = _relu_net(4).to(dtype)
    x = torch.rand(1, 3, 8, 8, dtype=dtype)
    jobs = [Job("ig", torch.zeros_like(x), x), Job("ig", torch.full_like(x, 0.5), x)]
    attribute(net, jobs, torch.eye(4, dtype=dtype)[:3], quadrature="adaptive", max_steps=64)
    assert asked == [(torch.device("cpu"), 3 * 8 * 8 * dtype.itemsize, 2 * 3, 64)]
    assert kept and set(kept) == {dtype}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (XAI_TEST_CUDA=1 on a GPU host)")
def test_engine_on_cuda_keeps_its_points_there_and_matches_the_cpu(monkeypatch):
    from xaicli.explain import adaptive
    from xaicli.explain.integrated_gradients import integrated_gradients

    stores = []
    real = adaptive.AdaptivePath

    def path(targets, store, dtype):
        stores.append(store)
        return real(targets, store, dtype)

    net = _relu_net(5)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    w = torch.eye(4, dtype=torch.float64)[:2]
    cpu = integrated_gradients(net, x, torch.zeros_like(x), w, quadrature="adaptive")
    monkeypatch.setattr(adaptive, "AdaptivePath", path)
    gpu = integrated_gradients(net.cuda(), x.cuda(), torch.zeros_like(x).cuda(), w.cuda(), quadrature="adaptive")
    assert stores == [torch.device("cuda", 0)] and gpu.attributions.device.type == "cuda"
    assert gpu.steps == cpu.steps
    assert torch.allclose(gpu.attributions.cpu(), cpu.attributions, rtol=1e-9, atol=1e-12)
