"""Layer-wise Relevance Propagation (Bach et al. 2015) through zennit's composites.

zennit (the kept library for LRP) replaces each module's gradient by its rule; its
`Gradient` attributor, run on the model under a composite, gives the relevance. What
this module decides around that call:

- Where the LRP input layer sits: at the model's own input, the normalised tensor at the
  model's size (preprocessing is no layer of the network). The box rule's bounds
  (epsilon-gamma-box) are the unit image range through the normalisation:
  low = normalise(0), high = normalise(1), per channel and pixel.
- The output relevance is the target score's own terms, W_t ⊙ logits (zennit's default
  is the whole output; Captum's LRP starts from the target's logit): relevance is in
  score units and Σ relevance ≈ S_t = Σ W_t·logits is LRP's conservation. Its gap is
  stored per target like IG's delta (delta, relative_delta, f_x).
- Back to the image's pixels: each model-input pixel's relevance R_j goes to the image
  pixels that make it up in proportion to the preprocessing's weights,
  R_i = Σ_j J_ji R_j / Σ_i' J_ji' with J the (affine) preprocessing's Jacobian:
  a vector-Jacobian product of the normalisation with R / (J·1), where
  J·1 = normalise(1) − normalise(0). Resizes and crops keep the total (every row of an
  interpolation sums to 1); the per-channel 1/std cancels. At the model's size with no
  resize the map is zennit's relevance itself.
- Canonizers: zennit's ResNetCanonizer, which merges every BatchNorm into the layer
  before it and routes torchvision ResNet blocks' skip sums through zennit's Sum
  (smp's ResNet encoders are such blocks); on other models only the merge applies.
  Hugging Face's ResNet layers (the built-in classifier) sum their skips in forward
  code, where the gradient would hand the whole relevance to both branches (measured:
  Σ relevance 5-10x the score): the same treatment, with zennit's AttributeCanonizer.
- A model with a module that holds parameters but gets no rule from the composite
  (LayerNorm, a ViT's embeddings, ConvNeXt's layer scale) is refused, naming the module.
"""

from __future__ import annotations

from xaicli.errors import XaiUsageError
from xaicli.explain.attribution import AttributionMethod
from xaicli.explain.registry import Option

CONSERVATION_WARN = 0.5    # relative gap of Σ relevance to the score above which a map is flagged
COMPOSITES = {     # --composite → zennit.composites class (the rules per layer type)
    "epsilon-plus-flat": "EpsilonPlusFlat",          # flat first layer, z+ convolutions, epsilon dense layers
    "epsilon-gamma-box": "EpsilonGammaBox",          # z-box first convolution, gamma convolutions, epsilon dense
    "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1",    # alpha=2 beta=1 convolutions, epsilon dense layers
}


def _composite_name(value: str) -> None:
    if value not in COMPOSITES:
        raise XaiUsageError(f"--composite {value!r}: use one of {', '.join(COMPOSITES)}")


COMPOSITE = Option("composite", str, "epsilon-plus-flat", choices=lambda: list(COMPOSITES), check=_composite_name,
                   help="LRP: zennit's composite (rules per layer type): " + ", ".join(COMPOSITES) + ".")


class LRP(AttributionMethod):
    name = "lrp"
    summary = ("Layer-wise Relevance Propagation of the target score under zennit's --composite rules "
               "(CNNs: convolutions, linear layers, batch norms, pooling, activations)")
    reference, reference_package = "attribution.Gradient", "zennit"
    checked = "with the same composite, canonizer and output relevance: equal to 1e-5 (small CNN, smp U-Net++)"
    notes = ("input layer: the normalised model input (box bounds: the unit range normalised); output relevance "
             "W_t * logits; relevance to image pixels by the preprocessing's weights; Σ relevance vs S_t stored "
             "as delta; ResNetCanonizer (BatchNorm merge, skip sums), also for HF ResNet layers")
    options = (COMPOSITE,)
    order = 70

    def unfit(self, adapter, image=None):
        bare = _unhandled(adapter.module, make_composite(adapter.module, None, None, "epsilon-plus-flat"))
        if bare is None:
            return None
        name, kind = bare
        return (f"zennit has no rule for module {name!r} ({kind}) of this model, and relevance would "
                "pass through its parameters unaccounted; LRP covers convolutional networks (convolutions, linear "
                "layers, batch norms, pooling, activations): use integrated-gradients or another gradient method")

    def compute(self, step):
        from xaicli.errors import XaiError

        problem = self.unfit(step.adapter, None)
        if problem:
            raise XaiError(f"--method {self.name}: {problem}")
        relevance, scores = relevance_at_image(step.adapter, step.x, step.weights, step.options["composite"],
                                               step.planner)
        step.evaluated += int(step.weights.shape[0])
        step.info.update(conservation(relevance, scores))
        worst = max((r for r in step.info["relative_delta"] if r is not None), default=0.0)
        if worst > CONSERVATION_WARN:
            import logging

            logging.getLogger("xai").warning(
                "%s: lrp relevance misses the target score by %.3g of it: the model adds or scales outside zennit's "
                "rules (e.g. skip connections summed in forward code count twice) or biases absorb relevance; "
                "compare its maps by their pattern, not their totals", step.key, worst)
        return relevance

    def meta(self, options):
        return {**self.option_meta(options), "canonizers": ["ResNetCanonizer", "HF ResNet layers' skip Sum"],
                "output_relevance": "target weights x logits", "input_layer": "normalised model input"}


