"""Deletion and insertion AUCs (`explain.faithfulness`), as a registered metric."""

from __future__ import annotations

from xaicli.explain.evaluation import index_of
from xaicli.metrics.registry import DOWN, UP, Metric, declare

KEYS = ("deletion_auc", "insertion_auc")


def run(ctx, group: list) -> list[dict]:
    from xaicli.explain.faithfulness import deletion_insertion_many

    out = [dict.fromkeys(KEYS) for _ in group]
    live = [i for i, mt in enumerate(group) if ctx.problem(mt, "deletion_insertion", constant=False) is None]
    if not live:
        return out
    o = ctx.options
    res = deletion_insertion_many(ctx.adapter, ctx.image, [group[i].smap for i in live], index_of(group[0]),
                                  region=group[0].pred_mask, steps=o["steps"], baseline=o["perturb_baseline"],
                                  batch_size=o["batch_size"])
    for i, r in zip(live, res):
        out[i] = {k: r[k] for k in KEYS}
    return out


declare(Metric("deletion_insertion", "faithfulness", KEYS,
               "area under the score as the top-ranked pixels are replaced by `--perturb-baseline` (deletion, "
               "lower is better) or restored onto it (insertion, higher is better), `--steps`+1 points; see below",
               null="empty predicted region (segmenter), non-finite map", better=(DOWN, UP), run=run, order=0))
