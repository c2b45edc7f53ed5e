"""Pointing game, relevance mass/rank accuracy, top-k intersection, ROC-AUC, Spearman."""

import numpy as np
import pytest

from xaicli.metrics import localisation as loc
from xaicli.metrics.similarity import rankdata, spearman


def square():
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 1
    return m


def test_map_equal_to_its_mask_scores_perfectly():
    m = square()
    a = m.astype(float)
    assert loc.pointing_game(a, m) == 1
    assert loc.mass_accuracy(a, m) == 1.0
    assert loc.rank_accuracy(a, m) == 1.0
    assert loc.topk_intersection(a, m, 2) == 1.0
    assert loc.roc_auc(a, m) == 1.0


def test_pointing_game_misses_when_the_peak_is_outside():
    m = square()
    a = m.astype(float)
    a[0, 0] = 5.0
    assert loc.pointing_game(a, m) == 0


def test_pointing_game_is_null_for_a_constant_map_or_empty_mask():
    assert loc.pointing_game(np.ones((4, 4)), square()) is None
    assert loc.pointing_game(np.eye(4), np.zeros((4, 4))) is None


def test_mass_accuracy_counts_positive_mass_only():
    a = np.array([[3.0, -5.0], [1.0, 0.0]])
    m = np.array([[1, 1], [0, 0]])
    assert loc.mass_accuracy(a, m) == pytest.approx(3 / 4)
    assert loc.mass_accuracy(-np.ones((2, 2)), m) is None      # no positive mass


def test_rank_accuracy_shares_tied_slots():
    a = np.array([[5.0, 2.0, 2.0, 2.0, 0.0, 0.0]])
    m = np.array([[1, 1, 0, 0, 0, 0]])
    # top-2: the 5 (inside) and one of three tied 2s, one of which is inside → 1 + 1/3
    assert loc.rank_accuracy(a, m) == pytest.approx((1 + 1 / 3) / 2)


def test_topk_count_is_a_fraction_below_one_else_a_count():
    assert loc.topk_count(0.25, 16) == 4
    assert loc.topk_count(3, 16) == 3
    assert loc.topk_count(100, 16) == 16
    assert loc.topk_count(0.001, 16) == 1


def test_topk_intersection_by_hand():
    a = np.arange(16, dtype=float).reshape(4, 4)     # top-4 = the last row
    m = np.zeros((4, 4))
    m[3, :2] = 1
    assert loc.topk_intersection(a, m, 0.25) == pytest.approx(2 / 4)
    assert loc.topk_intersection(a, np.zeros((4, 4)), 0.25) is None


def test_roc_auc_by_hand_and_with_ties():
    a = np.array([[3.0, 1.0, 2.0, 0.0]])
    m = np.array([[1, 1, 0, 0]])
    # pairs (pos, neg): 3>2, 3>0, 1<2, 1>0 → 3 of 4
    assert loc.roc_auc(a, m) == pytest.approx(0.75)
    assert loc.roc_auc(np.array([[1.0, 1.0]]), np.array([[1, 0]])) == 0.5
    assert loc.roc_auc(a, np.ones((1, 4))) is None


def test_nan_map_gives_null_not_a_crash():
    a = np.ones((4, 4))
    a[2, 2] = np.nan
    m = square()
    for f in (loc.pointing_game, loc.mass_accuracy, loc.rank_accuracy, loc.roc_auc):
        assert f(a, m) is None
    assert loc.topk_intersection(a, m, 0.1) is None


def test_rankdata_averages_ties():
    assert rankdata(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # d = 0, -1, 1, 0 → 1 - 6·2 / (4·15) = 0.8
    assert spearman(x, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)       # rank-based: monotone maps agree
    assert spearman(x, np.ones(4)) is None
    assert spearman(x, np.array([1.0, np.nan, 2.0, 3.0])) is None
