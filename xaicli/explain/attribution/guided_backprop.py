"""Guided backpropagation (Springenberg et al. 2015): the gradient with every ReLU passing back only positive gradients.

What the rule covers (explain/backward_rules.py): every call of relu while the map is
computed, so nn.ReLU modules (inplace or not, one module called several times, as in
torchvision's ResNet blocks) and functional ReLUs (x.relu(), F.relu, torch.relu_), which
Captum's GuidedBackprop leaves with their plain gradient (it hooks nn.ReLU modules only).
Other activations (ReLU6, GELU, SiLU ...) keep their gradient, as in Captum. A model with
no ReLU at all would get its plain gradient, so it is refused (`unfit`), as is a
TorchScript model, whose compiled ops no rule reaches.
"""

from __future__ import annotations

from xaicli.explain.attribution import AttributionMethod


class GuidedBackprop(AttributionMethod):
    name = "guided-backprop"
    aliases = ("guidedbackprop", "guided-backpropagation")
    summary = "the gradient with each ReLU passing back only positive gradients where its input was positive"
    reference, reference_package = "GuidedBackprop", "captum.attr"
    checked = "equal to 1e-5 (small CNN with reused inplace nn.ReLU, smp U-Net++ resnet18)"
    notes = ("every ReLU: nn.ReLU modules (inplace, reused) and relu calls, which Captum leaves plain; one gradient "
             "per target in the shared passes; a model without ReLU is refused (left out of --method all)")
    order = 32
    rule = "guided"            # the ReLU rule in explain/backward_rules.py (deconvolution: another)

    def unfit(self, adapter, image):
        from xaicli.explain.backward_rules import relu_problem

        return relu_problem(adapter, image, self.name)

    def compute(self, step):
        from xaicli.explain import backward_rules

        return backward_rules.ruled_gradient(step, getattr(backward_rules, self.rule), self.name)
