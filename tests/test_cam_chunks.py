"""The per-channel CAMs (ScoreCAM, AblationCAM) size their no-grad passes by a chunk plan kept for
the engine's run (on a CPU it climbs to the fastest size per sample, as IG's chunks do); -b fixes
the chunk. The map must not depend on the chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_scorecam_channels import segmenter  # noqa: F401, F811  (the built-in segmenter, a scan, its region)

pytestmark = pytest.mark.usefixtures("one_thread")


def passes(ad, run):
    """The batch sizes of every forward of the model during run(), and run()'s result."""
    sizes: list[int] = []
    hook = ad.net.register_forward_pre_hook(lambda mod, args: sizes.append(int(args[0].shape[0])))
    try:
        return sizes, run()
    finally:
        hook.remove()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_passes_follow_the_run_s_chunk_plan_and_b_fixes_them_with_the_same_map(segmenter, method):  # noqa: F811
    from xaicli.explain.cam import CamEngine
    from xaicli.models.layers import layer_table

    ad, img, _, target = segmenter
    targets = [target]
    layers = layer_table(ad, ad.input_size(img.shape[:2])).resolve(["encoder_last"])
    assert layers[0].shape[1] == 128
    planned = CamEngine(ad, layers, [method])
    sizes, maps = passes(ad, lambda: planned.explain(img, targets))
    [plan] = [v for k, v in planned.cache.items() if k[0] == "chunk_plan"]
    assert {8, 16} <= set(sizes) and max(sizes) <= plan.cap      # the climb from 8 on a CPU, within memory
    assert plan.times                                             # full chunks were timed into the plan
    again, _ = passes(ad, lambda: planned.explain(img, targets))
    assert again[-1] <= max(plan.times) and again != sizes       # the next image continues the same plan

    fixed = CamEngine(ad, layers, [method], batch_size=5)
    sizes5, maps5 = passes(ad, lambda: fixed.explain(img, targets))
    assert not [k for k in fixed.cache if k[0] == "chunk_plan"]
    assert 5 in sizes5 and not {8, 16} & set(sizes5)
    a, b = maps[0].values, maps5[0].values
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max()))


def drive(monkeypatch, cost: dict, rows: int, calls: int):
    """`calls` calls of `rows` rows through planned_chunks with a plan from 8 (memory: 64), on a fake
    clock that charges cost[n] s per sample (+50% on a size's first use): the sizes used and the plan."""
    from xaicli.explain import chunking
    from xaicli.explain.chunking import planned_chunks

    clock, used = [0.0], []
    monkeypatch.setattr(chunking, "_clock", lambda: (lambda: clock[0]))
    plan = chunking.ChunkPlan(tune=True, start=8)
    plan.cap = 64
    for _ in range(calls):
        for lo, hi in planned_chunks(rows, plan, 99, torch.device("cpu")):
            n = hi - lo
            clock[0] += n * cost[n] * (1.5 if n not in used else 1.0)
            used.append(n)
    return used, plan


def test_a_climb_goes_no_higher_than_the_rows_a_call_has(monkeypatch):
    """Calls of 16 channels each (a 16-channel layer, or --scorecam-channels 16) settle on a size;
    a climb to 32 could never be timed by them and would never end."""
    from xaicli.explain.chunking import planned_chunks

    used, plan = drive(monkeypatch, {8: 0.6, 16: 0.5, 32: 0.3}, 16, 4)   # bigger is always faster per sample
    assert used[:4] == [8, 8, 16, 16] and plan.best == 16 and used[4:] == [16]
    fixed = [hi - lo for lo, hi in planned_chunks(16, None, 5, torch.device("cpu"))]
    assert fixed == [5, 5, 5, 1]


def test_going_down_a_climb_looks_past_a_level_step(monkeypatch):
    """8 → 4 within 5% is noise, not the floor: the climb goes on to 2 (measured on a U-Net++ at 256²:
    8: 0.37, 4: 0.38, 2: 0.28 s per sample), and stops where it clearly gets worse."""
    used, plan = drive(monkeypatch, {1: 0.31, 2: 0.28, 4: 0.38, 8: 0.37, 16: 0.55}, 200, 1)
    assert used[:10] == [8, 8, 16, 16, 4, 4, 2, 2, 1, 1] and plan.best == 2


def test_calls_of_fewer_rows_than_the_start_still_climb_down(monkeypatch):
    """Calls of 4 rows (start 8): the climb cannot go up, so it tries 2 and 1."""
    used, plan = drive(monkeypatch, {1: 0.5, 2: 0.3, 4: 0.4}, 4, 6)
    assert used[:7] == [4, 4, 2, 2, 1, 1, 2] and plan.best == 2
