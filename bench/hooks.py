"""Test-only hooks: runs that fail or regress on purpose, for the fault drill and the gate's proof.

None is active unless its variable is set, and then only through `apply_hooks`, which wraps the
backend the worker times (`HookedBackend`): the worker's timed loop has no branch for them, and a
real run gets its backend unwrapped. A row made under any hook names it in its `test_hooks`
column (and `bench baseline` refuses such rows).

  BENCH_TEST_FAULT=kill|hang|raise|oom|nan   every run fails that way (after setup; nan: the
                                             loss of every window after the first)
  BENCH_TEST_FAULTS='{"<cell_id>": "kill"}'  the named runs do
  BENCH_TEST_SLOWDOWN=0.15                   every timed window takes 15% longer, busy (work on
                                             the CPU, as a slower train step does, so wall and
                                             CPU time both grow)
  BENCH_TEST_SLOWDOWN_BACKEND=torch          with it: the slowdown for that backend's runs only
  BENCH_TEST_CORRUPT_LABELS=0.4              that share of the training labels moves to the next
                                             class (a systematic error that costs accuracy)
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import numpy as np

FAULT_VARIABLE = "BENCH_TEST_FAULT"
FAULTS_VARIABLE = "BENCH_TEST_FAULTS"
SLOWDOWN_VARIABLE = "BENCH_TEST_SLOWDOWN"
SLOWDOWN_BACKEND_VARIABLE = "BENCH_TEST_SLOWDOWN_BACKEND"
CORRUPT_LABELS_VARIABLE = "BENCH_TEST_CORRUPT_LABELS"
FAULTS = ("kill", "hang", "raise", "oom", "nan")


def injected_fault(cell_id: str) -> str | None:
    faults = json.loads(os.environ.get(FAULTS_VARIABLE) or "{}")
    return faults.get(cell_id) or os.environ.get(FAULT_VARIABLE) or None


def test_hooks_in_use(cell_id: str) -> str:
    """The test-only hooks set for this run, as the `test_hooks` column shows them."""
    hooks = [f"{FAULT_VARIABLE}={injected_fault(cell_id)}"] if injected_fault(cell_id) else []
    for name in (SLOWDOWN_VARIABLE, SLOWDOWN_BACKEND_VARIABLE, CORRUPT_LABELS_VARIABLE):
        if os.environ.get(name):
            hooks.append(f"{name}={os.environ[name]}")
    return " ".join(hooks)


def test_regressions() -> tuple[float, float]:
    """(slowdown, corrupted label fraction) from the test-only variables; (0, 0) when unset."""
    values = []
    for name, upper in ((SLOWDOWN_VARIABLE, 10.0), (CORRUPT_LABELS_VARIABLE, 1.0)):
        text = os.environ.get(name) or "0"
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= upper:
            raise ValueError(f"{name} must be a number from 0 to {upper:g}, got {text!r}")
        values.append(value)
    return values[0], values[1]


def busy_wait(wall_seconds: float, cpu_seconds: float) -> None:
    """Spin until at least `wall_seconds` of wall time and `cpu_seconds` of process CPU time
    have passed, so that the window grows by the share asked for in both the wall and the CPU
    time per step (a multi-threaded step uses more CPU time than wall time, and a spin on one
    thread adds as much of each)."""
    wall_end = time.perf_counter() + wall_seconds
    cpu_end = time.process_time() + cpu_seconds
    while time.perf_counter() < wall_end or time.process_time() < cpu_end:
        pass


def corrupt_labels(data, fraction: float, num_classes: int, seed: int):
    """Move a seeded `fraction` of the training labels to the next class."""
    chosen = np.random.default_rng([seed, 7919]).random(len(data.y_train)) < fraction
    labels = data.y_train.copy()
    labels[chosen] = (labels[chosen] + 1) % num_classes
    return dataclasses.replace(data, y_train=labels)


def inject_fault(fault: str | None) -> None:
    """Fail the way real runs fail. Does nothing when unset, or for nan (it acts on losses)."""
    if not fault or fault == "nan":
        return
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        time.sleep(10**6)
    elif fault == "raise":
        raise RuntimeError("injected failure")
    elif fault == "oom":
        raise RuntimeError("CUDA out of memory (injected)")
    else:
        raise ValueError(f"unknown injected fault {fault!r}: {', '.join(FAULTS)}")


class HookedBackend:
    """A backend with the test hooks applied around its calls; everything else passes through."""

    def __init__(self, backend, cell_id: str, seed: int, backend_name: str | None = None) -> None:
        self._backend = backend
        self._fault = injected_fault(cell_id)
        self._slowdown, self._corrupt = test_regressions()
        only = os.environ.get(SLOWDOWN_BACKEND_VARIABLE)
        if only and only != backend_name:  # the slowdown is another backend's
            self._slowdown = 0.0
        self._seed = seed
        self._windows = 0

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def setup(self, weights, data) -> None:
        if self._corrupt:
            task = self._backend.task
            data = corrupt_labels(data, self._corrupt, task.num_classes, self._seed)
        self._backend.setup(weights, data)
        inject_fault(self._fault)

    def run_steps(self, first_step: int, num_steps: int) -> float:
        clock, cpu_clock = time.perf_counter(), time.process_time()
        loss = self._backend.run_steps(first_step, num_steps)
        if self._slowdown:  # inside the window the worker times
            wall = self._slowdown * (time.perf_counter() - clock)
            busy_wait(wall, self._slowdown * (time.process_time() - cpu_clock))
        self._windows += 1
        if self._fault == "nan" and self._windows > 1:
            return float("nan")  # the loss a diverging run reports
        return loss


def apply_hooks(backend, cell_id: str, seed: int, backend_name: str | None = None):
    """The backend to time (named `backend_name`, e.g. "torch"): wrapped when a test hook is set
    for this run, else itself."""
    if test_hooks_in_use(cell_id):
        return HookedBackend(backend, cell_id, seed, backend_name)
    return backend
