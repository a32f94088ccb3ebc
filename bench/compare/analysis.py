"""The statistics of an interleaved comparison, on scipy.stats.

Arm 0 is the reference; every other arm X is judged by X / arm 0 of its window times.

  samples   adjacent windows: in an interleaved block (a permutation of the arms, then its
            reverse) each half holds one window of every arm, so each half gives one log-ratio
            log(t_X / t_0); in a duet block, the two windows ran at the same time.
  pair      (one round of fresh processes) the median of its samples: windows of one process pair
            are not independent (a process carries an offset of its own, measured at a few
            percent between identical processes), so the pair, not the window, is the unit.
  row       the mean of its pairs' log-ratios, a Student-t interval across the pairs, and a
            one-sided t-test (H1: X is slower). A row regresses when its p-value, Holm-adjusted
            across every row and arm compared, is below alpha AND its ratio exceeds 1 + floor,
            the smallest slowdown worth failing a build for, set above the A/A spread measured
            on this machine class (docs/MEASUREMENTS.md): a significant 0.5% is not a failure.
            Faster rows are reported the same way (the other one-sided test).
  suite     the geometric mean of the rows' ratios, with a bootstrap interval that resamples
            each row's pairs (scipy.stats.bootstrap, one sample per row: a stratified block
            bootstrap); it regresses when the whole interval lies above 1 + suite_floor.

Written here, because scipy.stats has no function for it: Holm's step-down adjustment (five
lines; statsmodels has one, and is not a dependency for five lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.compare.schedule import RowRecord

ALPHA = 0.05
# A row's smallest slowdown that fails: above 90% of the A/A rows' deviations measured on CI's
# machine class (45 rows: median 1.4%, 90th percentile 3.9%, 95th 4.5%) and above the 2.9% that
# one CI run called slower for unchanged code (docs/MEASUREMENTS.md, "The gate's floor").
FLOOR = 0.04
SUITE_FLOOR = 0.01
CONFIDENCE = 0.95
METRICS = ("wall", "cpu")


@dataclass
class Comparison:
    """Arm `arm` against arm 0 on one row."""

    row: str
    arm: int
    pair_logs: list[float]  # one per process pair
    samples: int  # adjacent-window log-ratios behind them
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    p_slower: float | None = None
    p_faster: float | None = None
    p_holm: float | None = None  # of the test in the ratio's direction
    verdict: str = "same"
    error: str | None = None
    per_step_ms: list[float] = field(default_factory=list)  # median ms/step of arm 0 and arm


@dataclass
class Suite:
    arm: int
    rows: int
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str


def window_seconds(window: dict, metric: str) -> float:
    return float(window["cpu_s"] if metric == "cpu" else window["wall_s"])


def pair_samples(windows: list[dict], arms: int, metric: str) -> dict[int, dict[int, list[float]]]:
    """{arm: {pair: [log-ratios of adjacent windows]}} for arms 1..arms-1."""
    halves: dict[tuple[int, int, int], dict[int, float]] = {}
    for window in windows:
        if window["phase"] != "steady":
            continue
        half = window["position"] // arms
        key = (window["pair"], window["block"], half)
        halves.setdefault(key, {})[window["arm"]] = window_seconds(window, metric)
    samples: dict[int, dict[int, list[float]]] = {arm: {} for arm in range(1, arms)}
    for (pair, _, _), times in sorted(halves.items()):
        if 0 not in times:
            continue
        for arm in range(1, arms):
            if arm in times:
                log_ratio = math.log(times[arm] / times[0])
                samples[arm].setdefault(pair, []).append(log_ratio)
    return samples


def compare_row(record: RowRecord, arms: int, metric: str) -> list[Comparison]:
    from scipy import stats

    comparisons = []
    per_step = {}
    for arm in range(arms):
        times = [
            window_seconds(w, metric) / w["steps"]
            for w in record.windows
            if w["arm"] == arm and w["phase"] == "steady"
        ]
        per_step[arm] = 1e3 * float(np.median(times)) if times else float("nan")
    for arm, by_pair in pair_samples(record.windows, arms, metric).items():
        logs = [float(np.median(values)) for _, values in sorted(by_pair.items())]
        comparison = Comparison(
            record.row, arm, logs, sum(len(v) for v in by_pair.values()), error=record.error
        )
        comparison.per_step_ms = [per_step[0], per_step[arm]]
        if logs:
            mean = float(np.mean(logs))
            comparison.ratio = math.exp(mean)
            if len(logs) >= 2 and np.std(logs) > 0:
                sem = float(stats.sem(logs))
                low, high = stats.t.interval(CONFIDENCE, len(logs) - 1, loc=mean, scale=sem)
                comparison.low, comparison.high = math.exp(low), math.exp(high)
                comparison.p_slower = float(
                    stats.ttest_1samp(logs, 0.0, alternative="greater").pvalue
                )
                comparison.p_faster = float(stats.ttest_1samp(logs, 0.0, alternative="less").pvalue)
        comparisons.append(comparison)
    if record.error and not comparisons:
        comparisons = [
            Comparison(record.row, arm, [], 0, error=record.error) for arm in range(1, arms)
        ]
    return comparisons


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (Holm 1979)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return [float(p) for p in adjusted]


def judge(comparisons: list[Comparison], alpha: float, floor: float) -> None:
    """Each comparison's verdict; Holm's adjustment runs over every row and arm, one family
    for the slower test (the gate's) and one for the faster."""
    tested = [c for c in comparisons if c.p_slower is not None and c.ratio is not None]
    slower = holm([c.p_slower for c in tested]) if tested else []
    faster = holm([c.p_faster for c in tested]) if tested else []
    for comparison, p_slower, p_faster in zip(tested, slower, faster, strict=True):
        comparison.p_holm = p_slower if comparison.ratio >= 1 else p_faster
        if p_slower < alpha and comparison.ratio > 1 + floor:
            comparison.verdict = "slower"
        elif p_faster < alpha and comparison.ratio < 1 / (1 + floor):
            comparison.verdict = "faster"
    for comparison in comparisons:
        if comparison.error:
            comparison.verdict = "failed"
        elif comparison.ratio is None:
            comparison.verdict = "no data"
        elif comparison.p_slower is None:
            comparison.verdict = "too few pairs"


def suite(comparisons: list[Comparison], arm: int, suite_floor: float, seed: int = 0) -> Suite:
    """The geometric mean of arm's row ratios with a bootstrap over each row's pairs."""
    from scipy import stats

    rows = [c for c in comparisons if c.arm == arm and len(c.pair_logs) >= 2 and not c.error]
    if not rows:
        return Suite(arm, 0, None, None, None, "no data")
    samples = tuple(np.asarray(c.pair_logs) for c in rows)
    estimate = math.exp(float(np.mean([s.mean() for s in samples])))
    if len(rows) < 2:
        return Suite(arm, len(rows), estimate, None, None, "one row")

    def statistic(*resampled, axis=-1):
        return np.mean([np.mean(s, axis=axis) for s in resampled], axis=0)

    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=4000,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    low, high = math.exp(result.confidence_interval.low), math.exp(result.confidence_interval.high)
    verdict = (
        "slower" if low > 1 + suite_floor else "faster" if high < 1 / (1 + suite_floor) else "same"
    )
    return Suite(arm, len(rows), estimate, low, high, verdict)
