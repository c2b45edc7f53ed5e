"""Completeness: does a map add up to the score difference it explains (IG's axiom)?

Methods with a reference point (IG, DeepLift, DeepLiftShap) store the target's
score at the image and at the baseline in the map's meta (`f_x`, `f_baseline`). Quantus's
`Completeness` asks whether Σ map equals S(x) − S(x') exactly (a yes/no that float
arithmetic almost never meets); the relative gap |Σ map − ΔS| / |ΔS| here is 0 exactly
when Quantus says yes, and says how far off it is otherwise.
"""

from __future__ import annotations

import numpy as np

from xaicli.io.record import per_target
from xaicli.metrics.registry import DOWN, Metric, declare


def completeness(values: np.ndarray, info: dict, t: int) -> float | None:
    """|Σ map − (f_x − f_baseline)| / |f_x − f_baseline| for target t; null without both scores,
    with ΔS = 0, or for a non-finite map."""
    f_x, f_base = per_target(info, "f_x", t), per_target(info, "f_baseline", t)
    total = float(np.sum(np.asarray(values, dtype=np.float64)))
    if f_x is None or f_base is None or f_x == f_base or not np.isfinite(total):
        return None
    return abs(total - (f_x - f_base)) / abs(f_x - f_base)


declare(Metric("delta", "axiomatic", ("delta", "relative_delta"),
               "IG convergence delta Σa − (S(x) − S(x')) from the record's meta, and it ÷ |S(x) − S(x')|",
               null="not recorded (CAMs, methods without a path integral)", order=0))
declare(Metric("completeness", "axiomatic", ("completeness",),
               "|Σ map − (S(x) − S(x'))| ÷ |S(x) − S(x')| from the map's values and the scores its meta stores: "
               "0 for a complete map",
               null="no stored scores (CAMs, methods without a baseline), S(x) = S(x'), non-finite map",
               better=DOWN, reference="quantus.Completeness (a yes/no: ours is 0 exactly when it says yes)",
               default=False, order=1))
