"""Runs one backend over every task on tiny data and saves what the parity tests compare.

    python tests/parity_probe.py BACKEND OUT.npz [MODE [DEVICE [TASKS]]]

TASKS (comma-separated) limits it to those; a heavy task (reference.HEAVY_TASKS) runs only when
named. The heavy and IMDB tasks run at batch PROBE_BATCH (SMALL_BATCH_TASKS).

Started in a fresh process with the worker's environment (a Keras backend is fixed per
process), it saves per task: the trainable parameter count, the logits of a fixed batch from the
canonical initial weights, the losses of five optimizer steps on the harness's batches (in a
fused mode, one window of five steps and its last loss), and after those steps: the trained
parameters and the BatchNorm state (each flattened into one vector, in canonical order) and
the evaluation-mode logits of the fixed batch; then, for a task with a learning-rate schedule
or augmentation, the losses of two more epochs begun with their rates and images and the
parameters after them.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import HEAVY_TASKS, probe_tasks, probe_threads, tiny_dataset  # noqa: E402

from backends import Unsupported, create_backend  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.layers import param_shapes, state_shapes  # noqa: E402
from bench.recipe import epoch_recipe  # noqa: E402
from bench.tasks import TASKS  # noqa: E402

STEPS = 5
RECIPE_EPOCHS = 2  # after the five steps, for a task with a schedule or augmentation
PROBE_BATCH = 16
# A heavy task's probe trains at this rate, its own optimizer otherwise: five fp32 steps of
# ResNet-18 at batch 16 amplify rounding past the parity tolerances at larger rates. Measured
# 2026-12-01 on this CPU: at lr 1e-3 jax and keras-jax (bit-identical logits, the same XLA
# kernels) end 4.6e-4 apart in BatchNorm state and 1.9e-3 in evaluation logits, as far as
# either is from torch; at 1e-4, 3.0e-5 and 7.1e-5.
HEAVY_LEARNING_RATE = 1e-4
# Probed at batch PROBE_BATCH too: the heavy tasks, and the IMDB ones, whose 200-token texts
# make a batch of 64 cost seconds per step on one core in every backend (and the float64 numpy
# reference of a 64-text batch 3 s of the transformer's probe): the same model, layers and
# sequence length, a quarter of the samples. Measured 2026-12-02, contract probe on one core:
# imdb_transformer 10-26 s per backend, imdb_lstm 15-18 s on keras-torch (eager, 200 steps).
SMALL_BATCH_TASKS = HEAVY_TASKS | {"imdb_lstm", "imdb_transformer"}


def build(backend_name: str, name: str, task, mode: str = "default", device: str = "cpu"):
    """The task's backend, set up from the canonical initial weights on tiny data with enough
    samples for STEPS full batches: (backend, task, data, weights). A task of SMALL_BATCH_TASKS
    gets batch PROBE_BATCH, a heavy one HEAVY_LEARNING_RATE too (the returned task, also put in
    the registry, has them). Raises Unsupported for a mode the backend has not."""
    changes = {}
    if name in SMALL_BATCH_TASKS:
        changes["batch_size"] = PROBE_BATCH
    if name in HEAVY_TASKS:  # at its own rate, five steps would amplify rounding (above)
        changes["optimizer"] = dataclasses.replace(
            task.optimizer, learning_rate=HEAVY_LEARNING_RATE
        )
    if changes:
        task = TASKS[name] = dataclasses.replace(task, **changes)
    batch = task.batch_size
    # a fused mode runs a window as one execution and gives its last loss: one 5-step window
    window = STEPS if mode == "fused" else 1
    config = RunConfig(
        task=name,
        backend=backend_name,
        mode=mode,
        device=device,
        threads=probe_threads(),
        seed=0,
        batch_size=batch,
        window_steps=window,
    )
    backend = create_backend(config)
    data = tiny_dataset(task, train=batch * (STEPS + 1))
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    backend.setup(weights, data)
    return backend, task, data, weights


def record(backend, name: str, task, data) -> dict[str, np.ndarray]:
    """What the parity tests compare, from a backend `build` gave: the parameter count and
    logits, then STEPS optimizer steps from the epoch's start, then the trained parameters,
    the BatchNorm state and the evaluation-mode logits."""
    results = {f"{name}/params": np.array(backend.param_count())}
    results[f"{name}/logits"] = backend.predict(data.x_test[:PROBE_BATCH])
    backend.begin_epoch(epoch_permutation(0, 0, len(data.y_train)))
    window = backend.window_steps
    losses = [backend.run_steps(step, window) for step in range(0, STEPS, window)]
    results[f"{name}/losses"] = np.array(losses)
    trained = backend.get_weights()
    for kind, shapes in (("params", param_shapes), ("state", state_shapes)):
        results[f"{name}/trained_{kind}"] = flattened(trained, task, shapes)
    results[f"{name}/eval_logits"] = backend.predict(data.x_test[:PROBE_BATCH])
    if task.schedule is not None or task.augmentation is not None:
        results[f"{name}/recipe_losses"] = recipe_epochs(backend, task, data)
        results[f"{name}/recipe_params"] = flattened(backend.get_weights(), task, param_shapes)
    return results


def flattened(weights: dict, task, shapes) -> np.ndarray:
    """The weights `shapes` names (param_shapes or state_shapes), as one vector in canonical
    order; empty for a model that has none (no BatchNorm, no state)."""
    values = [weights[key].ravel() for key in shapes(task.layers, task.input_shape)]
    return np.concatenate(values) if values else np.zeros(0)


def recipe_epochs(backend, task, data) -> np.ndarray:
    """A task with a schedule or augmentation goes on for RECIPE_EPOCHS more epochs of STEPS
    steps each, each begun with its rate and augmented images (bench/recipe.py, as the worker
    gives them): their windows' losses (every step's; in a fused mode each epoch's last)."""
    losses = []
    for epoch in range(1, 1 + RECIPE_EPOCHS):
        recipe = epoch_recipe(task, 0, epoch, data.x_train)
        permutation = epoch_permutation(0, epoch, len(data.y_train))
        backend.begin_epoch(permutation, recipe.learning_rate, recipe.x_train)
        window = backend.window_steps
        losses += [backend.run_steps(step, window) for step in range(0, STEPS, window)]
    return np.array(losses)


def probe(
    backend_name: str, mode: str = "default", device: str = "cpu", only: str = ""
) -> dict[str, np.ndarray]:
    """Every probe task (heavy ones only when named in `only`, at batch PROBE_BATCH)."""
    results = {}
    named = only.split(",") if only else []
    for name, task in probe_tasks(register=True, heavy=bool(named)).items():
        if named and name not in named:
            continue
        try:
            backend, task, data, _ = build(backend_name, name, task, mode, device)
        except Unsupported as reason:  # a mode this backend has not (a `skipped` row in a run)
            results[f"{name}/skipped"] = np.array(str(reason))
            continue
        results.update(record(backend, name, task, data))
    return results


if __name__ == "__main__":
    backend_name, out = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "default"
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    only = sys.argv[5] if len(sys.argv) > 5 else ""  # comma-separated task names, to debug one
    np.savez(out, **probe(backend_name, mode, device, only))
