"""JAX backend: the IR as a Flax linen module, trained with optax in one jitted, donated step.

Modes: `compiled` (the default JAX users get: one jax.jit train step per dispatch), `fused`
(one jax.jit of a lax.scan over a window's steps per dispatch, compiled once per window length)
and `eager` (the same step run op by op under jax.disable_jit).
Precision: `fp32` (matmul/conv precision "highest"), `tf32` (cuda only), `bf16` (modules compute
in bf16; parameters and Adam state stay fp32).
The dataset is placed on the device once, as one copy; each step gathers its batch there,
inside the jitted function, from the harness's epoch permutation. The step number lives on the
device too: the compiled step takes it and returns it advanced, so no host value enters a step.
An LSTM is a lax.scan over the timesteps (LastHidden), on every device and in every precision.
BatchNorm's moving statistics are Flax's `batch_stats` collection, carried in the step's state
beside the parameters and the optimizer state (mutable in the training forward, read-only in
evaluation); a Residual is a module of two Chains, so parameters nest as the canonical names.
JAX cannot reset its allocator's peak (`peak_bytes_in_use`): it counts from the process start,
so it covers setup too, which stages one copy of the data and stays below training's peak.

Why linen, not nnx: measured, nnx.jit walks the object graph in Python on every call (+0.4
ms/step); nnx only matches linen once reduced to linen's shape (a pure function of a parameter
pytree), which linen gives directly (docs/MEASUREMENTS.md, "linen or nnx").
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen
from jax.ad_checkpoint import checkpoint_name

from backends.base import EVAL_BATCH, TF32_ON_CPU, BackendBase, Unsupported
from bench.config import RunConfig
from bench.data import Dataset
from bench.init import Weights
from bench.layers import (
    LSTM,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    Layer,
    LayerNorm,
    MaskedMeanPool,
    MaxPool2D,
    MultiHeadSelfAttention,
    PositionEmbedding,
    Residual,
    layer_name,
    model_uses_padding_mask,
    padding_mask,
    param_shapes,
    state_shapes,
    uses_padding_mask,
    variable_shapes,
)
from bench.tasks import SGD, Adam, TaskSpec

# canonical name -> Flax's, where they differ; a "/" in Flax's name nests it one level deeper
# (attention's projections are submodules of linen.MultiHeadDotProductAttention)
FLAX_PARAM_NAMES = {
    "embeddings": "embedding",
    **{
        f"{projection}_{param}": f"{flax_name}/{param}"
        for projection, flax_name in (
            ("query", "query"),
            ("key", "key"),
            ("value", "value"),
            ("output", "out"),
        )
        for param in ("kernel", "bias")
    },
}
# The same for one layer type only, where its Flax module names a parameter otherwise
# (BatchNorm's state lives in the `batch_stats` collection)
FLAX_LAYER_PARAM_NAMES: dict[type, dict[str, str]] = {
    BatchNorm: {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"},
    LayerNorm: {"gamma": "scale", "beta": "bias"},
}

Params = dict[str, dict[str, Any]]  # {layer name: {param name: array}}


class LastHidden(linen.Module):
    """An LSTM over (batch, time, features) on the canonical parameters, last hidden state out.

    kernel (in, 4u), recurrent_kernel (u, 4u), one bias (4u), gates i, f, g, o; zero initial
    state. A lax.scan over the timesteps; each step is one matmul of [x_t, h] with the two
    kernels stacked, and the backward pass keeps only each step's pre-activation gates and
    recomputes the activations from them (jax.checkpoint), the same values autodiff would store.
    Measured on XLA:CPU, both are faster than projecting every timestep's input at once outside
    the scan (that sequence is transposed and its gradient stacked and transposed back) and
    than autodiff's own residuals (a dozen stacked (time, batch, units) arrays, each activation
    saved twice, written in the forward and read back in the backward).
    """

    units: int
    dtype: Any = jnp.float32

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gates = 4 * self.units
        kernel = self.param("kernel", linen.initializers.glorot_uniform(), (x.shape[-1], gates))
        recurrent = self.param(
            "recurrent_kernel", linen.initializers.orthogonal(), (self.units, gates)
        )
        bias = self.param("bias", linen.initializers.zeros_init(), (gates,))
        x, kernel, recurrent, bias = linen.dtypes.promote_dtype(
            x, kernel, recurrent, bias, dtype=self.dtype
        )
        stacked = jnp.concatenate([kernel, recurrent], axis=0)  # (in + u, 4u)

        def step(carry, x_t):
            hidden, cell = carry
            z = jnp.concatenate([x_t, hidden], axis=-1) @ stacked + bias
            i, f, g, o = jnp.split(checkpoint_name(z, "lstm_gates"), 4, axis=-1)
            cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
            hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
            return (hidden, cell), None

        step = jax.checkpoint(
            step, policy=jax.checkpoint_policies.save_only_these_names("lstm_gates")
        )
        zeros = jnp.zeros((x.shape[0], self.units), x.dtype)
        (hidden, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return hidden


class Chain(linen.Module):
    """IR layers in order; each submodule is named by its canonical layer name. The model is
    one, and so is each branch of a Residual (named `body` / `shortcut`), so the parameter tree
    nests as the canonical names do: `3_residual/body/0_conv2d/kernel`."""

    layers: tuple[Layer, ...]
    dtype: Any = jnp.float32  # compute dtype; parameters are always fp32

    @linen.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        if mask is None and model_uses_padding_mask(self.layers):
            mask = padding_mask(x)  # the model's chain: once, from its input token ids
        for index, layer in enumerate(self.layers):
            name = layer_name(index, layer)
            masked = {"mask": mask} if uses_padding_mask(layer) else {}
            if type(layer) in FLAX_TRAINING_LAYERS:
                x = FLAX_TRAINING_LAYERS[type(layer)](layer, x, name, self.dtype, train, **masked)
            elif type(layer) in FLAX_LAYERS:
                x = FLAX_LAYERS[type(layer)](layer, x, name, self.dtype, **masked)
            else:
                raise NotImplementedError(f"jax backend has no {type(layer).__name__}")
            x = FLAX_ACTIVATIONS[getattr(layer, "activation", None)](x)
        return x


# What a layer's `activation` applies (bench.layers.ACTIVATIONS): GELU exact, not linen.gelu's
# default tanh approximation.
FLAX_ACTIVATIONS: dict[str | None, Callable[[jax.Array], jax.Array]] = {
    None: lambda x: x,
    "relu": linen.relu,
    "sigmoid": linen.sigmoid,
    "gelu": lambda x: linen.gelu(x, approximate=False),
}


class PositionEmbed(linen.Module):
    """A learned (seq_len, dim) table added to the input."""

    dtype: Any = jnp.float32

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        table = self.param("embedding", linen.initializers.zeros_init(), x.shape[1:])
        return x + table.astype(self.dtype)


def self_attention(
    layer: MultiHeadSelfAttention, x: jax.Array, name: str, dtype: Any, mask: jax.Array
) -> jax.Array:
    """linen.MultiHeadDotProductAttention over x, padded keys masked (Flax puts the dtype's
    lowest value at a masked score: a text without tokens attends uniformly, as specified)."""
    attention = linen.MultiHeadDotProductAttention(
        num_heads=layer.heads, dtype=dtype, deterministic=True, name=name
    )
    return attention(x, mask=mask[:, None, None, :])  # (batch, heads, queries, keys)


def masked_mean_pool(
    layer: MaskedMeanPool, x: jax.Array, name: str, dtype: Any, mask: jax.Array
) -> jax.Array:
    weights = mask.astype(x.dtype)[..., None]
    return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


Model = Chain  # the task's whole chain


class FlaxResidual(linen.Module):
    """body(x) + shortcut(x); an empty shortcut Chain is the identity. The padding mask, where
    the model has one, goes on to both chains."""

    layer: Residual
    dtype: Any = jnp.float32

    @linen.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        body = Chain(self.layer.body, self.dtype, name="body")(x, train, mask)
        return body + Chain(self.layer.shortcut, self.dtype, name="shortcut")(x, train, mask)


def max_pool(layer: MaxPool2D, x: jax.Array, name: str, dtype: Any) -> jax.Array:
    pool = (layer.pool_size, layer.pool_size)
    return linen.max_pool(x, pool, strides=pool, padding="VALID")


def conv(layer: Conv2D, x: jax.Array, name: str, dtype: Any) -> jax.Array:
    """linen.Conv with the IR's padding written out (the pixels XLA's "SAME" pads too)."""
    size = (layer.kernel_size, layer.kernel_size)
    padding = layer.padding_amounts(x.shape[1:])
    strides = (layer.strides, layer.strides)
    return linen.Conv(
        layer.filters, size, strides, padding, use_bias=layer.use_bias, dtype=dtype, name=name
    )(x)


def batch_norm(layer: BatchNorm, x: jax.Array, name: str, dtype: Any, train: bool) -> jax.Array:
    """linen.BatchNorm: the IR's momentum convention is Flax's; the variance is the biased one,
    computed as the mean of squared deviations (use_fast_variance=False), as torch and Keras
    compute it, and in fp32 under bf16 (Flax's reductions are)."""
    return linen.BatchNorm(
        use_running_average=not train,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        dtype=dtype,
        use_fast_variance=False,
        name=name,
    )(x)


# One entry per IR layer type: (layer, x, canonical name, compute dtype) -> output, called
# inside Model's compact __call__, so the submodules it makes are named by the canonical name.
# A layer that uses the padding mask also gets `mask=` (True at tokens, (batch, seq_len)).
FLAX_LAYERS: dict[type, Callable[[Any, jax.Array, str, Any], jax.Array]] = {
    Conv2D: conv,
    MaxPool2D: max_pool,
    Flatten: lambda layer, x, name, dtype: x.reshape(x.shape[0], -1),  # NHWC: H, W, C order
    Dense: lambda layer, x, name, dtype: linen.Dense(layer.units, dtype=dtype, name=name)(x),
    Embedding: lambda layer, x, name, dtype: linen.Embed(
        layer.vocab_size, layer.dim, dtype=dtype, name=name
    )(x),
    LSTM: lambda layer, x, name, dtype: LastHidden(layer.units, dtype=dtype, name=name)(x),
    PositionEmbedding: lambda layer, x, name, dtype: PositionEmbed(dtype, name=name)(x),
    LayerNorm: lambda layer, x, name, dtype: linen.LayerNorm(
        epsilon=layer.epsilon, dtype=dtype, name=name
    )(x),
    MultiHeadSelfAttention: self_attention,
    MaskedMeanPool: masked_mean_pool,
    GlobalAveragePooling2D: lambda layer, x, name, dtype: x.mean(axis=(1, 2)),
}


# Layers whose output depends on training or that hold layers which may:
# (layer, x, canonical name, compute dtype, train) -> output.
FLAX_TRAINING_LAYERS: dict[type, Callable[[Any, jax.Array, str, Any, bool], jax.Array]] = {
    Residual: lambda layer, x, name, dtype, train, mask=None: FlaxResidual(layer, dtype, name=name)(
        x, train, mask
    ),
    BatchNorm: batch_norm,
}


def build_module(task: TaskSpec, dtype: Any = jnp.float32) -> Model:
    return Model(layers=task.layers, dtype=dtype)


def flax_paths(task: TaskSpec, keys=param_shapes) -> dict[str, tuple[str, ...]]:
    """Canonical `<layer>/<param>` -> its path in Flax's nested params (`keys=state_shapes`:
    BatchNorm's state, in the `batch_stats` collection)."""
    paths = {}
    types = layer_types(task.layers)
    for key in keys(task.layers, task.input_shape):
        *path, param = key.split("/")
        paths[key] = (*path, *flax_name(types["/".join(path)], param).split("/"))
    return paths


def to_flax_layout(task: TaskSpec, weights: Weights, keys=param_shapes) -> Params:
    """Canonical `<layer>/<param>` -> Flax's nested params. The layouts already agree (HWIO
    conv kernels, (in, out) Dense, NHWC flatten, LSTM as LastHidden defines it, attention's
    (dim, heads, head_dim)); only nesting and some names change (FLAX_PARAM_NAMES and
    FLAX_LAYER_PARAM_NAMES). With keys=state_shapes: BatchNorm's `batch_stats` collection."""
    params: Params = {}
    for key, path in flax_paths(task, keys).items():
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = weights[key]
    return params


def from_flax_layout(task: TaskSpec, params: Params, keys=param_shapes) -> Weights:
    """The inverse of to_flax_layout, in the canonical key order."""
    weights = {}
    for key, path in flax_paths(task, keys).items():
        value = params
        for part in path:
            value = value[part]
        weights[key] = np.ascontiguousarray(value, dtype=np.float32)
    return weights


def flax_name(layer_type: type, param: str) -> str:
    names = FLAX_LAYER_PARAM_NAMES.get(layer_type, {})
    return names.get(param, FLAX_PARAM_NAMES.get(param, param))


def layer_types(layers: tuple[Layer, ...], prefix: str = "") -> dict[str, type]:
    """Every layer's canonical path (`3_residual/body/0_conv2d`) -> its IR type."""
    types = {}
    for index, layer in enumerate(layers):
        name = f"{prefix}{layer_name(index, layer)}"
        types[name] = type(layer)
        if isinstance(layer, Residual):
            for branch, chain in layer.branches():
                types |= layer_types(chain, f"{name}/{branch}/")
    return types


def set_precision(device: str, precision: str) -> None:
    if device == "cpu" and precision == "tf32":
        raise Unsupported(TF32_ON_CPU)
    # Covers matmuls and convolutions with fp32 inputs; bf16 compute is not affected.
    jax.config.update(
        "jax_default_matmul_precision", "tensorfloat32" if precision == "tf32" else "highest"
    )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample softmax cross-entropy from integer labels, in fp32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def make_train_step(model: Model, optimizer: optax.GradientTransformation, batch_size: int):
    """(params, opt_state, batch_stats), (x_train, y_train, permutation), step -> new state,
    loss. batch_stats (BatchNorm's moving statistics; {} without BatchNorm) is Flax's mutable
    collection: the forward runs in training mode and returns it updated."""

    def loss_of(params: Params, batch_stats: Params, inputs: jax.Array, labels: jax.Array):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            inputs,
            train=True,
            mutable=["batch_stats"],
        )
        loss = cross_entropy(logits, labels).mean()
        return loss, updates.get("batch_stats", batch_stats)

    def train_step(state, data, step):
        params, opt_state, batch_stats = state
        x_train, y_train, permutation = data
        index = jax.lax.dynamic_slice_in_dim(permutation, step * batch_size, batch_size)
        (loss, batch_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(
            params, batch_stats, x_train[index], y_train[index]
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, batch_stats), loss

    return train_step


def make_counted_step(train_step: Callable) -> Callable:
    """One jitted, donated step that takes its step number as a device scalar and returns it
    advanced, so the loop hands no Python int (a host-to-device copy per call) to the device."""

    def counted_step(state, data, step):
        state, loss = train_step(state, data, step)
        return state, loss, step + 1

    return jax.jit(counted_step, donate_argnums=(0, 2))


def make_fused_steps(train_step: Callable, num_steps: int) -> Callable:
    """One jitted dispatch of lax.scan over steps [first, first + num_steps)."""

    def train_steps(state, data, first_step):
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
        state, losses = jax.lax.scan(lambda s, step: train_step(s, data, step), state, steps)
        return state, losses[-1]

    return jax.jit(train_steps, donate_argnums=0)


def make_eval_batch(model: Model) -> Callable:
    def eval_batch(variables: Params, inputs: jax.Array, labels: jax.Array):
        logits = model.apply(variables, inputs)  # train=False: BatchNorm's moving statistics
        correct = (jnp.argmax(logits, axis=-1) == labels).sum()
        return correct, cross_entropy(logits, labels).sum()

    return jax.jit(eval_batch)


def optax_sgd(spec: SGD, scheduled: bool = False) -> optax.GradientTransformation:
    """The spec's SGD (bench/tasks.py): the decay added to the gradient, then optax's trace."""
    momentum = spec.momentum or None  # optax.sgd takes None for no momentum
    sgd = injected(optax.sgd, scheduled, "momentum", "nesterov")
    return optax.chain(
        optax.add_decayed_weights(spec.weight_decay),
        sgd(learning_rate=spec.learning_rate, momentum=momentum, nesterov=spec.nesterov),
    )


def optax_adam(spec: Adam, scheduled: bool = False) -> optax.GradientTransformation:
    adam = injected(optax.adam, scheduled)
    return adam(learning_rate=spec.learning_rate, b1=spec.beta_1, b2=spec.beta_2, eps=spec.epsilon)


def injected(transform: Callable, scheduled: bool, *static: str) -> Callable:
    """The optax transform itself, or, for a task with a schedule, the same transform with its
    hyperparameters in its state (optax.inject_hyperparams), so begin_epoch can set the epoch's
    learning rate without a new compilation (`with_learning_rate`); `static` are the arguments
    that stay Python values."""
    if not scheduled:
        return transform
    return optax.inject_hyperparams(transform, static_args=static)


def with_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """opt_state with every injected learning rate set to `learning_rate` (same dtype)."""

    def is_injected(node: Any) -> bool:  # optax's state class for it differs across versions
        return isinstance(node, tuple) and hasattr(node, "hyperparams")

    def set_rate(node: Any) -> Any:
        if not is_injected(node):
            return node
        old = node.hyperparams["learning_rate"]
        rate = jnp.asarray(learning_rate, dtype=old.dtype)
        return node._replace(hyperparams={**node.hyperparams, "learning_rate": rate})

    return jax.tree.map(set_rate, opt_state, is_leaf=is_injected)


# One builder per optimizer spec: (spec, the task has a schedule) -> the transformation
OPTAX_OPTIMIZERS: dict[type, Callable[[Any, bool], optax.GradientTransformation]] = {
    Adam: optax_adam,
    SGD: optax_sgd,
}


class JaxBackend(BackendBase):
    framework = "jax"
    default_mode = "compiled"

    def __init__(self, config: RunConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self.device = self.find_device(config.device)
        set_precision(config.device, config.precision)
        self.compute_dtype = jnp.bfloat16 if config.precision == "bf16" else jnp.float32
        mechanism = {
            "eager": "op-by-op (jax.disable_jit)",
            "compiled": "jax.jit(train_step), donated, step counter on the device",
            "fused": f"jax.jit(lax.scan over {config.window_steps} steps), donated",
        }[self.mode]
        if any(isinstance(layer, LSTM) for layer in task.layers):
            dtype = "bf16 compute, fp32 weights" if config.precision == "bf16" else "fp32"
            mechanism += (
                "; LSTM: a lax.scan loop over timesteps, one [x_t, h] matmul per step, gate"
                f" activations recomputed in the backward ({dtype})"
            )
        self.mechanism = mechanism

    @staticmethod
    def find_device(device: str) -> jax.Device:
        if device == "cpu":
            return jax.devices("cpu")[0]
        try:
            return jax.devices("gpu")[0]
        except RuntimeError as error:
            detail = f"{error}; install jax[cuda12] or similar"
            raise BackendBase.no_gpu(f"jax {jax.__version__}", detail) from None

    def versions(self) -> dict[str, str]:
        versions = {
            "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "flax": flax.__version__,
            "optax": optax.__version__,
        }
        # e.g. "PJRT C API\ncuda 12080"; read defensively, the attribute is not public API
        platform_version = getattr(getattr(self.device, "client", None), "platform_version", "")
        if self.device.platform == "gpu" and platform_version:
            versions["platform"] = "_".join(str(platform_version).split())
        return versions

    def device_name(self) -> str | None:
        return self.device.device_kind if self.device.platform == "gpu" else None

    def setup(self, weights: Weights, data: Dataset) -> None:
        task = self.task
        self.model = build_module(task, self.compute_dtype)
        sample = jax.ShapeDtypeStruct((1, *data.x_train.shape[1:]), data.x_train.dtype)
        shapes = jax.eval_shape(self.model.init, jax.random.key(0), sample)
        self.shapes, self.stats_shapes = shapes["params"], shapes.get("batch_stats", {})
        self.load_weights(weights)
        self.x_train = jax.device_put(data.x_train, self.device)
        self.y_train = jax.device_put(data.y_train.astype(np.int32), self.device)
        self.x_test = jax.device_put(data.x_test, self.device)
        self.y_test = jax.device_put(data.y_test.astype(np.int32), self.device)
        scheduled = task.schedule is not None
        self.optimizer = OPTAX_OPTIMIZERS[type(task.optimizer)](task.optimizer, scheduled)
        self.opt_state = jax.device_put(self.optimizer.init(self.params), self.device)
        self.train_step = make_train_step(self.model, self.optimizer, self.batch_size)
        self.compiled_step = make_counted_step(self.train_step)
        self.fused_functions: dict[int, Callable] = {}
        self.apply = jax.jit(self.model.apply)
        self.eval_batch = make_eval_batch(self.model)

    def load_weights(self, weights: Weights) -> None:
        params = to_flax_layout(self.task, weights)
        for (path, expected), value in zip(
            jax.tree_util.tree_leaves_with_path(self.shapes), jax.tree.leaves(params)
        ):
            assert expected.shape == value.shape, f"{path}: {value.shape} vs {expected.shape}"
        assert jax.tree.structure(params) == jax.tree.structure(self.shapes)
        self.params = jax.device_put(params, self.device)
        stats = to_flax_layout(self.task, weights, state_shapes)
        assert jax.tree.structure(stats) == jax.tree.structure(self.stats_shapes)
        self.batch_stats = jax.device_put(stats, self.device)

    def get_weights(self) -> Weights:
        params = from_flax_layout(self.task, jax.device_get(self.params))
        stats = from_flax_layout(self.task, jax.device_get(self.batch_stats), state_shapes)
        merged = {**params, **stats}
        return {
            key: merged[key] for key in variable_shapes(self.task.layers, self.task.input_shape)
        }

    def variables(self) -> Params:
        """What model.apply evaluates with: the parameters and BatchNorm's moving statistics."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def begin_epoch(
        self,
        permutation: np.ndarray,
        learning_rate: float | None = None,
        x_train: np.ndarray | None = None,
    ) -> None:
        """The order; the epoch's rate into the optimizer state's injected hyperparameter, and
        augmented images as the new training split (the same shape: no new compilation)."""
        self.check_recipe(learning_rate, x_train)
        if learning_rate is not None:
            self.opt_state = jax.device_put(
                with_learning_rate(self.opt_state, learning_rate), self.device
            )
        if x_train is not None:  # the old copy freed first: never two on the device at once
            self.x_train.delete()
            self.x_train = jax.device_put(x_train, self.device)
        self.permutation = jax.device_put(permutation.astype(np.int32), self.device)

    def fused_steps(self, num_steps: int) -> Callable:
        """The fused function for windows of `num_steps`, compiled once per distinct length."""
        if num_steps not in self.fused_functions:
            self.fused_functions[num_steps] = make_fused_steps(self.train_step, num_steps)
        return self.fused_functions[num_steps]

    def run_steps(self, first_step: int, num_steps: int) -> float:
        self.check_window(first_step, num_steps, self.permutation.shape[0])
        state = (self.params, self.opt_state, self.batch_stats)
        data = (self.x_train, self.y_train, self.permutation)
        if self.mode == "fused":
            state, loss = self.fused_steps(num_steps)(state, data, first_step)
        elif self.mode == "compiled":
            step = jax.device_put(np.int32(first_step), self.device)  # once per window
            for _ in range(num_steps):
                state, loss, step = self.compiled_step(state, data, step)
        else:
            with jax.disable_jit():
                for step in range(first_step, first_step + num_steps):
                    state, loss = self.train_step(state, data, step)
        self.params, self.opt_state, self.batch_stats = state
        return float(loss)  # float() waits for the device: the window ends synchronized

    def evaluate(self) -> tuple[float, float]:
        results = []
        for start in range(0, len(self.y_test), EVAL_BATCH):
            inputs = self.x_test[start : start + EVAL_BATCH]
            labels = self.y_test[start : start + EVAL_BATCH]
            results.append(self.eval_batch(self.variables(), inputs, labels))
        correct, loss_sum = np.asarray(jax.device_get(results), dtype=np.float64).sum(axis=0)
        count = len(self.y_test)
        return float(correct) / count, float(loss_sum) / count

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits = self.apply(self.variables(), jax.device_put(x, self.device))
        return np.asarray(logits, dtype=np.float32)

    def memory_peak_bytes(self) -> int | None:
        stats = self.device.memory_stats()  # None on cpu
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def reset_memory_peak(self) -> bool:
        """JAX has no reset: its peak counts from the start (see the module docstring)."""
        return False

    def data_resident_bytes(self) -> int:
        arrays = (self.x_train, self.y_train, self.x_test, self.y_test)
        return sum(int(array.nbytes) for array in arrays)

    def param_count(self) -> int:
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(self.shapes))
