"""Saliency, input×gradient and SmoothGrad against closed forms, Captum and autograd directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicli.explain import gradients as gm
from xaicli.explain.integrated_gradients import attribute

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny nets: two threads spin-wait (15x slower here)


@pytest.fixture(scope="module")
def convnet():
    """A small conv net with max-pool and GELU (non-linear, per-sample independent in eval mode)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32, 4)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    return net, x


def linear(k=3, shape=(3, 5, 4), seed=2):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(int(np.prod(shape)), k)
    for p in lin.parameters():
        p.requires_grad_(False)
    return (lambda u: lin(u.flatten(1))), lin.weight.view(k, *shape)


def autograd_grad(f, x, t):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x)[:, t].sum(), x)
    return g


def test_linear_closed_forms():
    f, w = linear()
    x = torch.rand(1, 3, 5, 4)
    weights = torch.eye(3)
    torch.testing.assert_close(gm.saliency(f, x, weights).attributions, w.abs())
    torch.testing.assert_close(gm.input_x_gradient(f, x, weights).attributions, x[0] * w)
    # the gradient of a linear model is the same at every noisy copy: SmoothGrad is w itself
    torch.testing.assert_close(gm.smoothgrad(f, x, weights, samples=7, noise_std=0.5).attributions, w.expand(3, -1, -1, -1),
                               atol=1e-6, rtol=1e-5)
    # SmoothGrad over IG: mean over copies of (x + eps_s - x')·w
    b = torch.zeros_like(x)
    job = gm.smoothgrad_ig_job(x, b, samples=5, noise_std=0.2, seed=3, key="k")
    res = attribute(f, [job], weights, steps=4)[0]
    noisy = gm.noisy_copies(x, 5, 0.2, seed=3, key="k")
    torch.testing.assert_close(res.attributions, (noisy - b).mean(0) * w, atol=1e-6, rtol=1e-5)
    # with K baselines every copy runs against every one: the map is (mean copy - mean baseline)·w
    bs = torch.rand(3, *x.shape[1:])
    job = gm.smoothgrad_ig_job(x, bs, samples=2, noise_std=0.2, seed=3, key="k")
    res = attribute(f, [job], weights, steps=4)[0]
    noisy = gm.noisy_copies(x, 2, 0.2, seed=3, key="k")
    torch.testing.assert_close(res.attributions, (noisy.mean(0) - bs.mean(0)) * w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", ["Saliency", "InputXGradient"])
def test_equal_to_captum(convnet, cls):
    import captum.attr as ca

    net, x = convnet
    weights = torch.eye(4)[[3, 1]]
    ours = (gm.saliency if cls == "Saliency" else gm.input_x_gradient)(net, x, weights)
    for i, t in enumerate((3, 1)):
        ref = getattr(ca, cls)(net).attribute(x, target=t)[0]
        torch.testing.assert_close(ours.attributions[i], ref, atol=1e-6, rtol=1e-5)
    assert ours.f_x[0] == pytest.approx(float(net(x)[0, 3]), abs=1e-5)


def test_smoothgrad_is_the_mean_gradient_over_the_noisy_copies(convnet):
    net, x = convnet
    weights = torch.eye(4)[[0, 2]]
    res = gm.smoothgrad(net, x, weights, samples=6, noise_std=0.3, seed=1, key="img", batch_size=4)
    noisy = gm.noisy_copies(x, 6, 0.3, seed=1, key="img")
    spread = float(x.max() - x.min())
    assert abs(float((noisy - x).std()) - 0.3 * spread) < 0.03          # noise relative to the value range
    for i, t in enumerate((0, 2)):
        ref = torch.stack([autograd_grad(net, noisy[s:s + 1], t)[0] for s in range(6)]).mean(0)
        torch.testing.assert_close(res.attributions[i], ref, atol=1e-6, rtol=1e-5)
    # no noise: SmoothGrad is the plain (signed) gradient
    plain = gm.smoothgrad(net, x, weights[:1], samples=3, noise_std=0.0)
    torch.testing.assert_close(plain.attributions[0], autograd_grad(net, x, 0)[0], atol=1e-6, rtol=1e-5)


def test_smoothgrad_ig_is_the_mean_of_captum_ig_over_the_copies(convnet):
    from captum.attr import IntegratedGradients

    net, x = convnet
    b = torch.full_like(x, 0.2)
    job = gm.smoothgrad_ig_job(x, b, samples=3, noise_std=0.1, seed=0, key="z")
    res = attribute(net, [job], torch.eye(4)[[1]], steps=6)[0]
    noisy = gm.noisy_copies(x, 3, 0.1, seed=0, key="z")
    ref = torch.stack([IntegratedGradients(net).attribute(noisy[s:s + 1], b, target=1, n_steps=6)[0]
                       for s in range(3)]).mean(0)
    assert float((res.attributions[0] - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert res.relative_delta[0] is not None


def test_noise_is_reproducible_and_keyed():
    x = torch.rand(1, 3, 8, 8)
    a = gm.noisy_copies(x, 4, 0.2, seed=0, key="a")
    assert torch.equal(a, gm.noisy_copies(x, 4, 0.2, seed=0, key="a"))
    assert not torch.equal(a, gm.noisy_copies(x, 4, 0.2, seed=1, key="a"))
    assert not torch.equal(a, gm.noisy_copies(x, 4, 0.2, seed=0, key="b"))


def test_methods_share_one_call_and_match_separate_calls(convnet):
    net, x = convnet
    weights = torch.eye(4)[[0, 1, 2]]
    jobs = [gm.saliency_job(x), gm.input_x_gradient_job(x), gm.smoothgrad_job(x, 4, 0.2, seed=2)]
    together = attribute(net, jobs, weights, batch_size=3)
    for job, res in zip(jobs, together):
        alone = attribute(net, [job], weights)[0]
        torch.testing.assert_close(res.attributions, alone.attributions, atol=1e-6, rtol=1e-5)
        assert res.delta == [None, None, None]


def test_moments_square_and_variance_are_those_of_the_per_copy_gradients(convnet):
    """Job.moment: the mean square and the variance (mean square less squared mean) of the gradients
    (times the scales) over the paths, from the same pass as the mean; sharing a call changes nothing."""
    from xaicli.explain.integrated_gradients import Job

    net, x = convnet
    noisy = gm.noisy_copies(x, 5, 0.3, seed=4, key="m")
    scales = torch.rand(noisy.shape, generator=torch.Generator().manual_seed(2))
    weights = torch.eye(4)[[1, 3]]
    jobs = [Job(f"{moment}{s is not None}", noisy, noisy, integral=False, moment=moment, scales=s)
            for moment in ("mean", "square", "variance") for s in (None, scales)]
    together = attribute(net, jobs, weights, batch_size=3)           # chunks cut across the copies
    for i, t in enumerate((1, 3)):
        g = torch.stack([autograd_grad(net, noisy[s:s + 1], t)[0] for s in range(5)])
        for job, res in zip(jobs, together):
            v = g * job.scales if job.scales is not None else g
            want = {"mean": v.mean(0), "square": (v * v).mean(0), "variance": v.var(0, unbiased=False)}[job.moment]
            torch.testing.assert_close(res.attributions[i], want, atol=1e-6 * float(want.abs().max()), rtol=1e-4)
    by_one = attribute(net, jobs, weights, batch_size=1)              # every chunk on one path
    for job, res, single in zip(jobs, together, by_one):
        alone = attribute(net, [job], weights)[0]
        torch.testing.assert_close(res.attributions, alone.attributions, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(res.attributions, single.attributions, atol=1e-7, rtol=1e-5)
    one = attribute(net, [Job("one", x, x, integral=False, moment="variance")], weights)[0]
    assert float(one.attributions.abs().max()) == 0.0                 # one path: no spread


def test_moments_need_single_points():
    from xaicli.explain.integrated_gradients import Job

    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="integral=False"):
        Job("v", x, x, moment="variance")
    with pytest.raises(ValueError, match="one of"):
        Job("v", x, x, integral=False, moment="median")
