"""The Keras backend on each Keras backend: mode switches, weights, logits, per-step losses, bf16.

Keras fixes its backend per process, so each Keras backend is probed once, in a fresh process
with the worker's environment: this file run as a script is that probe,

    python tests/test_keras_backend.py keras-jax OUT.json

and the tests below check what it saved. A backend whose framework is not installed is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from reference import THREADS, forward, softmax_cross_entropy, tiny_dataset  # noqa: E402

from backends import Unsupported, create_backend, load_backend_class  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.tasks import get_task  # noqa: E402

KERAS_BACKENDS = {"keras-tensorflow": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
WINDOW = 3  # --window-steps of the probe's runs: in fused mode one execution runs three steps
MODES = ("default", "eager", "compiled", "fused")
TASKS = ("mnist_cnn", "sst2_lstm")

# ---------------------------------------------------------------------------------------------
# The probe: runs in a process of its own, one per Keras backend.


def make(backend_name: str, task_name: str, **overrides):
    task = get_task(task_name)
    settings = {
        "task": task_name,
        "backend": backend_name,
        "threads": THREADS,
        "window_steps": WINDOW,
    }
    backend = create_backend(RunConfig(**settings, **overrides))
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    data = tiny_dataset(task)
    backend.setup(weights, data)
    return backend, task, weights, data


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def single_steps(backend, permutation: np.ndarray, count: int) -> list[float]:
    backend.begin_epoch(permutation)
    return [backend.run_steps(step, 1) for step in range(count)]


def probe_mode(backend_name: str, mode: str) -> dict:
    """A mode's Keras switches and, but for torch.compile (slow to compile), three steps."""
    try:
        backend, _, _, data = make(backend_name, "mnist_cnn", mode=mode)
    except Unsupported as error:
        return {"unsupported": str(error)}
    model = backend.model
    result = {
        "versions": backend.versions(),
        "mode": backend.mode,
        "mechanism": backend.mechanism,
        "run_eagerly": bool(model.run_eagerly),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution),
    }
    if not (mode == "compiled" and backend_name == "keras-torch"):
        backend.begin_epoch(epoch_permutation(0, 0, len(data.y_train)))
        result["loss_of_three_steps"] = backend.run_steps(0, 3)
    return result


def probe_task(backend_name: str, task_name: str) -> dict:
    """Weights round trip, logits against numpy, the first step's loss, per-step losses."""
    backend, task, weights, data = make(backend_name, task_name)
    returned = backend.get_weights()
    x = data.x_test[:16]
    permutation = epoch_permutation(0, 0, len(data.y_train))
    batch = permutation[: task.batch_size]
    logits = forward(task.layers, weights, data.x_train[batch])
    result = {
        "params": backend.param_count(),
        "same_keys": list(returned) == list(weights),
        "weights_equal": all(np.array_equal(returned[key], weights[key]) for key in weights),
        "logit_error": relative_error(backend.predict(x), forward(task.layers, weights, x)),
        "expected_first_loss": softmax_cross_entropy(logits, data.y_train[batch]),
        "single_losses": single_steps(backend, permutation, 3),
    }
    first_key = next(iter(weights))
    result["weights_changed"] = not np.array_equal(
        backend.get_weights()[first_key], weights[first_key]
    )
    accuracy, loss = backend.evaluate()
    result.update(accuracy=accuracy, eval_loss=loss, memory=backend.memory_peak_bytes())
    return result


def probe_bf16(backend_name: str) -> dict:
    backend, task, weights, data = make(backend_name, "mnist_cnn", precision="bf16")
    x = data.x_test[:16]
    logits = backend.predict(x)
    return {
        # the IR's layers (a functional model's `layers` also holds its InputLayer)
        "policies": sorted({layer.dtype_policy.name for layer in backend.keras_layers}),
        "variable_dtypes": sorted({str(v.dtype) for v in backend.model.trainable_weights}),
        "logits_dtype": str(logits.dtype),
        "logit_error": relative_error(logits, forward(task.layers, weights, x)),
        "losses": single_steps(backend, epoch_permutation(0, 0, len(data.y_train)), 2),
    }


ADAM = {"learning_rate": 0.1, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 0.1}
ADAM_START = [1.0, -2.0, 3.0]
ADAM_GRADIENTS = [[0.5, -1.0, 0.01], [0.2, 0.3, -0.02], [-0.4, 0.1, 0.03]]


def probe_adam() -> dict:
    """The spec's Adam (spec_adam) on one variable for three steps, with an epsilon large enough
    that where it sits shows (Keras' own Adam puts it before the bias correction)."""
    import keras

    from backends.keras_backend import spec_adam

    optimizer = spec_adam(**ADAM)
    variable = keras.Variable(np.array(ADAM_START, np.float32))
    for gradient in ADAM_GRADIENTS:
        optimizer.apply([keras.ops.convert_to_tensor(np.array(gradient, np.float32))], [variable])
    return {
        "values": np.asarray(keras.ops.convert_to_numpy(variable), np.float64).tolist(),
        "step_epsilon_left": getattr(optimizer, "step_epsilon", None) is not None,
    }


