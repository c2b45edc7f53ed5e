"""deconvolution: guided-backprop's checks (tests/test_method_guided_backprop.py) with Captum's Deconvolution,
plus the rule itself on a net small enough to write down."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_method_guided_backprop import (Case, test_a_model_without_relu_is_refused_when_named_and_left_out_of_all,  # noqa: F401
                                         test_cli_on_unetpp_equals_captum_and_stats_randomize_covers_it,
                                         test_equal_to_captum_on_a_relu_cnn_with_a_reused_inplace_relu,
                                         test_functional_relus_are_ruled_like_modules, unetpp)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case():
    return Case("deconvolution", "attr/deconvolution/none", "Deconvolution")


def test_the_rule_ignores_the_relu_input_and_keeps_the_positive_gradient(case):
    """S = v·relu(W u) + c: the map is Wᵀ relu(v) (the positive part of what reaches the ReLU, on every
    unit, active or not), where the gradient is Wᵀ (v ⊙ [W u > 0])."""
    from helpers_models import adapter_of

    from xaicli.explain.targets import Target

    class Dense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(12, 5, bias=False)
            self.act = torch.nn.ReLU()
            self.out = torch.nn.Linear(5, 1)

        def forward(self, x):
            return self.out(self.act(self.hidden(x.flatten(1))))

    torch.manual_seed(3)
    net = Dense()
    image = np.random.default_rng(4).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    ad = adapter_of(net, labels=("s",), size=(2, 2))
    m = case.ours(ad, image, [Target("class", 0, "s")])
    w, v = net.hidden.weight, net.out.weight[0]
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)       # d normalised / d unit pixels
    expected = (w.T @ v.clamp_min(0)).view(3, 2, 2) / std
    np.testing.assert_allclose(m.values[0], expected.numpy(), rtol=1e-5, atol=1e-7)
    active = (w @ ad.normalize(ad.image_to_unit(image)).flatten()) > 0
    gradient = (w.T @ (v * active)).view(3, 2, 2) / std
    assert (expected - gradient).abs().max() > 0.1 * expected.abs().max()       # the rule is not the gradient
