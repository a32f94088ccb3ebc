"""Step time of every task at a small size, for the selected backend, with pytest-benchmark.

One round = one call of the backend's run_steps(0, STEPS_PER_ROUND): STEPS_PER_ROUND training
steps on synthetic data, returning with the device synchronized (the backend interface's
contract: torch reads the loss to the host, JAX blocks until ready, Keras' fit reads its logs).
Pedantic mode with explicit rounds: WARMUP_ROUNDS untimed rounds first (the first one compiles),
then ROUNDS timed ones. Each benchmark's extra_info holds the row identity (task, backend,
device, device name, precision, mode, batch size) and steps_per_round, which is how `bench gate`
turns the rounds into per-step window times, and probe_ms, the machine-speed probe taken (untimed)
before each timed round, which tells the gate the machine's state in it. Run it with `make bench-pytest` (see conftest.py).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from backends import Unsupported, create_backend
from bench import data as datasets
from bench.calibration import Probe
from bench.config import RunConfig
from bench.init import epoch_permutation, initial_weights
from bench.metrics import cpu_name
from bench.tasks import TASKS
from bench.worker import limit

pytestmark = pytest.mark.benchmarks

BACKEND = os.environ.get("BENCH_PYTEST_BACKEND") or None  # conftest.py set up its environment
DEVICE = os.environ.get("BENCH_PYTEST_DEVICE") or "cpu"
PACKAGES = {  # what each backend needs: backends not installed are skipped
    "torch": ("torch",),
    "jax": ("jax", "flax", "optax"),
    "keras-tensorflow": ("keras", "tensorflow"),
    "keras-jax": ("keras", "jax"),
    "keras-torch": ("keras", "torch"),
}

BATCH_SIZE = int(os.environ.get("BENCH_PYTEST_BATCH_SIZE", "16"))  # the "small size"
STEPS_PER_ROUND = int(os.environ.get("BENCH_PYTEST_STEPS", "5"))
ROUNDS = int(os.environ.get("BENCH_PYTEST_ROUNDS", "15"))
WARMUP_ROUNDS = 2
SEED = 0


@pytest.fixture
def backend():
    if BACKEND is None:
        pytest.skip("set BENCH_PYTEST_BACKEND to one backend (make bench-pytest does, per process)")
    if not all(importlib.util.find_spec(name) for name in PACKAGES.get(BACKEND, ("?",))):
        pytest.skip(f"{BACKEND} is not installed")
    return BACKEND


@pytest.mark.parametrize("task_name", list(TASKS))
def test_train_steps(benchmark, backend, task_name):
    task = TASKS[task_name]
    config = RunConfig(
        task=task_name,
        backend=backend,
        device=DEVICE,
        data="synthetic",
        batch_size=BATCH_SIZE,
        train_limit=BATCH_SIZE * STEPS_PER_ROUND,
        test_limit=BATCH_SIZE,
        window_steps=STEPS_PER_ROUND,
        seed=SEED,
    )
    try:
        trainer = create_backend(config)
    except Unsupported as error:
        pytest.skip(str(error))
    samples = BATCH_SIZE * STEPS_PER_ROUND
    data = limit(datasets.load(task.dataset, synthetic=True), samples, BATCH_SIZE)
    trainer.setup(initial_weights(task.layers, task.input_shape, SEED), data)
    trainer.begin_epoch(epoch_permutation(SEED, 0, samples))
    benchmark.group = task_name
    benchmark.extra_info.update(
        task=task_name,
        backend=backend,
        device=DEVICE,
        device_name=trainer.device_name() or cpu_name(),
        precision=config.precision,
        mode=trainer.mode,
        mechanism=trainer.mechanism,
        batch_size=BATCH_SIZE,
        data="synthetic",
        steps_per_round=STEPS_PER_ROUND,
    )
    probe, probes = Probe(), []
    loss = benchmark.pedantic(
        trainer.run_steps,
        args=(0, STEPS_PER_ROUND),
        setup=lambda: probes.append(probe()),  # untimed, before every round
        rounds=ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
        iterations=1,
    )
    benchmark.extra_info["probe_ms"] = probes[-ROUNDS:]  # the timed rounds' machine states
    assert loss == loss, "the training loss is NaN"
