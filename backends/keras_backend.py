"""Keras 3 backend: the IR as a functional keras.Model, trained with compile + fit, on any Keras
backend.

One adapter, registered three times (keras-tensorflow, keras-jax, keras-torch): the worker sets
KERAS_BACKEND before anything imports keras, so `keras.backend.backend()` says which one runs.

How it trains and is timed: `model.compile(...)` once, then one `model.fit(..., epochs=1,
shuffle=False, verbose=0)` per epoch, as a Keras user trains, whose steps the worker times in
windows of `--window-steps` (backends/keras_windows.py). begin_epoch starts the epoch's fit on
a thread of its own and returns once fit's start-up (data adapter, iterator, callbacks,
train-function checks: a few ms, ~10 ms on TensorFlow, which a window of its own would carry)
is done and a callback has parked the thread before the first step. run_steps releases it for
the window's steps and returns when the callback, at the next window's first step
(on_train_batch_begin, which every Keras backend calls synchronously before the step), has
synchronized the device and read the last step's loss; the epoch's last window returns once
fit itself has returned, so evaluation always runs after fit. An error inside fit is raised by
the run_steps (or begin_epoch) that waits for it; a fit left parked mid-epoch (a new
begin_epoch, or the model used for predict / evaluate / get_weights) is ended before its next
step, and steps asked for out of order start a new fit from there (its start-up then falls in
that window: the worker never asks for that). Why a thread: fit is the loop Keras users run,
and its loop has no way to pause and hand control back between steps but a callback; a
callback that only blocks keeps the steps and their order exactly fit's own. The backend's
other framework work (set-up, predict, the weights) runs on that same thread, so a run's
framework calls all come from one thread, as in a user's program (keras_windows says what two
threads cost: torch.compile recompiles, and a second OpenMP team under torch).
In fused mode (steps_per_execution = --window-steps) fit calls back once per execution, so a
window is whole executions (the worker's fused windows are) or ends at the epoch's end.
setup places the dataset on the device once, as one copy, and every step gathers its batch
there from the harness's permutation, as the torch and JAX backends do; nothing goes through
the host inside a window:
  JAX, torch  fit gets a generator of the epoch's batches, each gathered on the device when
              Keras asks for it (one jitted gather on JAX, an index_select on torch). Keras'
              generator adapter hands device arrays through unchanged; its array adapter, given
              device arrays, would copy them to the host (JAX: np.asarray per epoch) or index
              them with Python lists per step (torch's DataLoader: a blocking copy each step).
  TensorFlow  fit gets a tf.data of the epoch's sample indices (tf.data runs on the host, so a
              dataset of the images themselves would copy them through the host every step);
              GatheringModel.train_step gathers each step's batch on the device from the
              resident tensors, inside Keras' own compiled step.
The window's device sync (keras_support's window_loss): the last loss read from its variable to
the host on TensorFlow (the read waits for the step's kernels), jax.block_until_ready of fit's
whole state on JAX, torch.cuda.synchronize on a GPU under torch. On JAX, Keras' metric reset at
each fit's start leaves uncommitted arrays, a new jax.jit signature and so a compilation at the
first step of every later epoch; the model places them on the device (reset_metrics).

Modes map to Keras' own compile switches (the row's `mechanism` spells out the one used and
what Keras' default jit_compile="auto" resolves to on the machine):
  default   compile's defaults (jit_compile="auto"): jax.jit on JAX, eager on torch, XLA on a
            TensorFlow with a GPU and a tf.function graph without XLA on a CPU-only TensorFlow
            (resolved mode: `eager` on torch, `compiled` elsewhere)
  eager     run_eagerly=True
  compiled  jit_compile=True: XLA on TensorFlow, jax.jit on JAX, torch.compile on torch
  fused     steps_per_execution = --window-steps, compilation as by default (TensorFlow: a
            tf.while_loop in one tf.function; JAX: a Python loop over the jitted step, not one
            dispatch); Keras' torch backend has no steps_per_execution: a `skipped` row.

Precision: fp32 (TF32 off in the framework underneath), tf32 (cuda only), bf16 (Keras'
`mixed_bfloat16` policy on every layer: bf16 compute, fp32 variables). Convolutions run in NHWC
(channels-last) memory, Keras' own layout (on torch Keras converts to channels_last itself).
An LSTM runs on the kernel Keras picks (use_cudnn="auto"): cuDNN on a GPU, Keras' generic loop
otherwise; under bf16 on a GPU, JAX's and TensorFlow's cuDNN LSTMs take no bfloat16 (JAX's
jax.experimental.rnn lowering rejects it, TensorFlow's CudnnRNN has no bf16 kernel), so there
the layer is built with use_cudnn=False. `mechanism` names the LSTM kernel.
On torch with cuda, cuDNN's autotuner is on (cudnn.benchmark), as in the torch backend.
Adam, as the spec (torch, optax) defines it: Keras adds epsilon to sqrt(v) before the bias
correction, so `spec_adam` scales epsilon per step; and on TensorFlow an Embedding's sparse
gradient is summed into a dense one first (see dense_gradient: Keras' Adam squares its rows one
by one, which is wrong for a token seen twice in a batch).
SGD: Keras' SGD with the spec's coupled weight decay added to the gradients (`spec_sgd`). A
Residual is a Keras layer holding two lists of layers (KerasResidual); BatchNorm is Keras'
BatchNormalization (fit trains it, predict uses its moving statistics).
The loss fit logs is a running mean over the epoch; run_steps returns the last step's own
loss, which `LastLossModel` keeps in a one-variable metric.
The model is functional (keras.Input, each layer called in turn, as keras.Sequential builds
it) so that the padding mask, computed once from the input token ids, reaches the layers that
take it as a second input (`padding_mask=`; DESIGN.md, "The padding mask").
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import keras
    from keras import ops
except ImportError as error:  # e.g. KERAS_BACKEND=tensorflow on a machine without TensorFlow
    raise ImportError(
        f"Keras on its {os.environ.get('KERAS_BACKEND', 'tensorflow')!r} backend needs "
        f"{error.name or 'a package'} installed, and it is not: {error}"
    ) from error

from backends.base import EVAL_BATCH, BackendBase, Unsupported
from backends.keras_support import (  # noqa: E402 - after keras' import check
    FRAMEWORK,
    FRAMEWORK_SUPPORT,
    cudnn_lstm,
    describe_lstm,
    lstm_use_cudnn,
    tensor_bytes,
)
from backends.keras_windows import EpochFit, KerasThread  # noqa: E402
from bench import data as datasets
from bench.config import RunConfig
from bench.init import Weights
from bench.layers import (
    LSTM,
    PAD_ID,
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
    uses_padding_mask,
)
from bench.tasks import SGD, Adam, TaskSpec


class LastValue(keras.metrics.Metric):
    """A metric that holds the last value it was given (fit's own loss is a running mean)."""

    def __init__(self, name: str = "last_loss") -> None:
        super().__init__(name=name)
        self.last = self.add_variable(shape=(), initializer="zeros", name="last")

    def update_state(self, value) -> None:
        self.last.assign(ops.cast(value, self.last.dtype))

    def result(self):
        return ops.convert_to_tensor(self.last)


@dataclass
class Resident:
    """The training split as placed on the device, once (a plain holder: Keras tracks none)."""

    x: object = None
    y: object = None


class LastLossModel(keras.Model):
    """A functional keras.Model whose fit logs also carry `last_loss`: the latest step's loss."""

    def __init__(self, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.last_loss = LastValue()
        self.resident = Resident()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        self.last_loss.update_state(loss)
        return loss

    def reset_metrics(self) -> None:
        """Keras' reset (fit calls it as each epoch begins); on JAX the zeros it assigns are then
        placed on the device, as every other state array is after a step: an uncommitted array
        is a new jax.jit signature, a compilation at the first step of every later fit."""
        super().reset_metrics()
        if FRAMEWORK == "jax":
            import jax

            device = jax.devices()[0]
            for variable in self.metrics_variables:
                variable.assign(jax.device_put(variable.value, device))


def assign_on_device(variable, value) -> None:
    """variable.assign(value), and on JAX the value placed on the device as every state array
    is after a step (an uncommitted array would be a new jax.jit signature: a compilation at
    the next fit's first step; see LastLossModel.reset_metrics)."""
    value = np.asarray(value, dtype=variable.dtype)
    if FRAMEWORK == "jax":
        import jax

        value = jax.device_put(value, jax.devices()[0])
    variable.assign(value)


class GatheringModel(LastLossModel):
    """On TensorFlow: fit's data are each step's sample indices; the batch is gathered from the
    resident training split on the device, then Keras' own train_step runs on it."""

    def train_step(self, data):
        import tensorflow as tf

        batch = (tf.gather(self.resident.x, data), tf.gather(self.resident.y, data))
        return super().train_step(batch)


def spec_adam(learning_rate: float, beta_1: float, beta_2: float, epsilon: float):
    """Keras' Adam (the backend's own variant) with the spec's epsilon placement.

    Keras: var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps_keras). With
    eps_keras = eps * sqrt(1 - b2^t) this is lr * m_hat / (sqrt(v_hat) + eps), the spec's update.
    Subclassing the class Keras picks for this backend keeps its fast path (torch: _foreach).
    """
    base = type(keras.optimizers.Adam())

    class SpecAdam(base):
        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            # The step's epsilon once, not once per variable: each access is five ops, which
            # run one by one in eager mode (keras-tensorflow's eager CIFAR CNN stepped x1.07 of
            # a bare loop with Keras' own Adam, docs/MEASUREMENTS.md). Set past Keras' attribute
            # tracking: it is a tensor of this step only.
            object.__setattr__(self, "step_epsilon", self.epsilon_at_step())
            try:
                super()._backend_update_step(grads, trainable_variables, learning_rate)
            finally:
                object.__setattr__(self, "step_epsilon", None)

        def update_step(self, gradient, variable, learning_rate):
            super().update_step(dense_gradient(gradient), variable, learning_rate)

        def epsilon_at_step(self):
            step = ops.cast(self.iterations + 1, "float32")
            return self.spec_epsilon * ops.sqrt(1.0 - ops.power(self.beta_2, step))

        @property
        def epsilon(self):
            cached = getattr(self, "step_epsilon", None)
            return self.epsilon_at_step() if cached is None else cached

        @epsilon.setter
        def epsilon(self, value: float) -> None:
            self.spec_epsilon = value

    return SpecAdam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def spec_sgd(spec: SGD):
    """Keras' SGD (the backend's own variant, torch's _foreach one included) with the spec's
    coupled weight decay: weight_decay * variable added to each gradient before Keras' update
    (Keras' own weight_decay is decoupled). Keras' momentum form equals torch's at a constant
    learning rate (bench/tasks.py's SGD)."""
    base = type(keras.optimizers.SGD())
    decay = spec.weight_decay

    class SpecSGD(base):
        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            if decay:
                grads = [
                    ops.add(dense_gradient(gradient), ops.multiply(variable, decay))
                    for gradient, variable in zip(grads, trainable_variables)
                ]
            super()._backend_update_step(grads, trainable_variables, learning_rate)

    return SpecSGD(learning_rate=spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov)


# One builder per optimizer spec
KERAS_OPTIMIZERS: dict[type, Callable] = {
    Adam: lambda spec: spec_adam(spec.learning_rate, spec.beta_1, spec.beta_2, spec.epsilon),
    SGD: spec_sgd,
}


def dense_gradient(gradient):
    """TensorFlow gives an Embedding's gradient as IndexedSlices, one row per lookup, and Keras'
    Adam squares those rows one by one: a token seen n times in a batch gets sum(g_i^2) as its
    second moment instead of (sum g_i)^2. Summed into a dense gradient first (as torch and JAX
    have it), the update is the spec's. Other gradients pass through unchanged."""
    if FRAMEWORK == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return gradient


class HostZeros(keras.initializers.Initializer):
    """Zeros made on the host, for every weight of the layers built here: load_weights
    overwrites each with the canonical initial weights (bench/init.py), so Keras' own initial
    values are never used, and on JAX each of Keras' random initializers compiles an XLA
    program per weight shape in eager mode (jax.random's uniform draw: 0.2-2 s each on one CPU
    core, 10 of a small ResNet's 11 s of model building, measured 2026-12-02). A numpy array
    becomes the variable's value with no computation in any backend."""

    def __call__(self, shape, dtype=None):
        try:
            numpy_dtype = np.dtype(keras.backend.standardize_dtype(dtype))
        except TypeError:  # bfloat16 (variables are float32 under mixed_bfloat16)
            numpy_dtype = np.float32
        return np.zeros(shape, numpy_dtype)


def host_initialized(*names: str) -> dict[str, HostZeros]:
    """The keyword arguments that give a Keras layer HostZeros for each of its initializers
    (`kernel` -> kernel_initializer=HostZeros())."""
    return {f"{name}_initializer": HostZeros() for name in names}


class KerasPositionEmbedding(keras.layers.Layer):
    """A learned (seq_len, dim) table added to the input."""

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight(
            shape=tuple(input_shape[1:]), initializer=HostZeros(), name="embeddings"
        )

    def call(self, x):
        return x + ops.cast(self.embeddings, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class KerasSelfAttention(keras.layers.Layer):
    """keras.layers.MultiHeadAttention as self-attention, padding keys masked out (Keras adds
    -1e9 to a masked score, so a text without tokens attends uniformly, as specified)."""

    def __init__(self, heads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, x_shape, padding_mask_shape=None) -> None:
        key_dim = x_shape[-1] // self.heads
        self.attention = keras.layers.MultiHeadAttention(
            self.heads, key_dim, dtype=self.dtype_policy, **host_initialized("kernel", "bias")
        )
        self.attention.build(x_shape, x_shape)

    def call(self, x, padding_mask):
        return self.attention(x, x, attention_mask=padding_mask[:, None, :])

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape


class KerasMaskedMeanPool(keras.layers.Layer):
    """The mean over the non-padding positions (a text without tokens pools to zeros; Keras'
    GlobalAveragePooling1D with a mask would divide by zero there)."""

    def call(self, x, padding_mask):
        weights = ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return (x_shape[0], x_shape[-1])


# A Keras weight's canonical name is its variable's name, except inside a layer made of
# sublayers: there the sublayer and variable name (the last two parts of its path) map to it.
KERAS_PARAM_NAMES = {
    f"{keras_name}/{param}": f"{canonical}_{param}"
    for keras_name, canonical in (
        ("query", "query"),
        ("key", "key"),
        ("value", "value"),
        ("attention_output", "output"),
    )
    for param in ("kernel", "bias")
}


def canonical_param(variable) -> str:
    return KERAS_PARAM_NAMES.get("/".join(variable.path.split("/")[-2:]), variable.name)


class KerasResidual(keras.layers.Layer):
    """activation(body(x) + shortcut(x)) over two lists of Keras layers (an empty shortcut is
    the identity); `training` reaches every sublayer, as Sequential passes it to its own."""

    def __init__(self, layer: Residual, body: list, shortcut: list, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer  # the IR block: which sublayers take the padding mask
        self.body_layers = body
        self.shortcut_layers = shortcut
        self.activation = keras.activations.get(layer.activation)

    def build(self, input_shape) -> None:
        for chain in (self.body_layers, self.shortcut_layers):
            shape = input_shape
            for layer in chain:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.body_layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def call(self, x, padding_mask=None, training=None):
        body = apply_chain(self.layer.body, self.body_layers, x, padding_mask, training)
        shortcut = apply_chain(self.layer.shortcut, self.shortcut_layers, x, padding_mask, training)
        return self.activation(ops.add(body, shortcut))


class ActivatedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (the IR's momentum convention, the biased variance, fp32
    statistics under mixed_bfloat16), then the IR layer's activation; its variables are named
    gamma, beta, moving_mean, moving_variance, as the canonical ones."""

    def __init__(self, activation: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)

    def call(self, inputs, training=None, mask=None):
        return self.activation(super().call(inputs, training=training, mask=mask))


def keras_residual(layer: Residual, dtype: str, use_cudnn: bool | str) -> KerasResidual:
    body = build_chain(layer.body, dtype, use_cudnn)
    shortcut = build_chain(layer.shortcut, dtype, use_cudnn)
    return KerasResidual(layer, body, shortcut, dtype=dtype)


# One builder per IR layer type: (layer, dtype policy, use_cudnn) -> the Keras layer. The
# canonical layout is Keras' own, so weights map unchanged (KERAS_PARAM_NAMES names them); every
# initializer is HostZeros (load_weights sets the canonical weights).
# A layer that uses the padding mask is called with `padding_mask=` (True at tokens).
KERAS_LAYERS: dict[type, Callable[[Any, str, bool | str], keras.Layer]] = {
    Conv2D: lambda layer, dtype, _: keras.layers.Conv2D(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,  # Keras' "same" pads the pixels the IR's does (TensorFlow's)
        activation=layer.activation,
        use_bias=layer.use_bias,
        dtype=dtype,
        **host_initialized("kernel", "bias"),
    ),
    MaxPool2D: lambda layer, dtype, _: keras.layers.MaxPooling2D(layer.pool_size, dtype=dtype),
    Flatten: lambda layer, dtype, _: keras.layers.Flatten(dtype=dtype),
    Dense: lambda layer, dtype, _: keras.layers.Dense(
        layer.units, activation=layer.activation, dtype=dtype, **host_initialized("kernel", "bias")
    ),
    Embedding: lambda layer, dtype, _: keras.layers.Embedding(
        layer.vocab_size, layer.dim, dtype=dtype, **host_initialized("embeddings")
    ),
    LSTM: lambda layer, dtype, use_cudnn: keras.layers.LSTM(
        layer.units,
        dtype=dtype,
        use_cudnn=use_cudnn,
        unit_forget_bias=False,  # an initial bias of ones: the canonical weights replace it
        **host_initialized("kernel", "recurrent", "bias"),
    ),
    PositionEmbedding: lambda layer, dtype, _: KerasPositionEmbedding(dtype=dtype),
    LayerNorm: lambda layer, dtype, _: keras.layers.LayerNormalization(
        epsilon=layer.epsilon, dtype=dtype, **host_initialized("beta", "gamma")
    ),
    MultiHeadSelfAttention: lambda layer, dtype, _: KerasSelfAttention(layer.heads, dtype=dtype),
    MaskedMeanPool: lambda layer, dtype, _: KerasMaskedMeanPool(dtype=dtype),
    Residual: keras_residual,
    BatchNorm: lambda layer, dtype, _: ActivatedBatchNormalization(
        layer.activation,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        dtype=dtype,
        **host_initialized("beta", "gamma", "moving_mean", "moving_variance"),
    ),
    GlobalAveragePooling2D: lambda layer, dtype, _: keras.layers.GlobalAveragePooling2D(
        dtype=dtype
    ),
}


def build_layers(task: TaskSpec, dtype: str, use_cudnn: bool | str = "auto") -> list[keras.Layer]:
    """The IR as Keras layers."""
    return build_chain(task.layers, dtype, use_cudnn)


def build_chain(layers: tuple[Layer, ...], dtype: str, use_cudnn: bool | str) -> list[keras.Layer]:
    built = []
    for layer in layers:
        build = KERAS_LAYERS.get(type(layer))
        if build is None:
            raise NotImplementedError(f"keras backend has no {type(layer).__name__}")
        built.append(build(layer, dtype, use_cudnn))
    return built


def canonical_variables(layers: tuple[Layer, ...], keras_layers: list, prefix: str = ""):
    """(canonical name, Keras variable) of every weight, in the canonical order: a Keras
    variable is named as the canonical parameter, and a Residual's are found under its path."""
    for index, (layer, keras_layer) in enumerate(zip(layers, keras_layers)):
        name = f"{prefix}{layer_name(index, layer)}"
        if isinstance(layer, Residual):
            yield from canonical_variables(layer.body, keras_layer.body_layers, f"{name}/body/")
            chain = keras_layer.shortcut_layers
            yield from canonical_variables(layer.shortcut, chain, f"{name}/shortcut/")
            continue
        for variable in keras_layer.weights:
            yield f"{name}/{canonical_param(variable)}", variable


def apply_layers(task: TaskSpec, keras_layers: list[keras.Layer], inputs):
    """The model's output from its input: each layer in turn, as keras.Sequential calls them,
    and the padding mask (computed once from the token ids) to those that take it."""
    mask = ops.not_equal(inputs, PAD_ID) if model_uses_padding_mask(task.layers) else None
    return apply_chain(task.layers, keras_layers, inputs, mask)


def apply_chain(layers: tuple[Layer, ...], keras_layers: list, x, mask, training=None):
    """A chain's Keras layers in turn; `padding_mask=` to those whose IR layer takes it."""
    for layer, keras_layer in zip(layers, keras_layers):
        kwargs = {} if training is None else {"training": training}
        if uses_padding_mask(layer):
            kwargs["padding_mask"] = mask
        x = keras_layer(x, **kwargs)
    return x


# What compile(jit_compile=True) is on each Keras backend, and what jit_compile=False is.
JIT_ON = {"tensorflow": "XLA", "jax": "jax.jit", "torch": "torch.compile(inductor)"}
JIT_OFF = {"tensorflow": "tf.function graph, no XLA", "jax": "no jax.jit", "torch": "eager"}
# How fit gets each step's batch (the module docstring says why).
FEED = {
    "tensorflow": "batches gathered on the device in train_step from a tf.data of indices",
    "jax": "batches gathered on the device by a generator (one jitted gather per step)",
    "torch": "batches gathered on the device by a generator (index_select per step)",
}
# What steps_per_execution > 1 makes of the steps (Keras' torch backend has none).
FUSED = {"tensorflow": "a tf.while_loop in one call", "jax": "a Python loop of jitted steps"}


def auto_jit_compile(task: TaskSpec, device: str, precision: str = "fp32") -> bool:
    """What compile's default jit_compile="auto" resolves to (Keras' _resolve_auto_jit_compile):
    off on torch; on TensorFlow off on a CPU-only machine and for a cuDNN LSTM; else on."""
    if FRAMEWORK == "torch" or (FRAMEWORK == "tensorflow" and device == "cpu"):
        return False
    return not cudnn_lstm(task, device, precision)


def compile_switches(requested_mode: str) -> dict[str, object]:
    """Keras' own switches per mode; `default` and `fused` keep Keras' default compilation."""
    if requested_mode == "eager":
        return {"run_eagerly": True, "jit_compile": False}
    if requested_mode == "compiled":
        return {"run_eagerly": False, "jit_compile": True}
    return {"run_eagerly": False, "jit_compile": "auto"}


def check_supported(mode: str, switches: dict, task: TaskSpec, config: RunConfig) -> None:
    if mode == "fused" and FRAMEWORK == "torch":
        raise Unsupported(
            "fused mode is Keras' steps_per_execution > 1, which Keras' torch backend does not "
            "support (Keras 3 raises 'steps_per_execution must be 1 with the PyTorch backend')"
        )
    if switches["jit_compile"] is True and cudnn_lstm(task, config.device, config.precision):
        raise Unsupported("Keras turns jit_compile off for a cuDNN LSTM on TensorFlow's GPU")


def seed_frameworks(seed: int) -> None:
    """Python's, numpy's and the framework's seeds. Not keras.utils.set_random_seed: it imports
    TensorFlow whenever it is installed, and a TensorFlow loaded beside torch or JAX (its thread
    pools, its own oneDNN) is a cost the Keras-on-torch/JAX rows must not carry. Nothing random
    is drawn in a run anyway: the weights come from bench/init.py and the model has no dropout."""
    random.seed(seed)
    np.random.seed(seed)
    if FRAMEWORK == "tensorflow":
        keras.utils.set_random_seed(seed)
    elif FRAMEWORK == "torch":
        import torch

        torch.manual_seed(seed)


class KerasBackend(BackendBase):
    framework = f"keras-{FRAMEWORK}"
    # What compile's defaults give Keras users: eager on torch, a compiled step elsewhere (on a
    # CPU-only TensorFlow that is a tf.function graph without XLA; the mechanism says which).
    default_mode = "eager" if FRAMEWORK == "torch" else "compiled"

    def __init__(self, config: RunConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self.switches = compile_switches(config.mode)
        self.steps_per_execution = config.window_steps if self.mode == "fused" else 1
        check_supported(self.mode, self.switches, task, config)
        # every framework call of this backend runs on its one thread (keras_windows says why)
        self.keras_thread = KerasThread()
        self.epoch_fit: EpochFit | None = None  # the epoch's fit, parked between windows
        self.on_keras_thread(self.init_framework)

    def on_keras_thread(self, function: Callable, *args, **kwargs):
        """`function(...)` on the Keras thread, which no parked fit may hold (end_fit first)."""
        assert self.epoch_fit is None, "a fit is parked on the Keras thread"
        return self.keras_thread.call(function, *args, **kwargs)

    def init_framework(self) -> None:
        """The framework's flags, device check, thread count and seeds (on the Keras thread)."""
        config, task = self.config, self.task
        threads = config.threads or os.cpu_count() or 1
        self.support = FRAMEWORK_SUPPORT[FRAMEWORK](config.device, config.precision, threads)
        seed_frameworks(config.seed)
        self.dtype_policy = "mixed_bfloat16" if config.precision == "bf16" else "float32"
        self.auto_jit = auto_jit_compile(task, config.device, config.precision)
        planned = self.switches["jit_compile"]
        self.mechanism = self.describe(self.auto_jit if planned == "auto" else planned)

    def describe(self, jit_compile: bool) -> str:
        """The mechanism column: Keras' switches as used, and what "auto" resolves to here."""
        if self.switches["run_eagerly"]:
            switch = "run_eagerly=True"
        else:
            resolved = JIT_ON[FRAMEWORK] if jit_compile else JIT_OFF[FRAMEWORK]
            switch = f"jit_compile={self.switches['jit_compile']!r} -> {jit_compile} ({resolved})"
        auto = JIT_ON[FRAMEWORK] if self.auto_jit else JIT_OFF[FRAMEWORK]
        steps = f"steps_per_execution={self.steps_per_execution}"
        if self.steps_per_execution > 1:
            steps += f" ({FUSED[FRAMEWORK]})"
        auto_note = f"Keras' default jit_compile='auto' is {self.auto_jit} ({auto}) here"
        parts = [f"fit, {switch}, {steps}", auto_note, FEED[FRAMEWORK]]
        config = self.config
        parts.append(describe_lstm(self.task, config.device, config.precision, jit_compile))
        if FRAMEWORK == "torch" and config.device == "cuda":
            parts.append("cudnn.benchmark=True")
        return "; ".join(part for part in parts if part)

    def versions(self) -> dict[str, str]:
        return {"keras": keras.__version__, **self.support.versions()}

    def device_name(self) -> str | None:
        return self.support.device_name()

    def setup(self, weights: Weights, data: datasets.Dataset) -> None:
        self.on_keras_thread(self.build, weights, data)

    def build(self, weights: Weights, data: datasets.Dataset) -> None:
        """The model, compiled, with the canonical weights, and the data on the device (on the
        Keras thread)."""
        task = self.task
        input_dtype = "int32" if np.issubdtype(data.x_train.dtype, np.integer) else "float32"
        inputs = keras.Input(shape=task.input_shape, dtype=input_dtype)
        use_cudnn = lstm_use_cudnn(self.config.device, self.config.precision)
        self.keras_layers = build_layers(task, self.dtype_policy, use_cudnn)
        model_class = GatheringModel if FRAMEWORK == "tensorflow" else LastLossModel
        self.model = model_class(inputs, apply_layers(task, self.keras_layers, inputs))
        self.load_weights(weights)
        self.model.compile(
            optimizer=KERAS_OPTIMIZERS[type(task.optimizer)](task.optimizer),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=self.steps_per_execution,
            **self.switches,
        )
        jit_compile = bool(self.model.jit_compile) and not self.model.run_eagerly
        if self.switches["jit_compile"] is True and not jit_compile:
            raise Unsupported(f"Keras turned jit_compile off for this model on {FRAMEWORK}")
        self.mechanism = self.describe(jit_compile)
        resident = self.support.resident  # one copy of each split on the device
        inputs = self.support.replaceable if task.augmentation is not None else resident
        self.model.resident = Resident(inputs(data.x_train), resident(data.y_train))
        # the test split staged like every backend's; evaluate compares predict's logits with
        # the labels on the host, so those stay there too
        self.x_test, self.y_test = resident(data.x_test), resident(data.y_test)
        self.test_labels = data.y_test

    def load_weights(self, weights: Weights) -> None:
        for key, variable in canonical_variables(self.task.layers, self.keras_layers):
            value = weights[key]
            assert tuple(variable.shape) == value.shape, (variable.path, value.shape)
            variable.assign(value)

    def get_weights(self) -> Weights:
        self.end_fit()
        return self.on_keras_thread(self.read_weights)

    def read_weights(self) -> Weights:
        return {
            key: np.array(ops.convert_to_numpy(variable), dtype=np.float32)  # a copy, never a view
            for key, variable in canonical_variables(self.task.layers, self.keras_layers)
        }

    def begin_epoch(
        self,
        permutation: np.ndarray,
        learning_rate: float | None = None,
        x_train: np.ndarray | None = None,
    ) -> None:
        """The epoch's order (on the device for JAX and torch, whose steps slice it there; on
        the host for TensorFlow, whose tf.data of indices reads it), and the epoch's fit,
        started and parked before its first step (its start-up is outside every window). A
        scheduled task's rate and an augmented split are set before that fit starts."""
        self.end_fit()
        self.check_recipe(learning_rate, x_train)
        if learning_rate is not None:
            self.on_keras_thread(self.set_learning_rate, learning_rate)
        if x_train is not None:
            resident = self.model.resident
            x = self.on_keras_thread(self.support.replace, resident.x, x_train)
            self.model.resident = Resident(x, resident.y)
        order = permutation.astype(np.int32)
        if FRAMEWORK != "tensorflow":
            order = self.on_keras_thread(self.support.resident, order)
        self.order = order
        self.epoch_size = len(permutation)
        self.epoch_steps = self.epoch_size // self.batch_size
        self.epoch_fit = self.start_fit(0)

    def set_learning_rate(self, learning_rate: float) -> None:
        """The optimizer's rate variable set (on the Keras thread, between fits). Keras' SGD
        velocity is -rate * torch's momentum buffer (bench/tasks.py's SGD), so at a new rate
        it is scaled by new / old to stay that: the update then equals torch's at every rate."""
        optimizer = self.model.optimizer
        variable = optimizer.learning_rate
        old = float(ops.convert_to_numpy(variable))
        momentums = getattr(optimizer, "momentums", None) or []  # built at the first step
        if momentums and learning_rate != old:
            if old == 0.0:
                raise ValueError(
                    "Keras' SGD velocity is lost at a zero learning rate; a schedule that "
                    "returns to a nonzero rate cannot be followed (torch keeps its buffer)"
                )
            for momentum in momentums:  # on the host: on JAX an op would compile per shape
                scaled = ops.convert_to_numpy(momentum.value) * (learning_rate / old)
                assign_on_device(momentum, scaled)
        assign_on_device(variable, learning_rate)

    def start_fit(self, first_step: int) -> EpochFit:
        """A fit over steps [first, epoch's end), parked before the first (the module docstring
        says what fit is given)."""
        steps, support = self.epoch_steps - first_step, self.support
        window = self.on_keras_thread(
            support.fit_input, self.model, self.order, first_step, steps, self.batch_size
        )
        spe, sync = self.steps_per_execution, self.support.window_loss
        thread, end = self.keras_thread, self.epoch_steps
        return EpochFit(thread, self.model, window, first_step, end, spe, sync)

    def end_fit(self) -> None:
        """End a fit parked mid-epoch (its remaining steps do not run); nothing if none is."""
        if self.epoch_fit is not None:
            self.epoch_fit.close()
            self.epoch_fit = None

    def run_steps(self, first_step: int, num_steps: int) -> float:
        """Release the epoch's fit for these steps; it parks again (device synchronized, last
        loss read) before the next window's first step, or returns after the epoch's last.
        Steps out of the order the fit is in (skipped, repeated, after the model was used for
        something else) end it and start a new fit from `first_step`, whose start-up then falls
        in this window: the worker never asks for that."""
        self.check_window(first_step, num_steps, self.epoch_size)
        epoch_fit = self.epoch_fit
        if epoch_fit is None or not epoch_fit.parked_before(first_step):
            self.end_fit()
            epoch_fit = self.epoch_fit = self.start_fit(first_step)
        epoch_fit.check_window(first_step, num_steps)
        try:
            return epoch_fit.run(first_step, num_steps)
        finally:
            if epoch_fit.finished:  # the epoch's end, or fit raised
                self.epoch_fit = None

    def logits(self, x) -> np.ndarray:
        """Keras' predict, on numpy or device tensors: float32 numpy logits (bf16 cast up)."""
        self.end_fit()  # never beside a parked fit (JAX's state is fit's while one is)
        logits = self.on_keras_thread(self.model.predict, x, batch_size=EVAL_BATCH, verbose=0)
        return np.asarray(logits, np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x)

    def evaluate(self) -> tuple[float, float]:
        """Accuracy and mean cross-entropy on the test split, from predict's logits."""
        logits = self.logits(self.x_test).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        labels = self.test_labels.astype(np.int64)
        loss = float(-log_probs[np.arange(len(labels)), labels].mean())
        return float((logits.argmax(axis=1) == labels).mean()), loss

    def memory_peak_bytes(self) -> int | None:
        return self.support.memory_peak_bytes()

    def reset_memory_peak(self) -> bool:
        return self.support.reset_memory_peak()

    def data_resident_bytes(self) -> int:
        tensors = (self.model.resident.x, self.model.resident.y, self.x_test, self.y_test)
        return sum(tensor_bytes(tensor) for tensor in tensors)

    def param_count(self) -> int:
        return int(sum(np.prod(variable.shape) for variable in self.model.trainable_weights))
