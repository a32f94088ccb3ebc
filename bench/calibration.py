"""Machine-speed calibration: two fixed numpy workloads that say how fast this machine is now.

    python -m bench.calibration        prints {"calib_matmul_ms": ..., "calib_dispatch_ms": ...}

Every run records it (the worker measures it before it imports the framework; the pytest
benchmarks once per session), so `bench gate` can compare step times measured on different
machines, or on one machine in a different state, as normalized times. Two workloads, because a
training step of a small model is partly arithmetic and partly Python/framework dispatch:

    matmul    a fixed 256x256 float32 matrix product through numpy's BLAS, with the run's
              thread count (OMP_NUM_THREADS is set before numpy loads): arithmetic throughput
    dispatch  a fixed loop of 10,000 tiny numpy additions: per-call interpreter and dispatch
              overhead, which dominates the step time of small models on fast devices

Each is timed as the fastest of several samples after one warm-up sample: the minimum measures
what the machine can do, and is far more stable than a mean or median when other processes
share the cores (a contended 2-thread BLAS call can take 50x longer; the fastest sample rarely
does). Together they take about 0.1-0.3 s on a 2-core CI machine. Only numpy is imported: a calibration must never load,
or depend on, the framework being measured.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

MATMUL_SIZE = 256  # 2 * 256**3 = 33.6 MFLOP per product
MATMUL_REPEATS = 3  # products per sample
DISPATCH_CALLS = 10_000  # tiny numpy additions per sample
SAMPLES = 7  # timed samples per workload (the fastest counts), after one untimed warm-up


def _fastest_ms(workload, samples: int) -> float:
    workload()  # warm-up: page faults, BLAS thread start-up, caches
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        workload()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def calibrate(samples: int = SAMPLES) -> dict[str, float]:
    """{"calib_matmul_ms": ms per matmul, "calib_dispatch_ms": ms per 10,000 calls}."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    right = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)

    def matmul() -> None:
        for _ in range(MATMUL_REPEATS):
            np.matmul(left, right)

    def dispatch() -> None:
        value, one = np.zeros(4, np.float32), np.ones(4, np.float32)
        for _ in range(DISPATCH_CALLS):
            value = value + one

    return {
        "calib_matmul_ms": _fastest_ms(matmul, samples) / MATMUL_REPEATS,
        "calib_dispatch_ms": _fastest_ms(dispatch, samples),
    }


PROBE_CALLS = 1000  # tiny numpy additions per probe sample
PROBE_MATMULS = 8  # 64x64 float32 products per probe sample (single-threaded in any BLAS)
PROBE_SAMPLES = 2  # the fastest counts


class Probe:
    """The speed of this machine *now*: a ~0.5 ms fixed workload (numpy dispatch and a small
    single-threaded matmul, the two things a step is made of), timed as the fastest of
    PROBE_SAMPLES. The worker runs it between timed windows, never inside one, so that each
    window has a reference measured seconds around it.

    Why: a shared VM's speed changes in phases of seconds to minutes (measured on the CI machine
    class: the same numpy loop runs 1.8x slower for tens of seconds, then fast again, with no
    other process on the VM), which moves one run's step times 10-50% against another's. A
    calibration at the start of a run cannot follow that; the window time divided by the probe
    time around it does, because both slow down together."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.matrix = rng.standard_normal((64, 64), dtype=np.float32)
        self.one = np.ones(4, np.float32)
        self()  # warm-up

    def _sample(self) -> float:
        started = time.perf_counter()
        value = np.zeros(4, np.float32)
        for _ in range(PROBE_CALLS):
            value = value + self.one
        for _ in range(PROBE_MATMULS):
            np.matmul(self.matrix, self.matrix)
        return time.perf_counter() - started

    def __call__(self) -> float:
        """ms of the fastest sample."""
        return min(self._sample() for _ in range(PROBE_SAMPLES)) * 1e3


def speed_factor(current: dict[str, float], baseline: dict[str, float]) -> float:
    """How much longer the same work takes on `current` than on `baseline` (>1: slower now).

    The geometric mean of the two workloads' time ratios: a step is part arithmetic, part
    dispatch, and without knowing the mix of a given model the geometric mean is the neutral
    choice (a factor 2 on one and 1 on the other counts as sqrt(2), whichever one it is).
    """
    ratios = [current[key] / baseline[key] for key in ("calib_matmul_ms", "calib_dispatch_ms")]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


if __name__ == "__main__":
    print(json.dumps(calibrate()))
