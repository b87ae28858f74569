"""alignment/intervals.py against values computed by hand (z = 1.959964 for 95%)."""
from __future__ import annotations

import pytest

from alignment.intervals import (
    agreement,
    mean_interval,
    paired_difference_interval,
    rate_interval,
    wilson_interval,
)


def test_wilson_by_hand():
    # 5 of 10: centre (0.5 + z²/20) / (1 + z²/10) = 0.5; half z·√(0.025 + z²/400) / (1 + z²/10) = 0.263407
    five = wilson_interval(5, 10)
    assert (five.value, five.low, five.high) == pytest.approx((0.5, 0.236593, 0.763407), abs=1e-6)
    # 0 of 10: [0, z² / (10 + z²)] = [0, 3.841459 / 13.841459]
    zero = wilson_interval(0, 10)
    assert (zero.value, zero.low, zero.high) == pytest.approx((0.0, 0.0, 0.277533), abs=1e-6)
    # 10 of 10 mirrors 0 of 10
    full = wilson_interval(10, 10)
    assert (full.low, full.high) == pytest.approx((1 - 0.277533, 1.0), abs=1e-6)
    assert rate_interval([True] * 5 + [False] * 5) == five


def test_wilson_narrows_with_n_and_lower_confidence():
    width = {n: wilson_interval(n // 2, n).high - wilson_interval(n // 2, n).low for n in (10, 100)}
    assert width[100] < width[10] / 2
    assert wilson_interval(5, 10, 0.8).high < wilson_interval(5, 10).high


def test_paired_difference_by_hand():
    # before: 0 of 10; after: 5 of 10 (c = 5 discordant pairs, b = 0). A margin is empty, so φ = 0:
    # low  = 0.5 − √((0.5 − 0.236593)² + 0.277533²) = 0.5 − 0.382633 = 0.117367
    # high = 0.5 + √(0.263407² + 0²)                = 0.763407
    before, after = [False] * 10, [True] * 5 + [False] * 5
    diff = paired_difference_interval(before, after)
    assert (diff.value, diff.low, diff.high) == pytest.approx((0.5, 0.117367, 0.763407), abs=1e-6)
    reverse = paired_difference_interval(after, before)  # the same change the other way round
    assert (reverse.value, reverse.low, reverse.high) == pytest.approx((-0.5, -0.763407, -0.117367), abs=1e-6)


def test_pairing_narrows_the_interval():
    # identical outcomes at rate 0.5: φ = 1 and the two Wilson half-widths are equal, so the interval is [0, 0]
    same = [True, False] * 10
    diff = paired_difference_interval(same, same)
    assert (diff.value, diff.low, diff.high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    # one flipped prompt of 20: much narrower than the rates' own Wilson intervals
    flipped = [True, True] + same[2:]
    one = paired_difference_interval(same, flipped)
    assert one.value == pytest.approx(0.05)
    assert one.high - one.low < 0.5 * (wilson_interval(10, 20).high - wilson_interval(10, 20).low)
    assert one.low < 0 < one.high


def test_paired_difference_refuses_unequal_lists():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference_interval([True], [True, False])


def test_mean_interval_by_hand():
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653: half = 4.302653 · 0.1 / √3 = 0.248414
    estimate = mean_interval([0.1, 0.2, 0.3])
    assert (estimate.value, estimate.low, estimate.high) == pytest.approx((0.2, -0.048414, 0.448414), abs=1e-6)
    single = mean_interval([0.4])
    assert (single.low, single.high) == (0.4, 0.4)


def test_agreement_and_kappa_by_hand():
    # agree on 3 of 4; chance 0.5·0.25 + 0.5·0.75 = 0.5; kappa (0.75 − 0.5) / 0.5 = 0.5
    result = agreement([1, 1, 0, 0], [1, 0, 0, 0])
    assert result == {"n": 4, "agreement": 0.75, "kappa": 0.5}
    assert agreement([1, 1], [1, 1])["kappa"] is None


def test_estimate_text():
    assert wilson_interval(5, 10).text() == "0.500 [0.237, 0.763]"
    assert paired_difference_interval([False] * 10, [True] * 5 + [False] * 5).text(sign=True) == (
        "+0.500 [+0.117, +0.763]")
