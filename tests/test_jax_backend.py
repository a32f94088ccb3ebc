"""The jax backend maps the IR exactly: layouts, logits against numpy, steps, modes, precision."""

import numpy as np
import pytest
from reference import THREADS, tiny_dataset

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

from backends import create_backend  # noqa: E402
from backends.jax_backend import (  # noqa: E402
    JaxBackend,
    build_module,
    from_flax_layout,
    to_flax_layout,
)
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.layers import param_shapes, state_shapes  # noqa: E402
from bench.tasks import TASKS, get_task  # noqa: E402


def make_backend(task_name, **overrides):
    task = get_task(task_name)
    config = RunConfig(task=task_name, backend="jax", threads=THREADS, **overrides)
    backend = JaxBackend(config, task)
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    data = tiny_dataset(task)
    backend.setup(weights, data)
    return backend, task, weights, data


@pytest.mark.parametrize("name", sorted(TASKS))
def test_layout_round_trip(name):
    task = get_task(name)
    weights = initial_weights(task.layers, task.input_shape, seed=5)
    params = to_flax_layout(task, weights)
    tokens = len(task.input_shape) == 1  # a text task's input is token ids
    sample = jnp.zeros((1, *task.input_shape), jnp.int32 if tokens else jnp.float32)
    expected = jax.eval_shape(build_module(task).init, jax.random.key(0), sample)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    assert jax.tree.map(np.shape, params) == jax.tree.map(lambda leaf: leaf.shape, expected)
    back = from_flax_layout(task, params)
    assert list(back) == list(param_shapes(task.layers, task.input_shape))
    stats = to_flax_layout(task, weights, state_shapes)  # BatchNorm's batch_stats collection
    back |= from_flax_layout(task, stats, state_shapes)
    assert sorted(back) == sorted(weights)
    for key in weights:
        np.testing.assert_array_equal(back[key], weights[key])


def test_compiled_mode_is_the_default_and_keeps_its_step_on_the_device():
    backend, *_ = make_backend("mnist_cnn")
    assert backend.mode == "compiled"
    assert backend.mechanism == "jax.jit(train_step), donated, step counter on the device"


def test_fused_mode_matches_compiled():
    compiled, task, weights, data = make_backend("mnist_cnn")
    fused, *_ = make_backend("mnist_cnn", mode="fused")
    assert fused.mechanism.startswith("jax.jit(lax.scan over")
    permutation = epoch_permutation(0, 0, len(data.y_train))
    compiled.begin_epoch(permutation)
    fused.begin_epoch(permutation)
    compiled_loss = [compiled.run_steps(step, 1) for step in range(4)][-1]
    fused_loss = fused.run_steps(0, 4)  # one dispatch
    assert isinstance(fused_loss, float)
    assert fused_loss == pytest.approx(compiled_loss, rel=1e-5)
    expected = compiled.get_weights()
    for key, value in fused.get_weights().items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-6)
    fused.run_steps(0, 4)
    assert list(fused.fused_functions) == [4]  # one compiled function per window length


def test_eager_mode_runs_op_by_op_and_matches_compiled():
    compiled, task, weights, data = make_backend("mnist_cnn")
    eager, *_ = make_backend("mnist_cnn", mode="eager")
    assert "disable_jit" in eager.mechanism
    permutation = epoch_permutation(0, 0, len(data.y_train))
    losses = []
    for backend in (compiled, eager):
        backend.begin_epoch(permutation)
        losses.append([backend.run_steps(step, 1) for step in range(2)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_bf16_computes_in_bf16_with_fp32_params_and_optimizer_state():
    backend, task, weights, data = make_backend("mnist_cnn", precision="bf16")
    jaxpr = str(jax.make_jaxpr(backend.model.apply)({"params": backend.params}, data.x_test[:2]))
    assert "conv_general_dilated" in jaxpr and "bf16[2,26,26,32]" in jaxpr
    backend.begin_epoch(np.arange(256, dtype=np.int32))
    assert np.isfinite(backend.run_steps(0, 2))
    for leaf in jax.tree.leaves((backend.params, backend.opt_state)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype  # int32: Adam's step count
    assert backend.predict(data.x_test[:4]).dtype == np.float32


def test_fp32_sets_matmul_precision_to_highest():
    jax.config.update("jax_default_matmul_precision", None)
    create_backend(RunConfig(task="mnist_cnn", backend="jax"))
    assert jax.config.jax_default_matmul_precision == "highest"
