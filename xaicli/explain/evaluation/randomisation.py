"""The cascading model-parameter randomisation test (`explain.randomization`), as a registered metric."""

from __future__ import annotations

from xaicli.metrics.registry import DOWN, Metric, declare


def run(ctx, group: list) -> list[dict]:
    from xaicli.explain.randomization import Randomizer

    randomizer = ctx.state.get("randomizer")
    if randomizer is None:
        o = ctx.options
        randomizer = ctx.state["randomizer"] = Randomizer(ctx.adapter, steps=o["rand_steps"], seed=o["seed"])
    return [randomizer.evaluate(mt, lambda why: ctx.warn_once("randomisation", why + "; its rand_ keys are null"))
            for mt in group]


declare(Metric("randomisation", "randomisation", ("rand_spearman_top", "rand_spearman_all", "rand_flag"),
               "Spearman ρ of the map recomputed by the model with its top layer randomised (`_top`), with every "
               "layer randomised (`_all`), at each checkpoint (`rand_spearman_<layer>`), and `rand_flag` = 1 when "
               "|ρ| ≥ 0.5 with every layer randomised (`--randomize`, see below)",
               null="method not recomputable, constant map", better=DOWN, default=False, run=run, order=0))
