"""Focus ratio and fraction, area fraction, Dice and IoU on hand-made masks."""

import numpy as np
import pytest

from xaicli.metrics import focus


def square(n=4, lo=1, hi=3):
    m = np.zeros((n, n), np.uint8)
    m[lo:hi, lo:hi] = 1
    return m


def test_map_one_inside_zero_outside_has_infinite_ratio_written_null_and_fraction_one():
    m = square()
    a = m.astype(float)
    assert focus.focus_ratio(a, m) is None
    assert focus.focus_fraction(a, m) == 1.0
    assert focus.area_fraction(m) == 4 / 16


def test_focus_ratio_uses_absolute_values():
    m = square()
    a = np.where(m == 1, 2.0, -1.0)          # |a|: 2 inside, 1 outside
    assert focus.focus_ratio(a, m) == pytest.approx(2.0)
    # Σ|a| inside = 8, outside = 12
    assert focus.focus_fraction(a, m) == pytest.approx(8 / 20)


@pytest.mark.parametrize("mask", [np.zeros((4, 4)), np.ones((4, 4))])
def test_focus_ratio_of_empty_or_full_mask_is_null(mask):
    assert focus.focus_ratio(np.random.default_rng(0).random((4, 4)), mask) is None


def test_focus_of_all_zero_or_nan_map_is_null():
    m = square()
    assert focus.focus_ratio(np.zeros((4, 4)), m) is None
    assert focus.focus_fraction(np.zeros((4, 4)), m) is None
    a = np.ones((4, 4))
    a[0, 0] = np.nan
    assert focus.focus_ratio(a, m) is None and focus.focus_fraction(a, m) is None


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        focus.focus_ratio(np.ones((4, 4)), np.ones((3, 3)))


def test_dice_and_iou_by_hand():
    p = np.zeros((4, 4))
    p[0, :4] = 1                       # 4 pixels
    g = np.zeros((4, 4))
    g[0, 2:4] = 1
    g[1, :4] = 1                       # 6 pixels, 2 shared with p
    assert focus.dice(p, g) == pytest.approx(2 * 2 / (4 + 6))
    assert focus.iou(p, g) == pytest.approx(2 / 8)
    assert focus.dice(np.zeros((2, 2)), np.zeros((2, 2))) is None
    assert focus.iou(np.zeros((2, 2)), np.zeros((2, 2))) is None
    assert focus.dice(np.ones((2, 2)), np.zeros((2, 2))) == 0.0
