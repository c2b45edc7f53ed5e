"""The metrics of `xai stats` that run the model: one module per metric or family.

Each module declares its metrics to `xaicli.metrics.registry` with a `run(ctx, group)`:
`group` holds the map targets of one record that share a target (class index and
predicted region), so the unperturbed image's score is computed once for all of them;
`ctx` (one per record) gives the model, the image, the options and the batched scorer.
Modules import torch inside their functions: the declarations are read by `--help`.

Scores are those of deletion/insertion (`explain.faithfulness`): the target's softmax
probability for a classifier, the sum of the target's logits over its predicted region
for a segmenter. Random draws are seeded per (--seed, record, map, target, metric), so a
row does not depend on which other records or metrics ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("xai")


@dataclass
class Context:
    """What a model metric gets for one record: model, image, options, and one warning per run."""

    adapter: Any
    image: np.ndarray
    record_id: str
    options: dict[str, Any]
    warned: set = field(default_factory=set)      # shared by every record of the run
    state: dict = field(default_factory=dict)     # per-run state of metrics (built models), shared likewise
    _unit: Any = None

    @property
    def unit(self):
        """(1, C, H, W) image in [0, 1] at its own size, as the maps are."""
        if self._unit is None:
            self._unit = self.adapter.image_to_unit(self.image)
        return self._unit

    @property
    def segmentation(self) -> bool:
        return self.adapter.task == "segmentation"

    def warn_once(self, metric: str, text: str) -> None:
        """One warning per metric and reason for the whole run, not one per record."""
        if (metric, text) not in self.warned:
            self.warned.add((metric, text))
            log.warning("--metrics %s: %s", metric, text)

    def seed(self, mt, metric: str) -> int:
        """A stable seed per (--seed, record, map, target, metric)."""
        from xaicli.explain.baselines import derive_seed

        return derive_seed(int(self.options.get("seed", 0)), f"{self.record_id}\0{mt.key}\0{mt.t}", metric)

    def scores(self, batch, index: int, region) -> np.ndarray:
        """(N,) float64 target scores of unit images `batch` (N, C, H, W), in chunks of --batch-size."""
        import torch

        from xaicli.explain.faithfulness import _score

        hw = tuple(batch.shape[-2:])
        reg = None
        if self.segmentation:
            reg = torch.from_numpy(np.asarray(region) != 0).to(batch.device, batch.dtype)
        size = int(self.options.get("batch_size", 16))
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, batch.shape[0], size):
                out.extend(_score(self.adapter, batch[i:i + size], index, reg, hw).double().cpu().tolist())
        return np.asarray(out, dtype=np.float64)

    def score_each(self, make, n: int, index: int, region) -> np.ndarray:
        """(n,) scores of the images make(0) ... make(n − 1), each (C, H, W), built one batch at a time
        so memory stays at one batch whatever n is."""
        import torch

        size = int(self.options.get("batch_size", 16))
        parts = [self.scores(torch.stack([make(i) for i in range(lo, min(n, lo + size))]), index, region)
                 for lo in range(0, n, size)]
        return np.concatenate(parts) if parts else np.empty(0)

    def legacy_rng(self, mt, metric: str) -> np.random.RandomState:
        """numpy's legacy generator, seeded per map target: the stream Quantus draws from after
        `np.random.seed`, so a test can give Quantus the same draws."""
        return np.random.RandomState(self.seed(mt, metric) % 2 ** 32)

    def recompute(self, mt, metric: str):
        """The function (adapter, image=None, target=None) → map that redoes this map through its
        method (`explain.randomization.recompute_function`), or None with the reason warned once
        (non-finite map, unregistered method, a --target-mask target)."""
        from xaicli.explain.randomization import recompute_function

        if self.problem(mt, metric, constant=False) is not None:
            return None
        return recompute_function(mt, warn=lambda why: self.warn_once(metric, why + "; null"))

    def problem(self, mt, metric: str, constant: bool = True) -> str | None:
        """Why a perturbation metric is null for this map target (None: it applies); warned once.
        `constant`: a constant map (no ranking) is a reason too."""
        if not mt.finite:
            why = "maps holding NaN or inf give null"
        elif mt.smap.ndim != 2:
            why = "maps without pixels (tabular) give null"
        elif constant and not mt.smap.max() > mt.smap.min():
            why = "constant maps (no ranking) give null"
        elif self.segmentation and (mt.pred_mask is None or not np.any(mt.pred_mask)):
            why = "segmenter targets with an empty predicted region give null"
        else:
            return None
        self.warn_once(metric, why)
        return why


def index_of(mt) -> int:
    return int(mt.target.get("index", mt.t))


def minmax(smap: np.ndarray) -> np.ndarray | None:
    """The map scaled to [0, 1] by its min and max (grad-cam's convention); None for a constant map."""
    lo, hi = float(smap.min()), float(smap.max())
    if not hi > lo:
        return None
    return (smap - lo) / (hi - lo)


def by_max(a: np.ndarray) -> np.ndarray:
    """Quantus's normalise_by_max: a / max|a| (an all-zero map stays as it is)."""
    m = float(np.abs(a).max())
    return a / m if m > 0 else a