def make_composite(module, low, high, composite: str):
    """zennit's composite `composite` with the canonizers (box bounds `low`, `high` where it takes them)."""
    from zennit import composites
    from zennit.torchvision import ResNetCanonizer

    cls = getattr(composites, COMPOSITES[composite])
    canonizers = [ResNetCanonizer(), *hf_resnet_canonizers()]
    if composite == "epsilon-gamma-box":
        return cls(low=low, high=high, canonizers=canonizers)
    return cls(canonizers=canonizers)


def hf_resnet_canonizers() -> list:
    """zennit's torchvision ResNet block treatment for transformers' ResNet layers (skip sum → zennit's Sum),
    when transformers' ResNet is loaded at all (else no model can hold its layers: nothing to import)."""
    import sys

    hf = sys.modules.get("transformers.models.resnet.modeling_resnet")
    if hf is None:
        return []
    import torch
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def forward(self, hidden_state):          # transformers' forward, the sum through zennit's Sum
        residual = self.shortcut(hidden_state)
        hidden_state = self.layer(hidden_state)
        return self.activation(self.canonizer_sum(torch.stack([residual, hidden_state], dim=-1)))

    def attributes(name, module):
        if isinstance(module, (hf.ResNetBasicLayer, hf.ResNetBottleNeckLayer)):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return [AttributeCanonizer(attributes)]


def _unhandled(module, composite) -> tuple[str, str] | None:
    """(name, type) of the first module that owns parameters but gets no rule (zennit's own walk)."""
    ctx: dict = {}
    for name, child in module.named_modules():
        rule = composite.module_map(ctx, name, child)
        if rule is None and next(child.parameters(recurse=False), None) is not None:
            return name or "(the model)", type(child).__name__
    return None


def model_relevance(net, z, weights, low, high, composite: str, planner=None):
    """zennit's relevance at the model input `z` (1, C, h, w) for each target: (T, C, h, w), and the logits
    (T, K[, h, w]) of the same forward. Output relevance W_t ⊙ logits; targets run in chunks."""
    import torch
    from zennit.attribution import Gradient

    from xaicli.explain.chunking import BatchPlanner

    n_t = int(weights.shape[0])
    rel, logits = [None] * n_t, [None] * n_t
    planner = planner or BatchPlanner(z.device, None)
    runner = planner.runner(z, n_t)

    def work(lo: int, hi: int) -> None:
        batch = z.detach().expand(hi - lo, *z.shape[1:]).contiguous()
        w = weights[lo:hi].to(z.device, z.dtype)
        with torch.enable_grad():
            out, r = attributor(batch, lambda o: w * o)
        rel[lo:hi], logits[lo:hi] = r.detach(), out.detach()

    with Gradient(model=net, composite=make_composite(net, low, high, composite)) as attributor:
        runner.run(n_t, work)
    return torch.stack([r for r in rel]), torch.stack([lg for lg in logits])


def relevance_at_image(adapter, x, weights, composite: str, planner=None):
    """(T, C, H, W) relevance at the unit image `x`'s pixels and the (T,) target scores S_t(x)."""
    import torch

    from xaicli.explain.integrated_gradients import target_scores

    with torch.no_grad():
        low, high = adapter.normalize(torch.zeros_like(x)), adapter.normalize(torch.ones_like(x))
        z = adapter.normalize(x)
    rel, logits = model_relevance(adapter.net, z, weights, low, high, composite, planner)
    scores = torch.diagonal(target_scores(logits, weights.to(logits.device)))
    span = high - low                                       # J·1: what a unit step of every pixel moves
    share = torch.where(span != 0, rel / torch.where(span != 0, span, 1), torch.zeros_like(rel))
    with torch.enable_grad():
        xs = x.detach().expand(rel.shape[0], *x.shape[1:]).contiguous().requires_grad_(True)
        (back,) = torch.autograd.grad(adapter.normalize(xs), xs, grad_outputs=share)
    return back, scores


def conservation(relevance, scores) -> dict:
    """Per target: delta = Σ relevance − S_t(x), relative_delta = |delta| / |S_t(x)|, f_x = S_t(x)."""
    import numpy as np

    from xaicli.explain.integrated_gradients import _floats, relative_delta

    sums = relevance.flatten(1).double().sum(1).cpu().tolist()
    f_x = scores.double().cpu().tolist()
    delta = [s - f for s, f in zip(sums, f_x)]
    return {"delta": delta, "relative_delta": _floats(relative_delta(np.array(delta), np.array(f_x))), "f_x": f_x}
