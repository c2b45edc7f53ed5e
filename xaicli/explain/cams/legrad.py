"""LeGrad (Bousselham et al. 2024): gradients of each block's own class score on its attention probabilities.

For every --layer's transformer block l, the block's tokens z^l are read out as the
classifier reads the last block (torchcam 0.5's LeGrad: classifier(final norm(mean of
the tokens))) to a score s^l; the map is ReLU(d s^l / d A^l), A^l the block's post-softmax
attention (batch, heads, queries, keys), averaged over heads and queries, the prefix
(CLS) keys dropped, on the patch grid; blocks are averaged. One map for all --layer
values (cam/legrad/<l1>+<l2>), one forward and one backward per target.

Hugging Face ViT-like models (an attention module of the block that returns its
probabilities under `eager` attention, a `classifier` and the base model's final
`layernorm`): their attention runs eager while LeGrad runs. Other models get one line.
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class LeGrad(CamMethod):
    name = "legrad"
    aliases = ("le-grad",)
    summary = "ReLU'd gradient of each block's class score on its attention probabilities, blocks averaged (ViT)"
    reference, reference_package = "LeGrad", "torchcam.methods"
    checked = "equal to 1e-5 (raw), on a torchvision ViT holding the HF ViT's weights"
    notes = ("ours for Hugging Face ViTs (torchcam's needs nn.MultiheadAttention); one map for all --layer "
             "values, key cam/legrad/<l1>+<l2>; attention runs eager")
    tasks = ("classification",)
    token_layers = True
    whole_model = True
    reads_layers = True
    order = 165

    def combine(self, step):
        import torch

        from xaicli.explain.cams._tools import resize

        net = step.engine.adapter.net
        hw = tuple(step.x.shape[-2:])
        parts = [_parts(net, layer) for layer in step.modules]
        readout = _readout(net)
        scorers = step.scorers()
        state: dict = {"tokens": {}, "probs": {}}
        handles, saved = [], []
        for i, (block, attention) in enumerate(parts):
            handles.append(block.register_forward_hook(lambda m, a, o, i=i: state["tokens"].__setitem__(i, o)))
            handles.append(attention.register_forward_hook(lambda m, a, o, i=i: state["probs"].__setitem__(i, o[1])))
            saved.append((attention.config, attention.config._attn_implementation))
        try:
            for config, _ in saved:
                config._attn_implementation = "eager"        # sdpa never forms the probabilities
            with torch.enable_grad():
                net(step.x.detach().requires_grad_(True))
                maps = []
                for t, score in enumerate(scorers):
                    per_block = []
                    for i, layer in enumerate(step.modules):
                        tokens, probs = state["tokens"][i], state["probs"][i]
                        s = score(readout(tokens)[0])
                        last = t == len(scorers) - 1 and i == len(step.modules) - 1
                        (g,) = torch.autograd.grad(s, probs, retain_graph=not last)
                        prefix, gh, gw = layer.grid(tokens.shape[1], hw)
                        per_block.append(g.relu().mean(dim=(1, 2))[0, prefix:].reshape(gh, gw))
                    maps.append(torch.stack(per_block).mean(0))
        finally:
            for h in handles:
                h.remove()
            for config, impl in saved:
                config._attn_implementation = impl
            state.clear()
        cam = resize(torch.stack(maps).detach().cpu().numpy(), hw)
        return ("+".join(la.name for la in step.layers), "+".join(la.path for la in step.modules), cam)


def _parts(net, layer):
    """(block, attention module) of a ViT --layer: the block itself or the block holding it (a layernorm_before)."""
    from xaicli.errors import XaiUsageError

    if layer.tokens != "vit":
        raise XaiUsageError(f"legrad applies to ViT layers only (transformer blocks over patch tokens); --layer "
                            f"{layer.name} ({layer.path}) is not one; use gradcam or recipro-cam")
    parent = {id(c): m for m in net.modules() for c in m.children()}
    for block in (layer.module, parent.get(id(layer.module))):
        attention = next((m for m in (block.children() if block is not None else ())
                          if hasattr(getattr(m, "config", None), "_attn_implementation")), None)
        if attention is not None:
            return block, attention
    raise XaiUsageError(f"legrad: --layer {layer.name} ({layer.path}) is in no block with a Hugging Face attention "
                        "module (which returns its probabilities); use a Hugging Face ViT, or gradcam or recipro-cam")


def _readout(net):
    """tokens (B, L, D) -> logits (B, K): the classifier on the final norm of the mean token (torchcam's)."""
    from xaicli.errors import XaiUsageError

    model = getattr(net, "model", net)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    norm, head = getattr(base, "layernorm", None), getattr(model, "classifier", None)
    if norm is None or head is None:
        raise XaiUsageError(f"legrad reads each block out with the model's classifier and final layernorm; "
                            f"{type(model).__name__} has no `classifier` or `{getattr(model, 'base_model_prefix', '')}"
                            ".layernorm`; use gradcam or recipro-cam")
    return lambda tokens: head(norm(tokens.mean(dim=1)))
