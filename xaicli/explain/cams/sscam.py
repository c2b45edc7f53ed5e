"""SS-CAM (Wang et al. 2020, "Smoothed Score-CAM"): Score-CAM's channel weights averaged over noisy masks.

Channel c's weight is the softmax over channels of the mean, over N draws, of the target
score of the input masked by U(Â_c) + δ minus the score of the input itself, with Â_c
the channel min-max scaled at the layer, U bilinear upsampling to the input and δ
Gaussian noise at the input's size. Computed as torchcam 0.5's SSCAM computes it (its
normalisation, upsampling and order of draws: one (C, H, W) noise tensor per draw from a
generator seeded with the engine's seed), every target from the same passes.
`score_gains` is shared with IS-CAM (iscam.py).
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod
from xaicli.explain.registry import Option

SAMPLES = Option("sscam_samples", int, 35, min=1, help="SS-CAM: noisy draws per channel (torchcam's default).")
STD = Option("sscam_std", float, 2.0, min=0.0, help="SS-CAM: standard deviation of the mask noise (torchcam's "
             "default; masks are in [0, 1]).")


class SSCAM(CamMethod):
    name = "sscam"
    aliases = ("ss-cam", "smoothed-scorecam")
    summary = "channel weights: softmax of the mean target score over noisy Score-CAM masks"
    reference, reference_package = "SSCAM", "torchcam.methods"
    checked = "equal to 1e-5 after min-max scaling, same seed"
    notes = ("ours, torchcam's arithmetic: one pass per channel and draw for all targets, batched by memory; "
             "noise from a generator seeded with the engine's seed (0)")
    options = (SAMPLES, STD)
    gradients = False
    per_channel = True
    order = 102

    def channel_weights(self, step):
        import torch

        n, std = step.options["sscam_samples"], step.options["sscam_std"]
        masks = unit_masks(step)
        gen = torch.Generator(device=masks.device).manual_seed(int(step.engine.seed))
        noise = torch.zeros(masks.shape, device=masks.device)   # contiguous: normal_ fills in memory order

        def inputs(r, idx):
            if idx.start == 0:             # torchcam draws every channel's noise at once, per draw
                noise.normal_(0.0, 1.0, generator=gen).mul_(std)
            return (masks[0, idx] + noise[0, idx])[:, None] * step.x

        step.note(sscam={"samples": n, "seed": int(step.engine.seed)})
        return score_gains(step, inputs, n)


def unit_masks(step):
    """(1, C, H, W): each channel min-max scaled at the layer (torchcam's eps), upsampled to the input."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    a = torch.from_numpy(np.ascontiguousarray(step.acts)).to(step.x.device)   # token grids come permuted
    a = a - a.amin(dim=(2, 3), keepdim=True)
    a = a / (a.amax(dim=(2, 3), keepdim=True) + 1e-8)
    return F.interpolate(a, size=tuple(step.x.shape[-2:]), mode="bilinear", align_corners=False)


def score_gains(step, inputs, rounds: int):
    """(T, C) softmax over channels of the mean over `rounds` of score(inputs(r, channels)) - score(input).

    `inputs(r, idx)` gives the masked inputs of round r for the channel slice idx; slices
    follow the channels in order, each round from channel 0.
    """
    import sys

    import numpy as np
    import torch

    net, x, scorers = step.engine.adapter.net, step.x, step.scorers
    channels = step.acts.shape[1]
    chunk = step.batch_size()
    gain = np.zeros((len(scorers), channels), np.float32)
    bar = None
    if step.engine.progress:
        from tqdm import tqdm

        bar = tqdm(total=rounds * channels, desc=f"{step.method} {step.layer.name}", unit="pass", file=sys.stderr,
                   leave=False)
    try:
        with torch.no_grad():
            out = net(x)
            base = np.float32([float(s(out)[0]) for s in scorers])
            for r in range(rounds):
                for s in range(0, channels, chunk):
                    idx = slice(s, min(s + chunk, channels))
                    out = net(inputs(r, idx))
                    gain[:, idx] += np.stack([f(out).float().cpu().numpy() for f in scorers]) - base[:, None]
                    if bar is not None:
                        bar.update(idx.stop - idx.start)
    finally:
        if bar is not None:
            bar.close()
    return torch.softmax(torch.from_numpy(gain / rounds), dim=-1).numpy()
