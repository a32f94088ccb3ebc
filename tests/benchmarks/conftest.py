"""pytest-benchmark step-time benchmarks: every task at a small size x each installed backend.

    make bench-pytest          every installed backend, each in its own process (Keras fixes its
                               backend per process); JSON in .benchmarks/pytest/<backend>.json
    BENCH_PYTEST_BACKEND=torch python -m pytest tests/benchmarks -m benchmarks \
        --benchmark-save-data --benchmark-json=torch.json          one backend by hand
    pytest-benchmark compare .benchmarks/pytest/*.json             pytest-benchmark's own table
    bench gate --baseline OLD/*.json --current .benchmarks/pytest/*.json   the regression gate

Nothing here runs unless BENCH_PYTEST_BACKEND names the backend: only then does this conftest set
the run environment (threads, devices, KERAS_BACKEND: bench.cell.worker_environment), before
any framework is imported, and record the machine calibration that `bench gate` normalizes by.
The default `make test` run deselects these tests (marker `benchmarks`) and changes nothing.
"""

from __future__ import annotations

import os

from backends import BACKENDS
from bench.calibration import calibrate
from bench.config import RunConfig

BACKEND_VARIABLE = "BENCH_PYTEST_BACKEND"
DEVICE_VARIABLE = "BENCH_PYTEST_DEVICE"  # cpu (default) or cuda

BACKEND = os.environ.get(BACKEND_VARIABLE) or None
DEVICE = os.environ.get(DEVICE_VARIABLE) or "cpu"
if BACKEND is not None:
    if BACKEND not in BACKENDS:
        raise ValueError(f"{BACKEND_VARIABLE}={BACKEND!r}; valid backends: {', '.join(BACKENDS)}")
    from bench.cell import worker_environment

    # the first task stands in for all: the environment depends on backend, device and threads
    os.environ.update(
        worker_environment(RunConfig(task="mnist_cnn", backend=BACKEND, device=DEVICE))
    )
    CALIBRATION = calibrate()  # numpy only, before the framework is imported
else:
    CALIBRATION = None


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    """bench gate reads the calibration from machine_info to compare across machines."""
    if CALIBRATION is not None:
        machine_info["bench_calibration"] = CALIBRATION
