"""The test-only hooks (bench/hooks.py): off unless set, and applied around the backend, so the
worker's timed loop has no branch for them and a real run times its backend unwrapped."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench import hooks, worker
from bench.data import synthetic


def test_hooks_are_off_unless_set(monkeypatch):
    for name in (hooks.SLOWDOWN_VARIABLE, hooks.CORRUPT_LABELS_VARIABLE, hooks.FAULT_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(hooks.FAULTS_VARIABLE, raising=False)
    assert hooks.test_regressions() == (0.0, 0.0)
    assert hooks.test_hooks_in_use("any") == ""
    monkeypatch.setenv(hooks.SLOWDOWN_VARIABLE, "0.15")
    monkeypatch.setenv(hooks.CORRUPT_LABELS_VARIABLE, "0.4")
    assert hooks.test_regressions() == (0.15, 0.4)
    assert hooks.test_hooks_in_use("any") == (
        "BENCH_TEST_SLOWDOWN=0.15 BENCH_TEST_CORRUPT_LABELS=0.4"
    )
    monkeypatch.setenv(hooks.CORRUPT_LABELS_VARIABLE, "lots")
    with pytest.raises(ValueError, match="BENCH_TEST_CORRUPT_LABELS must be a number"):
        hooks.test_regressions()


def test_corrupt_labels_moves_a_seeded_share_to_the_next_class():
    data = worker.limit(synthetic("mnist"), 5000, 10)
    corrupted = hooks.corrupt_labels(data, 0.4, 10, seed=0)
    changed = corrupted.y_train != data.y_train
    assert 0.37 < changed.mean() < 0.43
    assert np.all(corrupted.y_train[changed] == (data.y_train[changed] + 1) % 10)
    again = hooks.corrupt_labels(data, 0.4, 10, seed=0)
    assert np.array_equal(again.y_train, corrupted.y_train)
    assert np.array_equal(corrupted.x_train, data.x_train)


class Sleeper:
    """A backend whose every window takes `seconds` of busy CPU time and returns loss 1."""

    mode = "eager"
    window_steps = 5

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run_steps(self, first_step: int, num_steps: int) -> float:
        hooks.busy_wait(self.seconds, self.seconds)
        return 1.0


def clear_hooks(monkeypatch) -> None:
    names = (hooks.SLOWDOWN_VARIABLE, hooks.SLOWDOWN_BACKEND_VARIABLE)
    for name in (*names, hooks.CORRUPT_LABELS_VARIABLE, hooks.FAULT_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(hooks.FAULTS_VARIABLE, raising=False)


def test_a_real_run_times_its_backend_unwrapped(monkeypatch):
    clear_hooks(monkeypatch)
    backend = Sleeper(0.0)
    assert hooks.apply_hooks(backend, "cell", seed=0) is backend


def test_the_slowdown_hook_grows_the_timed_window(monkeypatch):
    clear_hooks(monkeypatch)
    monkeypatch.setenv(hooks.SLOWDOWN_VARIABLE, "0.5")
    hooked = hooks.apply_hooks(Sleeper(0.04), "cell", seed=0)
    assert isinstance(hooked, hooks.HookedBackend) and hooked.window_steps == 5  # passed through
    _, seconds, cpu_seconds = worker.timed_window(hooked, 0, 5)
    assert seconds >= 0.04 * 1.5 and cpu_seconds >= 0.04 * 1.5 * 0.9


def test_a_slowdown_for_one_backend_leaves_the_others_alone(monkeypatch):
    clear_hooks(monkeypatch)
    monkeypatch.setenv(hooks.SLOWDOWN_VARIABLE, "0.5")
    monkeypatch.setenv(hooks.SLOWDOWN_BACKEND_VARIABLE, "jax")
    assert "BENCH_TEST_SLOWDOWN_BACKEND=jax" in hooks.test_hooks_in_use("cell")
    cpu_seconds = {}  # CPU time: a busy wait's does not grow when other work shares the core
    for name in ("jax", "torch"):
        hooked = hooks.apply_hooks(Sleeper(0.04), "cell", seed=0, backend_name=name)
        cpu_seconds[name] = worker.timed_window(hooked, 0, 5)[2]
    assert cpu_seconds["jax"] >= 0.04 * 1.5 * 0.9 and cpu_seconds["torch"] < 0.04 * 1.25


def test_the_nan_fault_poisons_every_window_after_the_first(monkeypatch):
    clear_hooks(monkeypatch)
    monkeypatch.setenv(hooks.FAULTS_VARIABLE, '{"bad": "nan"}')
    assert hooks.apply_hooks(Sleeper(0.0), "good", seed=0).run_steps(0, 1) == 1.0
    hooked = hooks.apply_hooks(Sleeper(0.0), "bad", seed=0)
    losses = [hooked.run_steps(step, 1) for step in range(3)]
    assert losses[0] == 1.0 and all(np.isnan(loss) for loss in losses[1:])


def test_timed_window_reads_the_clocks_around_run_steps_alone():
    started = time.perf_counter()
    loss, seconds, _ = worker.timed_window(Sleeper(0.03), 0, 5)
    assert loss == 1.0 and 0.03 <= seconds <= time.perf_counter() - started
