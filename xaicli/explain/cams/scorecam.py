"""ScoreCAM (grad-cam's ScoreCAM, same weights), minus the passes that change nothing.

ScoreCAM runs the model once per channel on the input masked by that channel's
min-max scaled, upsampled activation map, and weights the channels by the softmax of
the target scores. grad-cam's version costs C forwards per target, builds all C
upsampled masks and masked inputs at once (C·3·H·W floats: 2.5 GB for 512 channels
at 640²), and prints its own progress bar. Here:

- one pass per channel serves every target of the image;
- masks are upsampled chunk by chunk (align_corners=True, as UpsamplingBilinear2d),
  and the chunk follows free memory;
- channels whose map is constant give an all-zero mask, hence the same forward:
  it runs once;
- screening (the default). The softmax of the scores is usually dominated by a few
  channels: a segmentation target sums logits over many pixels, so scores differ by
  tens to thousands, and a channel 10 below the best holds < 5e-5 of the weight. So
  cheap estimates come first: a bfloat16 channels-last copy of the model at a quarter
  of the input size, then at full size for the channels still in question, and exact
  float32 scores last, in order of the estimates. Each estimate level gets an affine
  fit to the exact scores seen so far; its largest residual (x2, + MARGIN) bounds the
  exact score of every channel not scored exactly. Scoring stops when those bounds
  leave the unscored channels at most TAIL (1e-4) of every target's softmax; they get
  their fitted estimate. Where the softmax is flat (a classifier's logits), the bounds
  keep asking until every channel is exact, so the map is grad-cam's either way; the
  estimates then cost about a third of the exact passes more. `exact=True` skips them.
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

TAIL = 1e-4          # softmax share the unscored channels may hold at most
MARGIN = 1.0         # extra score margin (logit units) on top of the learnt error bound
EXACT = "exact"


def masks_for(acts: torch.Tensor, idx: Sequence[int], hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, H, W) min-max scaled upsampled maps of channels `idx`, and which are constant."""
    up = F.interpolate(acts[:, list(idx)].float(), size=tuple(hw), mode="bilinear", align_corners=True)[0]
    flat = up.flatten(1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    m = (up - lo[:, None, None]) / (hi - lo + 1e-8)[:, None, None]
    return m, (hi - lo) <= 0


def screening_copy(net):
    """A bfloat16, channels-last copy of the model for estimates (None if it cannot be made).

    Converting the weights once is faster than autocast, which casts them every pass;
    channels-last lets oneDNN use its bfloat16 kernels (AMX where the CPU has it).
    """
    try:
        twin = copy.deepcopy(net).to(torch.bfloat16).to(memory_format=torch.channels_last).eval()
    except Exception:  # TorchScript, exotic modules: autocast instead
        return None
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class _Scorer:
    """Runs masked inputs through the model in memory-sized chunks; scores every target per pass."""

    def __init__(self, net, x, acts, scorers, batch_size: int, bar=None, screen_net=None):
        self.net, self.x, self.acts, self.scorers = net, x, acts, scorers
        self.batch = max(1, int(batch_size))
        self.bar = bar
        self.screen_net = screen_net
        self._zero: dict = {}
        self.passes: dict[str, int] = {}

    def _run(self, inputs: torch.Tensor, level: str, size=None) -> np.ndarray:
        hw = tuple(inputs.shape[-2:])
        if size is not None and tuple(size) != hw:
            inputs = F.interpolate(inputs, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        if level == EXACT:
            out = self.net(inputs)
        elif self.screen_net is not None:
            out = self.screen_net(inputs.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        else:
            with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
                out = self.net(inputs)
        out = out.float()
        if out.dim() == 4 and tuple(out.shape[-2:]) != hw and size is not None:
            out = F.interpolate(out, size=hw, mode="bilinear", align_corners=False)
        self.passes[level] = self.passes.get(level, 0) + inputs.shape[0]
        return np.stack([s(out).float().cpu().numpy() for s in self.scorers])   # (T, k)

    def scores(self, idx: Sequence[int], level: str = EXACT, size=None) -> np.ndarray:
        """(T, len(idx)) target scores of the channels `idx` (constant channels share one pass)."""
        out = np.zeros((len(self.scorers), len(idx)), np.float32)
        hw = tuple(self.x.shape[-2:])
        with torch.inference_mode():
            for s in range(0, len(idx), self.batch):
                part = list(idx[s:s + self.batch])
                m, const = masks_for(self.acts, part, hw)
                live = [j for j in range(len(part)) if not bool(const[j])]
                if live:
                    out[:, [s + j for j in live]] = self._run(self.x * m[live][:, None], level, size)
                dead = [j for j in range(len(part)) if bool(const[j])]
                if dead:
                    if level not in self._zero:
                        self._zero[level] = self._run(torch.zeros_like(self.x), level, size)[:, 0]
                    out[:, [s + j for j in dead]] = self._zero[level][:, None]
                if self.bar is not None and level == EXACT:
                    self.bar.update(len(part))
        return out


def scorecam_weights(net, x: torch.Tensor, acts: torch.Tensor, scorers, *, batch_size: int = 16,
                     progress: bool = False, exact: bool = False, desc: str = "scorecam",
                     screen_size: tuple[int, int] | None = None, screen_net=None):
    """(T, C) softmax weights of ScoreCAM for activations `acts` (1, C, h, w) of input `x`.

    Returns (weights, info): info says how many channels were scored exactly and how
    many estimate passes each level took.
    """
    channels = acts.shape[1]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=channels, desc=desc, unit="ch", file=sys.stderr, leave=False)
    try:
        scorer = _Scorer(net, x, acts, scorers, batch_size, bar, screen_net)
        if exact or channels <= 2 * scorer.batch:
            scores = scorer.scores(list(range(channels)))
            info = {"mode": "exact", "channels": channels, "exact_channels": channels}
        else:
            scores, info = _screened(scorer, channels, screen_size)
        info["passes"] = dict(scorer.passes)
    finally:
        if bar is not None:
            bar.close()
    weights = torch.softmax(torch.from_numpy(scores.astype(np.float32)), dim=-1).numpy()
    return weights, info


def _levels(scorer: _Scorer, channels: int, screen_size) -> list[tuple[str, tuple | None]]:
    """Estimate levels the model accepts, cheapest first: bf16 at screen_size, bf16 at full size."""
    levels = []
    probe = [0]
    for name, size in (("bf16-small", screen_size), ("bf16", None)):
        if name == "bf16-small" and size is None:
            continue
        try:
            scorer.scores(probe, name, size)
            levels.append((name, size))
        except Exception:  # fixed-size models (ViT position embeddings), no bf16 kernels on this device
            continue
    return levels


def _screened(scorer: _Scorer, channels: int, screen_size):
    T = len(scorer.scorers)
    levels = _levels(scorer, channels, screen_size)
    est = {name: np.full((T, channels), np.nan) for name, _ in levels}
    sizes = dict(levels)
    exact = np.full((T, channels), np.nan)
    done = np.zeros(channels, bool)
    step = scorer.batch

    def ensure(name: str, idx) -> None:
        idx = [int(c) for c in idx if np.isnan(est[name][0, c])]
        if idx:
            est[name][:, idx] = scorer.scores(idx, name, sizes[name])

    def score_exact(idx) -> None:
        idx = [int(c) for c in idx if not done[c]]
        if idx:
            exact[:, idx] = scorer.scores(idx)
            done[idx] = True

    if not levels:
        score_exact(range(channels))
    else:
        ensure(levels[0][0], range(channels))
        first = est[levels[0][0]]
        score_exact(np.argsort(-(first - first.max(1, keepdims=True)).max(0), kind="stable")[:step])
    while not done.all():
        upper, estimate = _bounds(est, exact, done)
        cand = _candidates(upper, exact, done)
        if not cand.any():
            break
        nxt = next((name for name, _ in levels if np.isnan(est[name][0, cand]).any()), None)
        if nxt is not None and cand.sum() > step:
            # a finer estimate for the channels still in question, and for the exact ones (its fit)
            ensure(nxt, np.flatnonzero(cand | done))
            continue
        rank = (estimate - np.nanmax(exact, axis=1, keepdims=True)).max(0)
        order = [int(c) for c in np.argsort(-rank, kind="stable") if cand[c]]
        score_exact(order[:step])
    upper, estimate = _bounds(est, exact, done)
    scores = np.where(done[None, :], exact, estimate)
    info = {"mode": "screened", "channels": channels, "exact_channels": int(done.sum()),
            "screen": [f"{n}" + (f"@{s[0]}x{s[1]}" if s else "") for n, s in levels]}
    if scorer.bar is not None:
        scorer.bar.update(channels - int(done.sum()))
    return scores.astype(np.float32), info


def _fit(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float, float] | None:
    """exact ≈ a·estimate + b on the channels scored both ways: (a, b, max |residual|), or None.

    Affine, not just an offset: a smaller screening input scales a segmentation target's
    sum, and bfloat16 shifts it. None when it cannot bound anything (too few points, or
    a fit that does not increase).
    """
    ok = ~np.isnan(estimate) & ~np.isnan(exact)
    x, y = estimate[ok].astype(np.float64), exact[ok].astype(np.float64)
    if len(x) < 3:
        return None
    if np.ptp(x) > 1e-9 * max(1.0, float(np.abs(x).max())):
        a, b = np.polyfit(x, y, 1)
    else:
        a, b = 1.0, float(np.median(y - x))
    if not a > 0:
        return None
    return float(a), float(b), float(np.max(np.abs(y - (a * x + b))))


def _bounds(est: dict, exact: np.ndarray, done: np.ndarray):
    """Per target and channel: an upper bound of the exact score (inf: unknown) and a best estimate."""
    T, C = exact.shape
    upper = np.full((T, C), np.inf)
    estimate = np.full((T, C), np.nan)
    for name in est:                                  # cheapest first: later (finer) levels override
        for t in range(T):
            f = _fit(est[name][t], exact[t])
            if f is None:
                continue
            a, b, res = f
            have = ~np.isnan(est[name][t])
            fitted = a * est[name][t] + b
            upper[t, have] = np.minimum(upper[t, have], fitted[have] + 2.0 * res + MARGIN)
            estimate[t, have] = fitted[have]
    for name in est:                                  # channels without a usable fit: raw estimate
        estimate = np.where(np.isnan(estimate), est[name], estimate)
    estimate = np.where(np.isnan(estimate), -np.inf, estimate)
    upper[:, done] = exact[:, done]
    estimate[:, done] = exact[:, done]
    return upper, estimate


def _candidates(upper: np.ndarray, exact: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Channels not scored exactly that may hold more than their share of TAIL of some softmax."""
    cand = np.zeros(exact.shape[1], bool)
    for t in range(exact.shape[0]):
        best = float(np.nanmax(exact[t, done]))
        head = float(np.sum(np.exp(exact[t, done] - best)))
        rest = np.flatnonzero(~done)
        if not len(rest):
            continue
        u = upper[t, rest]
        if not np.isfinite(u).all():
            cand[rest[~np.isfinite(u)]] = True
            u = np.where(np.isfinite(u), u, -np.inf)
        w = np.exp(np.minimum(u - best, 50.0))
        order = np.argsort(-w, kind="stable")
        tail = np.cumsum(w[order][::-1])[::-1]         # tail[i]: mass of order[i:]
        keep = np.flatnonzero(tail > TAIL * head)
        if len(keep):
            cand[rest[order[:keep[-1] + 1]]] = True
    return cand
