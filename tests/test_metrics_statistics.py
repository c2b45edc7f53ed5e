"""Value statistics, sparseness (Gini) and complexity (entropy) on hand-made maps."""

import math

import numpy as np
import pytest

from xaicli.metrics import statistics as st


def test_value_statistics_of_a_three_channel_map_by_hand():
    r = [[1.0, -2.0], [0.0, 3.0]]
    g = [[0.0, 0.0], [0.0, 0.0]]
    b = [[-1.0, -1.0], [-1.0, -1.0]]
    s = st.value_statistics(np.array([r, g, b]))
    # 12 values: 1, -2, 3 and four -1 (others 0) → sum -2; Σx² = 1 + 4 + 9 + 4 = 18
    assert s["sum"] == pytest.approx(-2.0)
    assert s["mean"] == pytest.approx(-2 / 12)
    assert s["std"] == pytest.approx(math.sqrt(18 / 12 - (1 / 6) ** 2))
    assert (s["min"], s["max"]) == (-2.0, 3.0)
    assert s["mean_abs"] == pytest.approx(10 / 12)
    assert s["pos_mass"] == pytest.approx(4.0)
    assert s["neg_mass"] == pytest.approx(6.0)          # a magnitude
    assert (s["sum_r"], s["sum_g"], s["sum_b"]) == (2.0, 0.0, -4.0)
    assert (s["mean_r"], s["mean_g"], s["mean_b"]) == (0.5, 0.0, -1.0)
    assert s["nonfinite"] == 0


def test_channel_columns_are_null_unless_three_channels_and_neg_mass_is_never_minus_zero():
    s = st.value_statistics(np.ones((1, 2, 2)))
    assert s["sum_r"] is None and s["mean_b"] is None
    assert s["sum"] == 4.0 and math.copysign(1, s["neg_mass"]) == 1.0
    cam = st.value_statistics(np.zeros((3, 3)))      # a CAM (H,W) whose first axis happens to be 3
    assert cam["sum_r"] is None


def test_non_finite_values_are_counted_and_left_out():
    s = st.value_statistics(np.array([[1.0, np.nan], [3.0, np.inf]]))
    assert s["nonfinite"] == 2
    assert s["mean"] == 2.0 and s["max"] == 3.0
    empty = st.value_statistics(np.array([[np.nan]]))
    assert empty["mean"] is None and empty["std"] is None and empty["nonfinite"] == 1


def test_spatial_sums_channels_and_keeps_sign():
    m = np.array([[[1.0, -1.0]], [[2.0, -3.0]]])     # (C=2, H=1, W=2)
    assert st.spatial(m).tolist() == [[3.0, -4.0]]
    assert st.spatial(np.array([[5.0]])).tolist() == [[5.0]]
    with pytest.raises(ValueError):
        st.spatial(np.zeros((1, 1, 1, 1)))


@pytest.mark.parametrize("values, expected", [
    ([0, 0, 0, 1], 0.75),          # one pixel holds everything: (n-1)/n
    ([0, 0, 0, -1], 0.75),         # of |a|
    ([2, 2, 2, 2], 0.0),           # evenly spread
    ([1, 2, 3, 4], 0.25),          # Σ(2i-n-1)x = -3-2+3+12 = 10; n·Σx = 40
])
def test_gini_by_hand(values, expected):
    assert st.gini(np.array(values, float)) == pytest.approx(expected)


def test_gini_and_entropy_of_an_all_zero_map_are_null():
    assert st.gini(np.zeros((4, 4))) is None
    assert st.entropy(np.zeros((4, 4))) is None


@pytest.mark.parametrize("values, expected", [
    ([1, 1, 1, 1], math.log(4)),
    ([0, 0, 0, 5], 0.0),
    ([1, -1, 0, 0], math.log(2)),
    ([1, 3], -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))),
])
def test_entropy_by_hand(values, expected):
    assert st.entropy(np.array(values, float)) == pytest.approx(expected)
