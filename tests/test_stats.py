"""Intervals and paired tests against hand-computed cases and SciPy's independent code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from fnaf_jax import stats


def test_wilson_by_hand_and_against_scipy():
    # 8 / 10: centre (0.8 + 1.9208/10) / 1.38415 = 0.71672, half 0.22654 (hand, z = 1.95996)
    lo, hi = stats.wilson(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94329, abs=1e-4)
    assert stats.wilson(0, 16) == (0.0, pytest.approx(0.19360, abs=1e-4))
    assert stats.wilson(16, 16)[1] == 1.0
    for k, n in [(0, 1), (3, 7), (7, 16), (15, 15), (123, 128), (1, 1000)]:
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def test_cluster_bootstrap_resamples_volumes_not_slices():
    rng = np.random.default_rng(0)
    # 16 volumes x 8 slices; slices of a volume share the volume's value (perfectly correlated)
    vol_means = rng.normal(size=16)
    values = np.repeat(vol_means, 8)
    groups = np.repeat(np.arange(16), 8)
    lo, hi = stats.cluster_bootstrap(values, groups, n_boot=4000)
    # independent: SciPy's percentile bootstrap of the 16 volume means (equal sizes: the same statistic)
    ref = sps.bootstrap((vol_means,), np.mean, n_resamples=4000, method="percentile",
                        random_state=1).confidence_interval
    width = ref.high - ref.low
    assert lo == pytest.approx(ref.low, abs=0.08 * width) and hi == pytest.approx(ref.high, abs=0.08 * width)
    # treating the 128 slices as independent would give an interval about sqrt(8) narrower
    naive = stats.cluster_bootstrap(values, np.arange(128), n_boot=4000)
    assert (naive[1] - naive[0]) < 0.5 * (hi - lo)
    assert lo < values.mean() < hi
    # NaNs are left out; an all-NaN input has no interval
    assert stats.cluster_bootstrap([np.nan, 1.0, 1.0], [0, 1, 1]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in stats.cluster_bootstrap([np.nan], [0]))


def test_mcnemar_exact_by_hand():
    assert stats.mcnemar_exact(0, 0) == 1.0
    # b = 0, c = 5: 2 * 0.5^5 = 0.0625
    assert stats.mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # b = 1, c = 2: 2 * (1 + 3) / 8 = 1.0 (capped)
    assert stats.mcnemar_exact(1, 2) == 1.0
    # b = 2, c = 10: 2 * (1 + 12 + 66) / 4096
    assert stats.mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact(10, 2) == stats.mcnemar_exact(2, 10)
    assert stats.mcnemar_exact(3, 17) == pytest.approx(sps.binomtest(3, 20).pvalue)


def test_wilcoxon_by_hand_and_against_scipy():
    # all 5 differences positive: W+ = 15, exact two-sided p = 2 / 32
    res = stats.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0])
    assert res == {"n": 5, "w_plus": 15.0, "p": pytest.approx(0.0625)}
    # ranks 1..4 with signs + - + +: W+ = 1 + 3 + 4 = 8; P(W+ >= 8) = 3/16 (8, 9, 10), p = 0.375
    res = stats.wilcoxon([0.1, -0.2, 0.3, 0.4, 0.0])  # the zero is dropped
    assert res["n"] == 4 and res["w_plus"] == 8.0 and res["p"] == pytest.approx(0.375)
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, size=30)
    assert stats.wilcoxon(d)["p"] == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-9)
    d = rng.normal(0.2, 1.0, size=120)
    assert stats.wilcoxon(d)["p"] == pytest.approx(sps.wilcoxon(d, method="approx").pvalue, rel=1e-9)
    tied = np.round(rng.normal(0.2, 1.0, size=40), 1)
    ref = sps.wilcoxon(tied, method="approx", zero_method="wilcox")
    assert stats.wilcoxon(tied)["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert stats.wilcoxon([0.0, 0.0])["p"] == 1.0


def test_verdict_is_decided_by_the_interval():
    assert stats.verdict(0.2, 0.5, 0.1) == "holds"
    assert stats.verdict(0.0, 0.05, 0.1) == "does not hold"
    assert stats.verdict(0.05, 0.2, 0.1) == "inconclusive"
    assert stats.verdict(0.0, 0.05, 0.1, "below") == "holds"
    assert stats.verdict(0.2, 0.5, 0.1, "below") == "does not hold"
    assert stats.verdict(math.nan, 1.0, 0.1) == "inconclusive"
    with pytest.raises(ValueError):
        stats.verdict(0, 1, 0.5, "sideways")


def test_newcombe_paired_by_hand():
    # a = 11 both, b = 5 only first, c = d = 0 (n = 16): phi = 0 (a zero margin);
    # p1 = 1, p2 = 11/16; Wilson(16/16) = (0.8064, 1), Wilson(11/16) = (0.4440, 0.8583)
    lo, hi = stats.newcombe_paired(11, 5, 0, 0)
    l1, _ = stats.wilson(16, 16)
    l2, u2 = stats.wilson(11, 16)
    assert lo == pytest.approx(5 / 16 - math.hypot(1 - l1, u2 - 11 / 16))
    assert hi == pytest.approx(5 / 16 + (11 / 16 - l2))
    assert lo == pytest.approx(0.054, abs=2e-3) and hi == pytest.approx(0.556, abs=2e-3)
    # coverage of the true difference on simulated paired data is near the nominal 95%
    rng = np.random.default_rng(0)
    probs = [0.35, 0.25, 0.1, 0.3]  # both, only first, only second, neither: p1 - p2 = 0.15
    covered = 0
    for _ in range(2000):
        lo_, hi_ = stats.newcombe_paired(*rng.multinomial(40, probs))
        covered += lo_ <= 0.15 <= hi_
    assert 0.925 <= covered / 2000 <= 0.985
    assert all(math.isnan(v) for v in stats.newcombe_paired(0, 0, 0, 0))


def test_cluster_t_and_the_wider_mean_interval():
    values = np.array([1.0, 1.0, 2.0, 2.0, 4.0, 4.0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    lo, hi = stats.cluster_t(values, groups)
    # volume means 1, 2, 4: mean 7/3, sd 1.5275, t(0.975, 2) = 4.3027
    half = 4.302653 * 1.527525 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-5)
    wide = stats.mean_interval(values, groups)
    boot = stats.cluster_bootstrap(values, groups)
    assert wide[0] <= min(lo, boot[0]) + 1e-12 and wide[1] >= max(hi, boot[1]) - 1e-12
    assert all(math.isnan(v) for v in stats.mean_interval([1.0, 2.0], [0, 0]))  # one volume
