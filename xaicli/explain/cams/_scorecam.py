"""ScoreCAM (grad-cam's ScoreCAM, same map), minus the passes that change nothing.

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
- screening (the default where bfloat16 is fast: `scorecam.screens_by_default`). Few
  channels decide the map: either the softmax is peaked (a segmentation target sums
  logits over many pixels, so scores differ by tens to thousands) or it is flat, and
  then a small error in one score barely moves the weighted sum. So every channel is
  first estimated cheaply: a bfloat16, channels-last copy of the model at a quarter of
  the input size (then, for the channels still in question, at full size). Exact float32
  scores follow, highest estimates first, and each estimate level is calibrated by an
  affine fit to the exact scores seen so far; its residuals give every estimate an error
  scale sigma. Scoring stops when (1) no unscored channel could gain or lose more than
  GAIN of the weight with its score K sigma off, and (2) the expected RMS error of the
  map, to first order in the score errors, is below TOLERANCE of the spread of the
  ReLU'd map; then the error model is checked on the unscored channels that matter most
  (scored exactly: an error beyond K sigma doubles that level's sigma and scoring goes
  on). The map then correlates with grad-cam's at >= 0.998 (Pearson). `exact=True`
  scores every channel in float32, as grad-cam does.
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xaicli.explain.chunking import planned_chunks

TOLERANCE = 0.03     # expected RMS map error / spread of the ReLU'd map, per target (Pearson ~0.999)
GAIN = 0.01          # most weight a channel may gain or lose when its score is K sigma off
K = 4.0              # sigmas for "could this channel overtake" and for checking the error model
MARGIN = 1e-3        # added to every sigma (logit units)
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

    def __init__(self, net, x, acts, scorers, batch_size: int, bar=None, screen_net=None, plan=None):
        self.net, self.x, self.acts, self.scorers = net, x, acts, scorers
        self.batch = max(1, int(batch_size))
        self.plan = plan                 # explain.chunking.ChunkPlan: exact passes take its (tuned) sizes
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
        plan = self.plan if level == EXACT else None
        with torch.inference_mode():
            for s, stop in planned_chunks(len(idx), plan, self.batch, self.x.device):
                part = list(idx[s:stop])
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
                     screen_size: tuple[int, int] | None = None, screen_net=None, plan=None):
    """(T, C) softmax weights of ScoreCAM for activations `acts` (1, C, h, w) of input `x`.

    Returns (weights, info): info says how many channels were scored exactly, how many
    estimate passes each level took, and the chunk of the exact passes. `plan` (a
    `ChunkPlan`, kept by the caller per input shape for the whole run) sizes the exact
    passes: on a CPU it climbs to the fastest size per sample, as IG's chunks do;
    without it every pass takes `batch_size`.
    """
    channels = acts.shape[1]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=channels, desc=desc, unit="ch", file=sys.stderr, leave=False)
    try:
        scorer = _Scorer(net, x, acts, scorers, batch_size, bar, screen_net, plan)
        if exact or channels <= 2 * scorer.batch:
            scores = scorer.scores(list(range(channels)))
            info = {"mode": "exact", "channels": channels, "exact_channels": channels}
        else:
            scores, info = _screened(scorer, channels, screen_size)
        info["passes"] = dict(scorer.passes)
        info["chunk"] = plan.chunk if plan is not None else scorer.batch
    finally:
        if bar is not None:
            bar.close()
    weights = torch.softmax(torch.from_numpy(scores.astype(np.float32)), dim=-1).numpy()
    return weights, info


def _levels(scorer: _Scorer, channels: int, screen_size) -> list[tuple[str, tuple | None]]:
    """Estimate levels the model accepts, cheapest first: bf16 at screen_size, bf16 at full size."""
    levels = []
    for name, size in (("bf16-small", screen_size), ("bf16", None)):
        if name == "bf16-small" and size is None:
            continue
        try:
            scorer.scores([0], name, size)
            levels.append((name, size))
        except Exception:  # fixed-size models (ViT position embeddings), no bf16 kernels on this device
            continue
    return levels


def _screened(scorer: _Scorer, channels: int, screen_size):
    T = len(scorer.scorers)
    acts = scorer.acts[0].reshape(channels, -1).double().cpu().numpy()     # (C, positions)
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
    safety = {name: 1.0 for name in est}
    checked = False
    while not done.all():
        estimate, sigma, source = _estimates(est, exact, done, safety)
        need, priority, _ = _assess(estimate, sigma, acts, done)
        if not need.any():
            if checked:
                break
            # Check the error model where it matters most: score exactly the channels with
            # the largest share of the map's expected error. An error beyond K sigma doubles
            # that level's sigma; either way the map is assessed again with the new scores.
            check = [int(c) for c in np.argsort(-priority, kind="stable") if not done[c]][:step]
            score_exact(check)
            missed = np.abs(exact[:, check] - estimate[:, check]) > K * sigma[:, check]
            checked = not missed.any()
            for t, j in zip(*np.nonzero(missed)):
                safety[source[t, check[j]]] *= 2.0
            continue
        checked = False
        nxt = next((name for name, _ in levels if np.isnan(est[name][0, need]).any()), None)
        if nxt is not None and need.sum() > step:
            # a finer estimate for the channels in question, and for the exact ones (its fit)
            ensure(nxt, np.flatnonzero(need | done))
            continue
        score_exact([int(c) for c in np.argsort(-priority, kind="stable") if need[c]][:step])
    estimate, sigma, _ = _estimates(est, exact, done, safety)
    _, _, error = _assess(estimate, sigma, acts, done)
    info = {"mode": "screened", "channels": channels, "exact_channels": int(done.sum()),
            "screen": [f"{n}" + (f"@{s[0]}x{s[1]}" if s else "") for n, s in levels],
            "expected_map_error": round(float(error), 6)}
    if scorer.bar is not None:
        scorer.bar.update(channels - int(done.sum()))
    return estimate.astype(np.float32), info


def _fit(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float, float] | None:
    """exact ≈ a·estimate + b on the channels scored both ways: (a, b, residual scale), or None.

    Affine, not just an offset: a smaller screening input scales a segmentation target's
    sum, and bfloat16 shifts it. The residual scale is the larger of the RMS residual and
    a third of the largest one. None when it cannot say anything (too few points, or a
    fit that does not increase).
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
    r = y - (a * x + b)
    return float(a), float(b), max(float(np.sqrt(np.mean(r ** 2))), float(np.max(np.abs(r))) / 3)


