"""The statistics `bench gate` judges by, on scipy.stats where scipy has the piece.

    ratio_interval            one row: current/baseline of its per-window step times, the
                              Hodges-Lehmann estimate with the interval that inverts the
                              Mann-Whitney test (distribution-free)
    geometric_mean_interval   the suite: the geometric mean of the rows' ratios, with a
                              Student-t interval across the rows
    mean_interval             rows that differ only in seed: the mean accuracy with its
                              Student-t interval across the seeds, min and max
    median_time_to_target     the same rows' time to target: the median, a seed that never
                              reached the target counting as infinitely slow

From scipy: the Student-t quantile (scipy.stats.t), the geometric mean and the standard error
(scipy.stats.gmean, scipy.stats.sem), the normal quantile of the large-sample rank (scipy.stats.
norm). Written here, because scipy (1.17) has no public function for them: the Hodges-Lehmann
shift estimate and its interval, and the exact null distribution of the Mann-Whitney U statistic
(`rank_sum_null`). scipy.stats.mannwhitneyu computes that distribution, but only to turn one
pair of samples into a p-value; the distribution itself (scipy.stats._mannwhitneyu._MWU) is
private, and the interval needs its quantiles, not a p-value.

scipy.stats is imported where it is used, not with this module: importing it takes ~0.7 s, and
every `bench` command imports the gate (for its parser), which imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXACT_PAIRS_LIMIT = 2500  # m * n up to which the rank-sum null distribution is exact
MAX_SAMPLES_PER_SIDE = 2000  # larger samples are thinned to evenly spaced order statistics


@dataclass(frozen=True)
class RatioInterval:
    """current / baseline of a time: the Hodges-Lehmann estimate and its confidence interval."""

    ratio: float
    low: float | None  # None: too few samples for an interval at this confidence
    high: float | None
    confidence: float
    baseline_samples: int
    current_samples: int


def ratio_interval(
    baseline: Sequence[float], current: Sequence[float], confidence: float = 0.95
) -> RatioInterval:
    """How many times longer `current` times are than `baseline` ones, with a two-sided
    `confidence` interval, from the two samples of (per-window) times.

    In log space a ratio is a shift. The estimate is the median of all m*n pairwise differences
    log(current_i) - log(baseline_j) (the Hodges-Lehmann shift estimator); the interval is the
    distribution-free one that inverts the Mann-Whitney test: [D_(k), D_(mn+1-k)] of those sorted
    differences, with k the largest integer such that P(U <= k-1) <= (1 - confidence)/2 under
    the null (Hollander & Wolfe, Nonparametric Statistical Methods, 3rd ed., sec. 4.3). Exact
    null distribution for m*n <= EXACT_PAIRS_LIMIT, normal approximation above. It assumes only
    that the two distributions differ by a factor, not normality: window times are skewed (a
    window that lost the CPU is slow; none is much faster). Deterministic: no resampling.
    Smallest samples with an interval at 95%: 4 and 4 (or 3 and 6).

    Written here: scipy has neither the Hodges-Lehmann estimator nor this interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    base, cur = _positive_log_sample(baseline, "baseline"), _positive_log_sample(current, "current")
    differences = np.sort(np.subtract.outer(cur, base).ravel())
    ratio = math.exp(float(np.median(differences)))
    k = _interval_rank(len(base), len(cur), confidence)
    low = high = None
    if k >= 1:
        low = math.exp(float(differences[k - 1]))
        high = math.exp(float(differences[len(differences) - k]))
    return RatioInterval(ratio, low, high, confidence, len(baseline), len(current))


def _positive_log_sample(values: Sequence[float], name: str) -> np.ndarray:
    sample = np.sort(np.asarray(values, dtype=float))
    if sample.size == 0:
        raise ValueError(f"the {name} sample is empty")
    if not np.all(np.isfinite(sample)) or sample[0] <= 0:
        raise ValueError(f"the {name} times must be positive and finite")
    if sample.size > MAX_SAMPLES_PER_SIDE:  # fewer points: a wider, never a narrower, interval
        sample = sample[np.linspace(0, sample.size - 1, MAX_SAMPLES_PER_SIDE).round().astype(int)]
    return np.log(sample)