def probe(backend_name: str) -> dict:
    backend_class = load_backend_class(backend_name)
    tasks = {"mnist_cnn": probe_task(backend_name, "mnist_cnn")}  # per task: the contract test
    return {
        "framework": backend_class.framework,
        "default_mode": backend_class.default_mode,
        "modes": {mode: probe_mode(backend_name, mode) for mode in MODES},
        "tasks": tasks,
        "bf16": probe_bf16(backend_name),
        "adam": probe_adam(),
        "tensorflow_loaded": "tensorflow" in sys.modules,
    }


# ---------------------------------------------------------------------------------------------
# The tests: one probe process per Keras backend, shared by every test of that backend.


@pytest.fixture(scope="module", params=list(KERAS_BACKENDS))
def probed(request, tmp_path_factory) -> tuple[str, dict]:
    from bench.cell import worker_environment

    backend = request.param
    if not all(importlib.util.find_spec(m) for m in ("keras", KERAS_BACKENDS[backend])):
        pytest.skip(f"{backend} needs keras and {KERAS_BACKENDS[backend]} installed")
    out = tmp_path_factory.mktemp("keras") / f"{backend}.json"
    env = worker_environment(RunConfig(task="mnist_cnn", backend=backend, threads=THREADS))
    result = subprocess.run(
        [sys.executable, __file__, backend, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return backend, json.loads(out.read_text())


def test_identity_and_versions(probed):
    backend, results = probed
    framework = KERAS_BACKENDS[backend]
    assert results["framework"] == backend
    assert set(results["modes"]["default"]["versions"]) >= {"keras", framework}
    assert results["default_mode"] == ("eager" if framework == "torch" else "compiled")


def test_modes_map_to_keras_switches(probed):
    backend, results = probed
    modes = results["modes"]
    default = modes["default"]
    assert default["mode"] == results["default_mode"]
    assert "jit_compile='auto'" in default["mechanism"]  # default is Keras' own compile()
    assert not default["run_eagerly"] and default["steps_per_execution"] == 1
    # What "auto" resolves to: eager on torch, no XLA on a CPU-only TensorFlow, jax.jit on JAX.
    assert default["jit_compile"] == (backend == "keras-jax")
    eager = modes["eager"]
    assert eager["mode"] == "eager" and eager["run_eagerly"] and not eager["jit_compile"]
    assert eager["mechanism"].startswith("fit, run_eagerly=True")
    compiled = modes["compiled"]
    assert compiled["mode"] == "compiled" and compiled["jit_compile"]
    assert "jit_compile=True -> True" in compiled["mechanism"]
    assert not compiled["run_eagerly"] and compiled["steps_per_execution"] == 1
    fused = modes["fused"]
    if backend == "keras-torch":
        assert "steps_per_execution" in fused["unsupported"]
    else:
        assert fused["mode"] == "fused" and fused["steps_per_execution"] == WINDOW
        assert f"steps_per_execution={WINDOW}" in fused["mechanism"]


def test_run_steps_returns_the_last_steps_own_loss(probed):
    """Three steps in one fit call give the third step's loss, not fit's running mean."""
    _, results = probed
    losses = results["tasks"]["mnist_cnn"]["single_losses"]
    assert abs(losses[2] - np.mean(losses)) > 1e-3  # the check below can tell them apart
    for mode, result in results["modes"].items():
        if "loss_of_three_steps" in result:
            assert result["loss_of_three_steps"] == pytest.approx(losses[2], rel=1e-4), mode


def test_bf16_uses_the_mixed_policy(probed):
    _, results = probed
    bf16 = results["bf16"]
    assert bf16["policies"] == ["mixed_bfloat16"]
    assert bf16["variable_dtypes"] == ["float32"]  # fp32 master weights
    assert bf16["logits_dtype"] == "float32"
    assert 1e-4 < bf16["logit_error"] < 5e-2  # bf16 arithmetic: close, but not fp32-exact
    assert all(np.isfinite(bf16["losses"]))


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(probe(sys.argv[1]), indent=1))


def test_only_keras_tensorflow_loads_tensorflow(probed):
    """A TensorFlow loaded beside torch or JAX (keras.utils.set_random_seed imports it) would
    put its runtime into the keras-torch and keras-jax processes: it must stay out."""
    backend, result = probed
    assert result["tensorflow_loaded"] == (backend == "keras-tensorflow")


def test_spec_adam_puts_epsilon_after_the_bias_correction(probed):
    """lr * m_hat / (sqrt(v_hat) + eps), the spec's Adam, computed once a step (the step's
    epsilon is cached for its variables, then dropped)."""
    _, results = probed
    learning_rate, beta_1, beta_2, epsilon = ADAM.values()
    values, m, v = np.array(ADAM_START), 0.0, 0.0
    for step, gradient in enumerate(np.array(ADAM_GRADIENTS), start=1):
        m = beta_1 * m + (1 - beta_1) * gradient
        v = beta_2 * v + (1 - beta_2) * gradient**2
        m_hat, v_hat = m / (1 - beta_1**step), v / (1 - beta_2**step)
        values = values - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
    np.testing.assert_allclose(results["adam"]["values"], values, rtol=1e-5)
    assert not results["adam"]["step_epsilon_left"]