def _estimates(est: dict, exact: np.ndarray, done: np.ndarray, safety: dict):
    """Per target and channel: the best score estimate, its error scale sigma (0 when exact,
    inf when no level can say), and the level it comes from.

    Each level's estimate goes through its affine fit to the exact scores; sigma is the
    fit's residual scale times the level's safety factor (doubled whenever a check finds
    an error beyond K sigma), plus MARGIN. A channel takes the level with the smallest sigma.
    """
    T, C = exact.shape
    estimate = np.full((T, C), -np.inf)
    sigma = np.full((T, C), np.inf)
    source = np.full((T, C), "", dtype=object)
    for name in est:
        for t in range(T):
            f = _fit(est[name][t], exact[t])
            have = ~np.isnan(est[name][t])
            if f is None:
                raw = have & np.isinf(estimate[t])
                estimate[t, raw] = est[name][t, raw]
                source[t, raw] = name
                continue
            a, b, scale = f
            sd = safety[name] * scale + MARGIN
            better = have & (sd < sigma[t])
            estimate[t, better] = a * est[name][t, better] + b
            sigma[t, better] = sd
            source[t, better] = name
    estimate[:, done] = exact[:, done]
    sigma[:, done] = 0.0
    source[:, done] = EXACT
    return estimate, sigma, source


def _assess(estimate: np.ndarray, sigma: np.ndarray, acts: np.ndarray, done: np.ndarray):
    """Which channels still need a better score, their priority, and the expected map error.

    Two tests per target, on the map M = Σ w_c A_c (w: softmax of the scores):
    - overtaking: with every score K sigma off, could a channel gain or lose more than
      GAIN of the total weight? (A screened-out channel that might be the winner.)
    - expected error: with independent score errors of scale sigma, the map moves by
      δM = Σ w_c e_c (A_c - M) to first order; its RMS over positions must stay under
      TOLERANCE times the spread (std) of the ReLU'd map. Channels are taken by their
      share of that variance until the rest is under it.
    """
    need = np.zeros(estimate.shape[1], bool)
    priority = np.zeros(estimate.shape[1])
    worst = 0.0
    for t in range(estimate.shape[0]):
        logw = estimate[t] - _logsumexp(estimate[t])
        w = np.exp(logw)
        m = w @ acts
        spread = float(np.maximum(m, 0).std())
        dev2 = ((acts - m) ** 2).mean(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            var = np.where(np.isfinite(sigma[t]), (w * np.where(np.isfinite(sigma[t]), sigma[t], 0)) ** 2 * dev2,
                           np.inf)
        var[done] = 0.0
        budget = (TOLERANCE * spread) ** 2
        total = float(var.sum())
        worst = max(worst, math.sqrt(total) / spread if spread > 0 else (0.0 if total == 0 else math.inf))
        _, dw = _weight_errors(estimate[t], np.where(np.isfinite(sigma[t]), K * sigma[t], 1e3))
        over = (dw > GAIN) & ~done
        need |= over
        order = np.argsort(-var, kind="stable")
        rest = np.cumsum(var[order][::-1])[::-1]          # rest[i]: variance of order[i:]
        take = np.flatnonzero(rest > budget)
        if len(take):
            need[order[:take[-1] + 1]] = True
        share = np.where(np.isfinite(var), var / max(budget, 1e-300), 1e300)
        priority = np.maximum(priority, np.maximum(share, np.where(over, dw / GAIN, 0.0)))
    need &= ~done
    return need, priority, worst


def _weight_errors(estimate: np.ndarray, eps: np.ndarray):
    """Softmax weights of the estimates and, per channel, a bound of |exact weight - weight|
    when every score lies within ±eps of its estimate: the exact weight of c lies in
    [w_c e^-eps_c / U, w_c e^eps_c / L] with L, U = Σ w e^∓eps (log space, no overflow)."""
    logw = estimate - _logsumexp(estimate)
    e = np.minimum(eps, 700.0)
    log_lo, log_hi = _logsumexp(logw - e), _logsumexp(logw + e)
    w = np.exp(logw)
    up = np.exp(np.minimum(logw + e - log_lo, 700.0)) - w
    down = w - np.exp(logw - e - log_hi)
    return w, np.maximum(up, down)


def _logsumexp(v: np.ndarray) -> float:
    m = float(np.max(v))
    return m + float(np.log(np.sum(np.exp(v - m))))
