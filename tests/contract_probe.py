"""One backend through the Backend contract and the parity probe, in a fresh process.

    python tests/contract_probe.py BACKEND OUT.npz

Started with the worker's environment (a Keras backend is fixed per process). Each task is built
once and gives both checks what they need (its compilations are the probe's cost): the parity
arrays (tests/parity_probe.py's `record`) go to OUT.npz, for tests/test_parity.py to hold
against torch's; what the contract asks of the backend is printed as one JSON line, judged by
tests/test_backend_contract.py the same for every backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parity_probe import PROBE_BATCH, build, record  # noqa: E402
from reference import (  # noqa: E402
    forward,
    probe_tasks,
    probe_threads,
    softmax_cross_entropy,
    tiny_dataset,
)

from backends import Unsupported, create_backend  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402

TASKS = probe_tasks(register=True)


def relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def task_contract(name: str, task_name: str, arrays: dict) -> tuple[dict, dict, tuple]:
    """The task built from the canonical weights: its parameters, its logits against the numpy
    reference, the weights given back unchanged; then parity_probe's five steps from the
    epoch's start (into `arrays`), the first of which trains the first permuted batch (its
    loss is that batch's), the weights moved; then an evaluation. Returns the untrained
    checks, the first step's and the backend's (backend, data) for training to go on."""
    backend, task, data, weights = build(name, task_name, TASKS[task_name])
    back = backend.get_weights()
    untrained = {
        "params": backend.param_count(),
        "expected_params": task.param_count,
        "weight_keys_in_order": list(back) == list(weights),
        "weights_unchanged": all(np.array_equal(back[k], weights[k]) for k in weights),
        "window_steps": backend.window_steps,
        "mode": backend.mode,
    }
    arrays.update(record(backend, task_name, task, data))
    logits = arrays[f"{task_name}/logits"]
    untrained["logits_dtype"] = str(logits.dtype)
    reference = forward(task.layers, weights, data.x_test[:PROBE_BATCH])
    untrained["logits_relative_error"] = relative(logits, reference)
    batch = epoch_permutation(0, 0, len(data.y_train))[: task.batch_size]
    expected = softmax_cross_entropy(  # train: BatchNorm with the batch's statistics
        forward(task.layers, weights, data.x_train[batch], train=True), data.y_train[batch]
    )
    first_key = next(iter(weights))
    accuracy, eval_loss = backend.evaluate()
    first = {
        "loss": float(arrays[f"{task_name}/losses"][0]),
        "expected_loss": float(expected),
        "weights_moved": not np.array_equal(backend.get_weights()[first_key], weights[first_key]),
        "accuracy": accuracy,
        "eval_loss": eval_loss,
    }
    return untrained, first, (backend, data)


def training(backend, data, first: dict) -> dict:
    """From MNIST's parity steps on: training lowers the loss; evaluation; steps past the
    epoch are refused."""
    first_loss = backend.run_steps(0, 1)  # a step of the epoch in progress: its loss a float
    for _ in range(5):
        last = backend.run_steps(0, 4)
    accuracy, loss = backend.evaluate()
    batches = len(data.y_train) // TASKS["mnist_cnn"].batch_size
    try:
        backend.run_steps(batches - 1, 2)
        past = None
    except ValueError as error:
        past = str(error)
    return {
        "first_loss": first["loss"],
        "first_loss_is_float": isinstance(first_loss, float),
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
    task = TASKS[task_name]
    backend = create_backend(
        RunConfig(task=task_name, backend=name, threads=probe_threads(), precision="bf16")
    )
    data = tiny_dataset(task)
    backend.setup(initial_weights(task.layers, task.input_shape, seed=0), data)
    backend.begin_epoch(epoch_permutation(0, 0, len(data.y_train)))
    return [backend.run_steps(0, 2), backend.run_steps(2, 2)]


def main(name: str, out: str) -> dict:
    default = create_backend(RunConfig(task="mnist_cnn", backend=name))
    arrays, tasks, first_steps = {}, {}, {}
    for task in TASKS:
        tasks[task], first_steps[task], trainable = task_contract(name, task, arrays)
        if task == "mnist_cnn":
            trained = training(*trainable, first_steps[task])
    np.savez(out, **arrays)
    return {
        "framework": default.framework,
        "default_mode": default.mode,
        "tasks": tasks,
        "first_steps": first_steps,
        "training": trained,
        "tf32_on_cpu": refusal(name, precision="tf32"),
        "cuda_without_gpu": refusal(name, device="cuda"),
        "bf16_losses": bf16(name, "mnist_cnn") + bf16(name, "test_tiny_resnet"),  # + BatchNorm
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
