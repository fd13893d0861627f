"""The small statistics in valind.stats: Wilson interval for rates, exact McNemar, Benjamini-Hochberg."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from valind.stats import benjamini_hochberg, mcnemar_exact, wilson, wilson_interval


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (57, 400), (1, 2)])
def test_wilson_interval_equals_wilson_for_counts(k: int, n: int) -> None:
    ref = wilson(k, n)
    assert wilson_interval(k / n, n) == pytest.approx((ref.low, ref.high), abs=1e-15)


def test_wilson_interval_hand_value_and_range() -> None:
    # p = 0.2, n = 50, z = 1.96: centre (0.2 + 0.0384) / 1.0768 = 0.22140, half 0.10897
    low, high = wilson_interval(0.2, 50)
    assert low == pytest.approx(0.112437500, abs=1e-9)
    assert high == pytest.approx(0.330371059, abs=1e-9)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wilson_interval(1.5, 10)


def test_mcnemar_exact_hand_computed() -> None:
    # b = 1, c = 9: 2 * P[Bin(10, 1/2) <= 1] = 2 * (1 + 10) / 1024
    assert mcnemar_exact(1, 9) == 22 / 1024
    # b = 8, c = 2 (order does not matter): 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact(8, 2) == 112 / 1024
    assert mcnemar_exact(0, 6) == 2 / 64
    assert mcnemar_exact(5, 5) == 1.0  # the doubled tail exceeds 1
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


@pytest.mark.parametrize(("b", "c"), [(1, 9), (3, 17), (40, 61), (0, 1), (12, 12)])
def test_mcnemar_exact_matches_scipy_binomtest(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(sps.binomtest(c, b + c, 0.5).pvalue, rel=1e-12)


def test_bh_hand_computed() -> None:
    # The textbook list (m = 10). p * m / rank: .01 .04 .13 .1025 .084 .1 .1057 .25625 .2356 .216,
    # then the running minimum from the largest rank down.
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.060, 0.074, 0.205, 0.212, 0.216]
    expected = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.074 * 10 / 7, 0.216, 0.216, 0.216]
    assert benjamini_hochberg(p) == pytest.approx(expected, abs=1e-12)


def test_bh_keeps_input_order_ties_and_nan() -> None:
    assert benjamini_hochberg([0.2, 0.01, 0.04, 0.03]) == pytest.approx([0.2, 0.04, 0.16 / 3, 0.16 / 3])
    assert benjamini_hochberg([0.02, 0.02, 0.02]) == pytest.approx([0.02, 0.02, 0.02])
    q = benjamini_hochberg([0.01, math.nan, 0.04])  # NaN is not a test: m = 2
    assert q[0] == pytest.approx(0.02) and math.isnan(q[1]) and q[2] == pytest.approx(0.04)
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.9, 0.95]) == pytest.approx([0.95, 0.95])  # capped by the largest p, never above 1
    with pytest.raises(ValueError, match="outside"):
        benjamini_hochberg([0.1, 1.2])


def test_bh_matches_scipy_false_discovery_control() -> None:
    fdc = getattr(sps, "false_discovery_control", None)
    if fdc is None:
        pytest.skip("scipy.stats.false_discovery_control needs scipy >= 1.11")
    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 50, 225):
        p = np.concatenate([rng.uniform(0, 1, size), rng.uniform(0, 0.01, size // 3)])
        p[::7] = p[0]  # some ties
        assert benjamini_hochberg(p.tolist()) == pytest.approx(fdc(p, method="bh").tolist(), rel=1e-12, abs=1e-15)
