"""Deletion and insertion AUCs (`explain.faithfulness`), as a registered metric."""

from __future__ import annotations

from xaicli.explain.evaluation import index_of
from xaicli.metrics.registry import DOWN, UP, Metric, declare


def run(ctx, group: list) -> list[dict]:
    from xaicli.explain.faithfulness import deletion_insertion_many

    o = ctx.options
    res = deletion_insertion_many(ctx.adapter, ctx.image, [mt.smap for mt in group], index_of(group[0]),
                                  region=group[0].pred_mask, steps=o["steps"], baseline=o["perturb_baseline"],
                                  batch_size=o["batch_size"])
    return [{"deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"]} for r in res]


declare(Metric("deletion_insertion", "faithfulness", ("deletion_auc", "insertion_auc"),
               "area under the score as the top-ranked pixels are replaced by `--perturb-baseline` (deletion, "
               "lower is better) or restored onto it (insertion, higher is better), `--steps`+1 points; see below",
               null="empty predicted region (segmenter), non-finite map", better=(DOWN, UP), run=run, order=0))