def _interval_rank(m: int, n: int, confidence: float) -> int:
    """k of the interval [D_(k), D_(mn+1-k)]; 0 when the samples are too small for one."""
    tail = (1 - confidence) / 2
    if m * n <= EXACT_PAIRS_LIMIT:
        cumulative = np.cumsum(rank_sum_null(m, n))
        return int(np.searchsorted(cumulative, tail * (1 + 1e-9), side="right"))
    from scipy import stats

    z = float(stats.norm.ppf(1 - tail))
    return max(0, math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12)))


def rank_sum_null(m: int, n: int) -> np.ndarray:
    """P(U = u), u = 0..m*n: the Mann-Whitney statistic (pairs x_i > y_j) of samples of sizes m
    and n from one continuous distribution. Recursion on which sample the largest value is in:
    p(u; m, n) = m/(m+n) p(u - n; m-1, n) + n/(m+n) p(u; m, n-1).

    Written here: scipy computes this distribution only inside mannwhitneyu's p-value (the
    private scipy.stats._mannwhitneyu._MWU); no public function returns it or its quantiles."""
    previous = [np.ones(1) for _ in range(n + 1)]  # row i-1 = 0: p(.; 0, j) = [1]
    for i in range(1, m + 1):
        row = [np.ones(1)]  # p(.; i, 0) = [1]
        for j in range(1, n + 1):
            p = np.zeros(i * j + 1)
            p[j:] += i / (i + j) * previous[j]  # the largest is x: it beats all j values of y
            p[: i * (j - 1) + 1] += j / (i + j) * row[j - 1]
            row.append(p)
        previous = row
    return previous[n]


def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom (scipy.stats.t)."""
    from scipy import stats

    return float(stats.t.ppf(probability, df))


def geometric_mean_interval(ratios: Sequence[float], confidence: float = 0.95) -> RatioInterval:
    """The geometric mean of per-row ratios and its Student-t interval across the rows (the rows
    are the samples: their spread holds each row's own noise and the drift between rows)."""
    from scipy import stats

    logs = np.log(np.asarray(ratios, dtype=float))
    estimate = float(stats.gmean(np.asarray(ratios, dtype=float)))
    if len(logs) < 3:
        return RatioInterval(estimate, None, None, confidence, len(logs), len(logs))
    half = student_t_quantile((1 + confidence) / 2, len(logs) - 1) * float(stats.sem(logs))
    low, high = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    return RatioInterval(estimate, low, high, confidence, len(logs), len(logs))


@dataclass(frozen=True)
class MeanInterval:
    """The mean of a sample (one value per seed) with its Student-t interval, and its range."""

    n: int
    mean: float
    low: float | None  # None: one value, no interval
    high: float | None
    std: float | None  # the sample standard deviation (n - 1 in the denominator)
    minimum: float
    maximum: float
    confidence: float


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval | None:
    """mean +- t((1 + confidence) / 2, n - 1) * s / sqrt(n), s the sample standard deviation:
    the interval for the mean over seeds that MLPerf-style repeated runs report (each seed is
    one independent draw of the initial weights and the batch order). None for no values; no
    interval for one value (its spread is unknown)."""
    sample = np.asarray(values, dtype=float)
    if sample.size == 0:
        return None
    mean = float(sample.mean())
    minimum, maximum = float(sample.min()), float(sample.max())
    if sample.size < 2:
        return MeanInterval(1, mean, None, None, None, minimum, maximum, confidence)
    from scipy import stats

    half = student_t_quantile((1 + confidence) / 2, sample.size - 1) * float(stats.sem(sample))
    std = float(sample.std(ddof=1))
    return MeanInterval(
        int(sample.size), mean, mean - half, mean + half, std, minimum, maximum, confidence
    )


def median_time_to_target(times: Sequence[float | None]) -> float | None:
    """The median over seeds of the time to target, a seed that never reached it (None)
    counting as infinitely slow, as AlgoPerf scores a workload over its studies: finite only
    when more than half of the seeds reached the target (None otherwise, and for no seeds)."""
    if not times:
        return None
    sample = np.array([math.inf if t is None else t for t in times], dtype=float)
    median = float(np.median(sample))
    return median if math.isfinite(median) else None
