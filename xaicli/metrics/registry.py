"""The metric registry: what each `xai stats` metric declares, found by discovery.

A metric is declared once, next to its code: model-free ones in `xaicli/metrics/`
(numpy), the ones that run the model in `xaicli/explain/evaluation/` (one module per
metric or family, torch imported inside their functions). `declare(Metric(...))` at
import registers it; `metrics()` imports every module of both packages. The CLI's
`--metrics` choices and help, and the README's key table, are read from here.

Nothing here imports torch or scipy: `xai stats --help` and completion list the metrics.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from xaicli.errors import XaiUsageError

PACKAGES = ("xaicli.metrics", "xaicli.explain.evaluation")
# The groups `--metrics` accepts, in the README's order, with what they answer.
GROUPS = {
    "statistics": "value statistics of the raw map",
    "complexity": "how concentrated the map is",
    "localisation": "does the map point at the region (predicted or ground-truth mask)",
    "faithfulness": "does perturbing what the map ranks first change the score (with -m)",
    "robustness": "does the map stay when the input barely changes (with -m)",
    "randomisation": "does the map change when the model or the target does (with -m)",
    "axiomatic": "does the map add up to the score difference it explains",
}
UP, DOWN = "↑", "↓"


@dataclass(frozen=True)
class Metric:
    """One metric: the keys it writes in every row, and, for model metrics, how to compute them.

    `run(ctx, group)` gets the evaluation context (explain/evaluation) and the map targets
    of one record that share a target and region, and returns one dict of `keys` per map
    target; it is None for the model-free metrics, which `metrics.report.map_row` computes.
    A metric that compares records also has `combine`: its `run` leaves `Deferred` values,
    and `settle` hands those of one comparison group, over a window of records, to
    `combine(payloads)`, which returns their values in order.
    """

    name: str
    group: str
    keys: tuple[str, ...]
    summary: str                       # what it measures (README table)
    null: str = ""                     # when its value is null (README table)
    better: str | tuple[str, ...] = ""  # UP, DOWN or "" for every key, or one per key
    default: bool = True               # computed without --metrics (model metrics: with -m)
    reference: str = ""                # the implementation it is checked against (README)
    run: Callable[[Any, list], list[dict]] | None = None
    order: int = 1000                  # place within its group
    combine: Callable[[list], list] | None = None

    @property
    def model(self) -> bool:
        return self.run is not None

    def direction(self, key: str) -> str:
        """The better direction of one of its keys (UP, DOWN or "")."""
        if isinstance(self.better, str):
            return self.better
        return self.better[self.keys.index(key)] if key in self.keys else ""


@dataclass(frozen=True)
class Deferred:
    """A value known only once the other records of its window are read: `group` says which
    rows are compared with each other, `payload` is what this row brings to the comparison."""

    group: Any
    payload: Any


def settle(rows: list[dict], chosen: Sequence[Metric]) -> None:
    """Replace the Deferred values of `rows` (one window of records) by what their metric's
    `combine` makes of each comparison group."""
    for metric in chosen:
        if metric.combine is None:
            continue
        for key in metric.keys:
            groups: dict = {}
            for row in rows:
                if isinstance(row.get(key), Deferred):
                    groups.setdefault(row[key].group, []).append(row)
            for members in groups.values():
                for row, value in zip(members, metric.combine([r[key].payload for r in members])):
                    row[key] = value


_REGISTRY: dict[str, Metric] = {}
_LOADED: list[bool] = []


def declare(metric: Metric) -> Metric:
    """Register a metric; a name or key taken by another metric, or an unknown group, is a bug."""
    taken = {s: m.name for m in _REGISTRY.values() if m.name != metric.name for s in (m.name, *m.keys)}
    clash = [s for s in (metric.name, *metric.keys) if s in taken]
    if clash or metric.group not in GROUPS:
        raise RuntimeError(f"metric {metric.name!r}: group {metric.group!r}, {clash[:1]} already declared")
    _REGISTRY[metric.name] = metric
    return metric


def metrics() -> dict[str, Metric]:
    """Every metric by name, by group then order (imports the declaring modules once)."""
    if not _LOADED:
        for name in PACKAGES:
            package = importlib.import_module(name)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_") and not info.ispkg:
                    importlib.import_module(f"{name}.{info.name}")
        _LOADED.append(True)
    groups = list(GROUPS)
    return {m.name: m for m in sorted(_REGISTRY.values(), key=lambda m: (groups.index(m.group), m.order, m.name))}


def choices() -> list[str]:
    """What --metrics accepts: the groups, then every metric name (shell completion)."""
    return [*GROUPS, *metrics()]


def resolve(spec: Sequence[str] | None, *, model: bool, randomize: bool = False) -> list[Metric]:
    """The metrics `--metrics` asks for (comma-separated groups or names, repeatable), each once.

    Without --metrics: every default metric, the model ones only with -m; --randomize adds
    the randomisation cascade. A metric that runs the model without -m, an
    empty or unknown name are usage errors naming the valid ones."""
    known = metrics()
    chosen: list[Metric] = []
    if not spec:
        chosen = [m for m in known.values() if m.default and (model or not m.model)]
    for raw in spec or []:
        for part in str(raw).split(","):
            key = part.strip().lower()
            if key in GROUPS:
                picked = [m for m in known.values() if m.group == key]
            elif key in known:
                picked = [known[key]]
            else:
                by_key = [m for m in known.values() if key and key in m.keys]
                if not by_key:
                    raise XaiUsageError(f"--metrics {part.strip()!r}: unknown metric; use groups "
                                        f"{', '.join(GROUPS)} or names {', '.join(known)}, comma-separated")
                picked = by_key
            chosen.extend(m for m in picked if m not in chosen)
    if randomize and known["randomisation"] not in chosen:
        chosen.append(known["randomisation"])
    if not model:
        need = [m.name for m in chosen if m.model]
        if need:
            raise XaiUsageError(f"--metrics {', '.join(need)} run the model: pass -m MODEL (the model the records "
                                "were made with)")
    order = list(known)
    return sorted(chosen, key=lambda m: order.index(m.name))


def better(key: str) -> str:
    """The better direction of a row key (UP, DOWN or ""), for the markdown summary."""
    for m in metrics().values():
        if key in m.keys:
            return m.direction(key)
        if m.group == "randomisation" and key.startswith("rand_spearman_"):
            return m.direction("rand_spearman_all")
    return ""
