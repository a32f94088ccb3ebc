"""Measurement helpers: step-time statistics, memory probes (NVML, host RSS), CPU facts.

No framework is imported here. Device synchronization is the backend's job (its run_steps
returns with the device idle); this module only turns window times into statistics, including
the two-sample ratio estimate and confidence interval that `bench gate` judges step time by
(`ratio_interval`: Hodges-Lehmann, distribution-free).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One timed call of run_steps: `steps` steps that took `seconds`, the device synced."""

    epoch: int
    first_step: int
    steps: int
    seconds: float
    phase: str  # "compile" (first dispatch), "warmup" or "steady"
    loss: float
    # CPU seconds the whole process used in the window (time.process_time, all its threads): what
    # the steps cost the host, whoever else held the cores meanwhile
    cpu_seconds: float | None = None
    # ms of the machine-speed probe (bench.calibration.Probe) around the window: the geometric
    # mean of the probes just before and just after it, outside the timed window
    probe_ms: float | None = None


def step_time_stats(windows: list[Window], batch_size: int) -> dict[str, float | int | None]:
    """Median, p10, p90, mean and spread of the per-step time of the steady windows.

    Each window gives one sample (its seconds / steps), so a percentile is over windows.
    samples/s is batch size over the median step time.
    """
    steady = [w for w in windows if w.phase == "steady"]
    result: dict[str, float | int | None] = {
        "steady_windows": len(steady),
        "steady_steps": sum(w.steps for w in steady),
    }
    if not steady:
        for key in ("median", "p10", "p90", "mean"):
            result[f"step_time_{key}_ms"] = None
        result.update(step_time_cv_pct=None, samples_per_s=None, cpu_time_median_ms=None)
        return result
    cpu = [w.cpu_seconds / w.steps for w in steady if w.cpu_seconds is not None]
    result["cpu_time_median_ms"] = float(np.median(cpu)) * 1e3 if cpu else None
    per_step = np.array([w.seconds / w.steps for w in steady])
    median = float(np.median(per_step))
    result.update(
        step_time_median_ms=median * 1e3,
        step_time_p10_ms=float(np.percentile(per_step, 10)) * 1e3,
        step_time_p90_ms=float(np.percentile(per_step, 90)) * 1e3,
        step_time_mean_ms=float(per_step.mean()) * 1e3,
        step_time_cv_pct=(
            100 * statistics.stdev(per_step) / per_step.mean() if len(per_step) > 1 else 0.0
        ),
        samples_per_s=batch_size / median,
    )
    return result


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
    z = statistics.NormalDist().inv_cdf(1 - tail)
    return max(0, math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12)))


def rank_sum_null(m: int, n: int) -> np.ndarray:
    """P(U = u), u = 0..m*n: the Mann-Whitney statistic (pairs x_i > y_j) of samples of sizes m
    and n from one continuous distribution. Recursion on which sample the largest value is in:
    p(u; m, n) = m/(m+n) p(u - n; m-1, n) + n/(m+n) p(u; m, n-1)."""
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


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NvmlProbe:
    """Device memory this process holds, from NVML; inert where there is no NVIDIA GPU/driver."""

    def __init__(self) -> None:
        self.pynvml = None
        self.peak_bytes: int | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.pynvml = pynvml
        except Exception:  # no library, no driver, no GPU: NVML simply has nothing to say
            self.pynvml = None

    @property
    def available(self) -> bool:
        return self.pynvml is not None

    def sample(self) -> int | None:
        """Sum of this process's memory over all visible GPUs; also updates the peak."""
        if self.pynvml is None:
            return None
        nvml, pid, used = self.pynvml, os.getpid(), 0
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid and process.usedGpuMemory:
                        used += process.usedGpuMemory
        except Exception:
            return None
        self.peak_bytes = max(self.peak_bytes or 0, used)
        return used


def nvml_devices() -> list[dict[str, str]]:
    """Name, driver and memory of every NVIDIA GPU NVML sees; [] without NVML or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    devices = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            devices.append(
                {
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                    "memory_mib": str(memory // 2**20),
                }
            )
    except Exception:
        pass
    return devices


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile (> 0.5) of Student's t with `df` degrees of freedom: bisection
    on its CDF, integrated with Simpson's rule (accurate to ~1e-6; no scipy needed)."""
    log_scale = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_scale - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(x: float, intervals: int = 2000) -> float:
        h = x / intervals
        total = density(0) + density(x)
        total += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, intervals))
        return 0.5 + total * h / 3

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        low, high = high, high * 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
        if high - low < 1e-7:
            break
    return (low + high) / 2


def geometric_mean_interval(ratios: Sequence[float], confidence: float = 0.95) -> RatioInterval:
    """The geometric mean of per-row ratios and its Student-t interval across the rows (the rows
    are the samples: their spread holds each row's own noise and the drift between rows)."""
    logs = np.log(np.asarray(ratios, dtype=float))
    estimate = float(np.exp(logs.mean()))
    if len(logs) < 3:
        return RatioInterval(estimate, None, None, confidence, len(logs), len(logs))
    half = student_t_quantile((1 + confidence) / 2, len(logs) - 1) * logs.std(ddof=1)
    half /= math.sqrt(len(logs))
    low, high = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    return RatioInterval(estimate, low, high, confidence, len(logs), len(logs))
