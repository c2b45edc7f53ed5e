"""AblationCAM (grad-cam's AblationCAM, same weights) without its wasted passes and stray bar.

grad-cam replaces the target layer by an AblationLayer and, for every item of the
batch, runs one forward per channel with that channel ablated. Here:

- every target of an image is scored from the same ablated forward (grad-cam repeats
  all C forwards per target);
- the layer is not swapped out of the user's model: a forward hook substitutes the
  ablated copies, and is removed even when the forward fails;
- the forward chunk follows memory, while the ablation value of each channel is kept
  exactly grad-cam's: 0 when the activations' minimum is 0, else the running minimum
  minus 1e7 within each group of 32 channels (AblationLayer lowers the minimum of the
  whole batch tensor row by row, so the value depends on the row's position);
- progress goes to stderr only when asked (grad-cam's tqdm always prints).
"""

from __future__ import annotations

import numpy as np
import torch

from xaicli.explain.chunking import planned_chunks

ABLATION_VALUE = 1e7
GROUP = 32   # grad-cam's AblationCAM batch_size: the ablation values depend on it


def ablation_values(raw: torch.Tensor, group: int = GROUP) -> torch.Tensor:
    """The value grad-cam's AblationLayer writes into the ablated channel of row j of a group."""
    m = torch.min(raw)
    if m == 0:
        return torch.zeros(group, dtype=raw.dtype)
    vals = []
    cur = m.detach().cpu().reshape(())
    for _ in range(group):
        cur = cur - ABLATION_VALUE
        vals.append(cur.clone())
    return torch.stack(vals).to(raw.dtype)


def ablation_weights(net, module, x: torch.Tensor, raw: torch.Tensor, acts: np.ndarray, scorers, *,
                     batch_size: int = GROUP, progress: bool = False, desc: str = "ablationcam",
                     vit: bool = False, plan=None):
    """(T, C) weights: (score - ablated score) / score per target and channel, as grad-cam computes.
    `plan` (a ChunkPlan) sizes the passes, else `batch_size` (at most GROUP) does."""
    raw = raw.detach()
    channels = acts.shape[1]
    with torch.no_grad():
        logits = net(x)
        original = np.float32([float(s(logits[0])) for s in scorers])
    values = ablation_values(raw)
    new = np.zeros((len(scorers), channels), np.float32)
    chunk = max(1, min(batch_size, GROUP))
    state: dict = {}

    def hook(mod, args, output):
        return state["ablated"]

    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=channels, desc=desc, unit="ch", file=sys.stderr, leave=False)
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for start, stop in planned_chunks(channels, plan, chunk, x.device):
                idx = list(range(start, stop))
                k = len(idx)
                ab = raw.repeat(k, *([1] * (raw.dim() - 1))).clone()
                if vit:                       # AblationLayerVit: channels are the last axis
                    ab = ab.transpose(1, ab.dim() - 1)
                for row, c in enumerate(idx):
                    ab[row, c] = values[c % GROUP]     # by channel, not by row: any chunk gives grad-cam's values
                if vit:
                    ab = ab.transpose(ab.dim() - 1, 1)
                state["ablated"] = ab
                out = net(x.expand(k, *x.shape[1:]))
                for t, s in enumerate(scorers):
                    new[t, idx] = s(out).float().cpu().numpy()
                if bar is not None:
                    bar.update(k)
    finally:
        handle.remove()
        state.clear()
        if bar is not None:
            bar.close()
    weights = (original[:, None] - new) / original[:, None]
    return weights.astype(np.float32), {"channels": channels, "group": GROUP,
                                        "chunk": plan.chunk if plan else chunk}
