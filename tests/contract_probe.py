"""One backend through the Backend contract, in a fresh process: prints one JSON line.

    python tests/contract_probe.py BACKEND

Started with the worker's environment (a Keras backend is fixed per process). What it measures
is judged by tests/test_backend_contract.py, the same for every backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import forward, probe_tasks, softmax_cross_entropy, tiny_dataset  # noqa: E402

from backends import Unsupported, create_backend  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402

TASKS = probe_tasks(register=True)


def make(name: str, task_name: str, **overrides):
    task = TASKS[task_name]
    config = RunConfig(task=task_name, backend=name, threads=2, **overrides)
    backend = create_backend(config)
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    data = tiny_dataset(task)
    backend.setup(weights, data)
    return backend, task, weights, data


def relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def untrained(name: str, task_name: str) -> dict:
    """Parameters, logits against the numpy reference, the weights given back unchanged."""
    backend, task, weights, data = make(name, task_name)
    logits = backend.predict(data.x_test[:16])
    back = backend.get_weights()
    return {
        "params": backend.param_count(),
        "expected_params": task.param_count,
        "logits_dtype": str(logits.dtype),
        "logits_relative_error": relative(logits, forward(task.layers, weights, data.x_test[:16])),
        "weight_keys_in_order": list(back) == list(weights),
        "weights_unchanged": all(np.array_equal(back[k], weights[k]) for k in weights),
        "window_steps": backend.window_steps,
        "mode": backend.mode,
    }


def first_step(name: str, task_name: str):
    """One step on the task's first permuted batch: its loss is that batch's, the weights move;
    then an evaluation. Returns the backend too, for training to go on from there."""
    backend, task, weights, data = make(name, task_name)
    permutation = epoch_permutation(0, 0, len(data.y_train))
    backend.begin_epoch(permutation)
    batch = permutation[: task.batch_size]
    expected = softmax_cross_entropy(  # train: BatchNorm with the batch's statistics
        forward(task.layers, weights, data.x_train[batch], train=True), data.y_train[batch]
    )
    loss = backend.run_steps(0, 1)
    first_key = next(iter(weights))
    accuracy, eval_loss = backend.evaluate()
    return backend, {
        "loss": loss,
        "expected_loss": float(expected),
        "weights_moved": not np.array_equal(backend.get_weights()[first_key], weights[first_key]),
        "accuracy": accuracy,
        "eval_loss": eval_loss,
    }


def training(backend, first: dict) -> dict:
    """From MNIST's first step on: training lowers the loss; evaluation; steps past the epoch."""
    for _ in range(5):
        last = backend.run_steps(0, 4)
    accuracy, loss = backend.evaluate()
    try:
        backend.run_steps(3, 2)  # 256 samples make 4 batches of 64
        past = None
    except ValueError as error:
        past = str(error)
    return {
        "first_loss": first["loss"],
        "first_loss_is_float": isinstance(first["loss"], float),
        "expected_first_loss": first["expected_loss"],
        "weights_moved": first["weights_moved"],
        "last_loss": last,
        "accuracy": accuracy,
        "eval_loss": loss,
        "eval_types": [type(accuracy).__name__, type(loss).__name__],
        "memory_peak_bytes": backend.memory_peak_bytes(),
        "past_the_epoch": past,
    }


def refusal(name: str, **overrides) -> str | None:
    try:
        create_backend(RunConfig(task="mnist_cnn", backend=name, **overrides))
    except (Unsupported, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def bf16(name: str, task_name: str) -> list[float]:
    backend, _, _, data = make(name, task_name, precision="bf16")
    backend.begin_epoch(epoch_permutation(0, 0, len(data.y_train)))
    return [backend.run_steps(0, 2), backend.run_steps(2, 2)]


def main(name: str) -> dict:
    default = create_backend(RunConfig(task="mnist_cnn", backend=name))
    first_steps = {}
    for task in TASKS:
        backend, first_steps[task] = first_step(name, task)
        if task == "mnist_cnn":
            trained = training(backend, first_steps[task])
    return {
        "framework": default.framework,
        "default_mode": default.mode,
        "tasks": {task: untrained(name, task) for task in TASKS},
        "first_steps": first_steps,
        "training": trained,
        "tf32_on_cpu": refusal(name, precision="tf32"),
        "cuda_without_gpu": refusal(name, device="cuda"),
        "bf16_losses": bf16(name, "mnist_cnn") + bf16(name, "test_tiny_resnet"),  # + BatchNorm
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
