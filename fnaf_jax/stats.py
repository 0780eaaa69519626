"""Intervals and paired tests for the report (SPEC 8): pure NumPy/SciPy, no I/O.

- ``wilson``: 95% interval of a proportion k / n.
- ``cluster_bootstrap``: percentile interval of a mean when observations come in
  correlated groups (slices of one volume): whole groups are resampled.
- ``cluster_t``: t interval of the same mean from the per-group means (honest with few
  groups, where the bootstrap is too narrow); ``mean_interval`` takes the wider of both.
- ``newcombe_paired``: interval of a difference of paired proportions (Newcombe 1998,
  method 10, from Wilson intervals).
- ``mcnemar_exact``: two-sided exact McNemar test on paired binary outcomes.
- ``wilcoxon``: two-sided Wilcoxon signed-rank test on paired differences.
- ``verdict``: "holds" / "does not hold" / "inconclusive" from an interval and a threshold.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials; (nan, nan) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # clamp float noise so an all-or-nothing rate keeps its exact end point
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


def cluster_bootstrap(values, groups, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``mean(values)``, resampling whole ``groups`` with replacement.

    ``values`` (N,) floats (NaN entries are left out), ``groups`` (N,) labels, e.g. the
    volume of each slice. Each replicate draws as many groups as there are and takes the
    mean over all values of the drawn groups. (nan, nan) when nothing is left.
    """
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    if values.size == 0:
        return math.nan, math.nan
    labels, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(labels))
    counts = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def cluster_t(values, groups, level: float = 0.95) -> tuple[float, float]:
    """t interval (df = groups - 1) of the mean of the per-group means; (nan, nan) with
    fewer than two groups. NaN values are left out."""
    from scipy.stats import t as student_t

    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    labels, inverse = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        return math.nan, math.nan
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    half = student_t.ppf(0.5 + level / 2, len(labels) - 1) * means.std(ddof=1) / math.sqrt(len(labels))
    centre = float(values.mean())
    return centre - half, centre + half


def mean_interval(values, groups, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The wider of the volume bootstrap and the volume t interval: the bootstrap alone is
    too narrow with a handful of volumes, the t interval alone assumes normal means."""
    b_lo, b_hi = cluster_bootstrap(values, groups, n_boot=n_boot, seed=seed)
    t_lo, t_hi = cluster_t(values, groups)
    if math.isnan(b_lo):
        return b_lo, b_hi
    if math.isnan(t_lo):  # one volume: no honest interval at all
        return math.nan, math.nan
    return min(b_lo, t_lo), max(b_hi, t_hi)


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """Interval of p1 - p2 for paired binary outcomes: ``a`` both positive, ``b`` only the
    first, ``c`` only the second, ``d`` neither (Newcombe 1998, method 10)."""
    n = a + b + c + d
    if n == 0:
        return math.nan, math.nan
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    delta = p1 - p2
    lower = delta - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = delta + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, lower), min(1.0, upper)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` pairs where only the first is positive,
    ``c`` where only the second is; 1.0 when there are no discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def wilcoxon(diffs) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired differences ``x - y``.

    Zero differences are dropped (Wilcoxon's convention), tied magnitudes get average
    ranks. Exact null distribution when at most 50 non-zero differences remain and no
    magnitudes tie, else the normal approximation with the tie-corrected variance (no
    continuity correction). Returns {"n", "w_plus", "p"}; p = 1 when nothing is left.
    """
    d = np.asarray(diffs, np.float64)
    d = d[~np.isnan(d) & (d != 0)]
    n = int(d.size)
    if n == 0:
        return {"n": 0, "w_plus": 0.0, "p": 1.0}
    mag = np.abs(d)
    ranks = _average_ranks(mag)
    w_plus = float(ranks[d > 0].sum())
    ties = np.unique(mag, return_counts=True)[1]
    if n <= 50 and (ties == 1).all():
        counts = _signed_rank_counts(n)  # counts[w] = subsets of 1..n with rank sum w
        total = 2.0**n
        w = round(w_plus)
        lower = counts[: w + 1].sum() / total
        upper = counts[w:].sum() / total
        p = min(1.0, 2.0 * min(lower, upper))
    else:
        mean = n * (n + 1) / 4.0
        var = n * (n + 1) * (2 * n + 1) / 24.0 - (ties**3 - ties).sum() / 48.0
        z = (w_plus - mean) / math.sqrt(var) if var > 0 else 0.0
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"n": n, "w_plus": w_plus, "p": float(p)}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _signed_rank_counts(n: int) -> np.ndarray:
    """Number of subsets of {1..n} with each rank sum 0..n(n+1)/2 (exact null)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def verdict(lo: float, hi: float, threshold: float, direction: str = "above") -> str:
    """"holds" when the whole interval is on the claimed side of ``threshold`` ("above":
    lo > threshold; "below": hi < threshold), "does not hold" when it is wholly on the
    other side, else "inconclusive" (also for a missing interval)."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if direction not in ("above", "below"):
        raise ValueError(f"verdict direction {direction!r}: 'above' or 'below'")
    above, below = lo > threshold, hi < threshold
    if direction == "below":
        above, below = below, above
    return HOLDS if above else FAILS if below else INCONCLUSIVE
