"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the Grad-CAM map, per input channel.

Unlike the other CAMs its map is signed and per channel of the model input, like an
attribution: the Grad-CAM map of the layer (ReLU'd, bilinear to the model input, as
`gradcam` stores it) times each channel of the guided-backprop gradient of the score
with respect to the model input (normalised, at the model's input size), then resized
per channel to the image. So it is stored as attr/guided-gradcam/<layer>, (T, C, H, W),
kind attribution, with its layer and `family: cam` in the meta (cams/__init__.py,
`input_channels`). Captum's GuidedGradCam upsamples with interpolate_mode (nearest by
default): ours equals it with interpolate_mode="bilinear", grad-cam's own Grad-CAM
resizing.
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class GuidedGradCAM(CamMethod):
    name = "guided-gradcam"
    aliases = ("guided-grad-cam", "guidedgradcam")
    summary = "guided backprop times the Grad-CAM map: signed, per input channel (stored as attr/guided-gradcam/...)"
    reference, reference_package = "GuidedGradCam", "captum.attr"
    checked = ("equal to 1e-5 (interpolate_mode bilinear; small CNN, smp U-Net++ resnet18); grad-cam's "
               "GuidedBackpropReLUModel x GradCAM equal after scaling")
    notes = ("d score / d model input with the guided rule on every ReLU (one more forward and backward per target "
             "and image, shared by the layers) times gradcam's map; a model without ReLU is refused (left out of "
             "--method all)")
    input_channels = True
    order = 15

    def unfit(self, adapter, image):
        from xaicli.explain.backward_rules import relu_problem

        return relu_problem(adapter, image, self.name)

    def input_map(self, step):
        import numpy as np

        from xaicli.explain import registry
        from xaicli.explain.cams._tools import resize

        cam = np.maximum(registry.methods("cam")["gradcam"].cam_image(step), 0)
        return self.guided(step) * resize(cam, tuple(step.x.shape[-2:]))[:, None]

    def guided(self, step):
        """(T, C, H, W): each target's guided-backprop gradient at the model input (once per input: the
        layers of one image share it)."""
        import torch

        from xaicli.explain.backward_rules import BackwardRules, check_ruled, guided

        kept = step.engine.cache.get(self.name)
        if kept is not None and kept[0] is step.x:
            return kept[1]
        x = step.x.detach().clone().requires_grad_(True)
        net = step.engine.adapter.net
        with torch.enable_grad(), BackwardRules(net, {"relu": guided}) as rules:
            logits = net(x)
        check_ruled(rules, step.engine.adapter, self.name)
        out = []
        for t, score in enumerate(step.scorers):
            (g,) = torch.autograd.grad(score(logits[0]), x, retain_graph=t < len(step.scorers) - 1)
            out.append(g[0].detach().float().cpu())
        maps = torch.stack(out)
        step.engine.cache[self.name] = (step.x, maps)
        return maps
