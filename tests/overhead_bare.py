"""The bare loops of `tests/overhead.py`: each task's model trained with a framework's own API
and nothing of the harness, one loop per framework and mode, written as a skilled user of that
framework would write it.

    python tests/overhead_bare.py '<spec JSON>'     (tests/overhead.py starts it, one process)

The spec (made by tests/overhead.py from bench/tasks.py) names the framework, the mode, the
model ("small_cnn", "cifar_cnn" or "lstm"), the input shape, batch size, Adam's hyperparameters,
the window length W, the steps per epoch and the epochs. Every loop:
  - makes synthetic data of the task's shapes (images uniform in [0, 1), tokens uniform in
    [2, vocab), labels uniform) and places it on the device once;
  - draws a permutation on the device at the start of each epoch (outside every window) and
    gathers each step's batch there from it, inside the timed steps;
  - trains the task's model (the framework's own layers and default initializers, except
    torch's LSTM model, initialized with the spec's schemes: with torch's defaults its
    gradients underflow into subnormal floats on IMDB's 200 tokens, 14x slower a step on a
    CPU; Keras' defaults are the spec's; Flax's show no such slowdown, measured) with Adam as
    the task spec says: lr, betas, eps 1e-8 added to sqrt(v_hat) (torch's and optax's Adam; for
    Keras its own Adam, whose epsilon sits before the bias correction: a difference of 1e-8 in
    a denominator, nothing a timing can see);
  - times windows of W steps, each ended by a device sync (torch `loss.item()`, JAX
    `float(loss)`, Keras' logs read to the host), and prints one JSON line: every window's
    seconds per step and the median over the windows after the first three (the first holds
    the compilation; the harness's worker also leaves out its first window and two warm-up
    windows).

Per framework and mode:
  torch eager     nn.Module + torch.optim.Adam(fused=True): the fastest Adam torch has on a
                  CPU (its default there is a loop over the tensors, 3x slower on the text
                  model's embedding, measured)
  torch compiled  torch.compile of the whole train step function (forward, loss, backward,
                  Adam step, zero_grad) with the default Adam; dynamo breaks the graph at
                  backward (AOTAutograd compiles forward and backward together) and compiles the
                  optimizer step as graphs of its own (PyTorch's "compiled optimizer")
  jax compiled    one jax.jit train step (Flax linen, optax.adam), state donated
  jax fused       one jax.jit of a lax.scan over a window's W steps, state donated
  jax eager       the compiled mode's train step under jax.disable_jit (op by op)
  Keras           model.fit of a keras.Sequential, one fit per epoch on the epoch's data
                  (gathered on the device from the epoch's permutation; fit slices its
                  batches), steps timed by a Callback that timestamps every W steps from the
                  logs it is handed (already read to the host, so the device has finished
                  those steps), so fit's start-up is never inside a window; modes are
                  compile()'s switches: default = compile's defaults, eager = run_eagerly=True,
                  compiled = jit_compile=True, fused = steps_per_execution=W
The LSTM model takes the last hidden state of an LSTM over the embedded tokens: torch nn.LSTM
(batch first; its two bias vectors are one more than the IR's single bias, 512 parameters),
Flax nn.RNN(nn.OptimizedLSTMCell) (its carry's hidden state), keras.layers.LSTM.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

VOCAB_START = 2  # token ids 0 (pad) and 1 (unknown) are never drawn, as in the harness's twins
SKIPPED_EXIT = 3  # exit status of a loop asked for a mode its framework lacks


class Lacks(Exception):
    """The framework has no such mode here (the driver then takes the harness's reason)."""


def synthetic(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec["seed"])
    count = spec["steps_per_epoch"] * spec["batch_size"]
    shape = (count, *spec["input_shape"])
    if spec["model"] == "lstm":
        x = rng.integers(VOCAB_START, spec["vocab_size"], shape, dtype=np.int32)
    else:
        x = rng.random(shape, dtype=np.float32)
    return x, rng.integers(0, spec["num_classes"], count, dtype=np.int32)


def steady_median(window_seconds: list[float], spec: dict) -> dict:
    """The printed result: per-step seconds of every window, and the median after the first 3."""
    per_step = [seconds / spec["window_steps"] for seconds in window_seconds]
    steady = per_step[spec["skip_windows"] :]
    if not steady:
        raise RuntimeError(f"{len(per_step)} windows leave no steady window")
    return {"step_ms": 1e3 * float(np.median(steady)), "window_step_s": per_step}


def timed_windows(run_window, spec: dict, begin_epoch) -> list[float]:
    """Wall seconds of each window: `run_window(epoch_step, steps)` runs and synchronizes."""
    windows = []
    for epoch in range(spec["epochs"]):
        begin_epoch(epoch)
        for first in range(0, spec["steps_per_epoch"], spec["window_steps"]):
            clock = time.perf_counter()
            run_window(first, spec["window_steps"])
            windows.append(time.perf_counter() - clock)
    return windows


# --- torch -------------------------------------------------------------------------------------


def torch_model(spec: dict):
    import torch
    from torch import nn

    if spec["model"] != "lstm":
        height, width, channels = spec["input_shape"]
    if spec["model"] == "small_cnn":
        flat = 32 * ((height - 2) // 2) * ((width - 2) // 2)
        return nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, spec["num_classes"]),
        )  # fmt: skip
    if spec["model"] == "cifar_cnn":
        size = ((height - 2) // 2 - 2) // 2 - 2
        return nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * size * size, 64), nn.ReLU(), nn.Linear(64, spec["num_classes"]),
        )  # fmt: skip

    class TextLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(spec["vocab_size"], spec["embedding_dim"])
            self.lstm = nn.LSTM(spec["embedding_dim"], spec["units"], batch_first=True)
            self.head = nn.Linear(spec["units"], spec["num_classes"])
            # The spec's schemes (Keras' defaults, bench/init.py) through torch's initializers.
            # With torch's own (recurrent weights uniform in +-1/sqrt(units)) the gradients
            # through IMDB's 200 tokens underflow into subnormal floats, which a CPU computes
            # slowly: 1.67 s a step against 0.12 s (1 thread, one core; `torch.set_flush_denormal`
            # gives 0.12 s too). The harness's weights are the spec's, so this loop's must be.
            units = spec["units"]
            with torch.no_grad():
                nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
                nn.init.xavier_uniform_(self.lstm.weight_ih_l0)  # fans (in, 4 units), as Keras'
                nn.init.orthogonal_(self.lstm.weight_hh_l0)  # Keras' (units, 4 units), transposed
                self.lstm.bias_ih_l0.zero_()
                self.lstm.bias_hh_l0.zero_()
                self.lstm.bias_ih_l0[units : 2 * units] = 1.0  # forget gate (order i, f, g, o)
                nn.init.xavier_uniform_(self.head.weight)
                self.head.bias.zero_()

        def forward(self, tokens):
            _, (hidden, _) = self.lstm(self.embedding(tokens))
            return self.head(hidden[-1])

    return TextLSTM()


def bare_torch(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    device = torch.device(spec["device"])
    if spec["mode"] == "fused":
        raise Lacks("torch has no fused mode on cpu (the harness's is a CUDA graph)")
    x_host, y_host = synthetic(spec)
    if x_host.ndim == 4:
        x_host = np.ascontiguousarray(x_host.transpose(0, 3, 1, 2))  # NCHW, torch's layout
    x = torch.from_numpy(x_host).to(device)
    y = torch.from_numpy(y_host).to(device, torch.int64)
    model = torch_model(spec).to(device)
    # eager: Adam's fused kernel (one pass over each parameter; on the text model's 2.6M-weight
    # embedding 3x faster on a CPU than the default per-tensor loop); compiled: the default,
    # which torch.compile turns into its own fused kernels
    fused = {"fused": True} if spec["mode"] == "eager" else {}
    optimizer = torch.optim.Adam(
        model.parameters(), lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"], **fused
    )
    batch = spec["batch_size"]

    def train_step(index):
        loss = F.cross_entropy(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if spec["mode"] == "compiled":
        train_step = torch.compile(train_step)
    state = {}

    def begin_epoch(epoch):
        state["permutation"] = torch.randperm(len(y), device=device)

    def run_window(first, steps):
        permutation = state["permutation"]
        for step in range(first, first + steps):
            loss = train_step(permutation[step * batch : (step + 1) * batch])
        loss.item()

    params = sum(p.numel() for p in model.parameters())
    return steady_median(timed_windows(run_window, spec, begin_epoch), spec) | {"params": params}


# --- jax ---------------------------------------------------------------------------------------


def flax_model(spec: dict):
    from flax import linen as nn

    classes = spec["num_classes"]
    if spec["model"] == "lstm":

        class TextLSTM(nn.Module):
            @nn.compact
            def __call__(self, tokens):
                x = nn.Embed(spec["vocab_size"], spec["embedding_dim"])(tokens)
                (_, hidden), _ = nn.RNN(nn.OptimizedLSTMCell(spec["units"]), return_carry=True)(x)
                return nn.Dense(classes)(hidden)

        return TextLSTM()
    convolutions = (32,) if spec["model"] == "small_cnn" else (32, 64, 64)

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for index, filters in enumerate(convolutions):
                x = nn.relu(nn.Conv(filters, (3, 3), padding="VALID")(x))
                if index < 2:
                    x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
            return nn.Dense(classes)(x)

    return CNN()


def bare_jax(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_default_matmul_precision", "highest")  # fp32, as the harness's
    model = flax_model(spec)
    x_host, y_host = synthetic(spec)
    x, y = jnp.asarray(x_host), jnp.asarray(y_host)
    params = model.init(jax.random.key(spec["seed"]), x[:1])["params"]
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    optimizer = optax.adam(spec["lr"], *spec["betas"], eps=spec["eps"])
    batch, window = spec["batch_size"], spec["window_steps"]

    def train_step(state, data, step):
        params, opt_state = state
        x, y, permutation = data
        index = jax.lax.dynamic_slice_in_dim(permutation, step * batch, batch)

        def loss_of(params):
            logits = model.apply({"params": params}, x[index])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[index]).mean()

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def window_steps(state, data, first):
        steps = first + jnp.arange(window)
        state, losses = jax.lax.scan(lambda s, step: train_step(s, data, step), state, steps)
        return state, losses[-1]

    jitted_step = jax.jit(train_step, donate_argnums=0)
    fused_window = jax.jit(window_steps, donate_argnums=0)
    holder = {"state": (params, optimizer.init(params)), "key": jax.random.key(spec["seed"] + 1)}

    def begin_epoch(epoch):
        holder["key"], key = jax.random.split(holder["key"])
        holder["permutation"] = jax.random.permutation(key, len(y_host))

    def run_window(first, steps):
        state, data = holder["state"], (x, y, holder["permutation"])
        if spec["mode"] == "fused":
            state, loss = fused_window(state, data, first)
        elif spec["mode"] == "compiled":
            for step in range(first, first + steps):
                state, loss = jitted_step(state, data, step)
        else:
            for step in range(first, first + steps):
                state, loss = train_step(state, data, step)
        holder["state"] = state
        float(loss)

    if spec["mode"] == "eager":
        with jax.disable_jit():
            windows = timed_windows(run_window, spec, begin_epoch)
    else:
        windows = timed_windows(run_window, spec, begin_epoch)
    return steady_median(windows, spec) | {"params": count}


# --- Keras -------------------------------------------------------------------------------------


def keras_model(spec: dict):
    import keras
    from keras import layers

    classes = spec["num_classes"]
    if spec["model"] == "lstm":
        body = [
            keras.Input(spec["input_shape"], dtype="int32"),
            layers.Embedding(spec["vocab_size"], spec["embedding_dim"]),
            layers.LSTM(spec["units"]),
        ]
    else:
        body = [keras.Input(spec["input_shape"]), layers.Conv2D(32, 3, activation="relu")]
        body.append(layers.MaxPooling2D(2))
        if spec["model"] == "cifar_cnn":
            body.append(layers.Conv2D(64, 3, activation="relu"))
            body.append(layers.MaxPooling2D(2))
            body.append(layers.Conv2D(64, 3, activation="relu"))
        body.append(layers.Flatten())
        body.append(layers.Dense(64, activation="relu"))
    return keras.Sequential([*body, layers.Dense(classes)])


def bare_keras(spec: dict) -> dict:
    import keras

    framework = keras.backend.backend()
    mode, window = spec["mode"], spec["window_steps"]
    if mode == "fused" and framework == "torch":
        raise Lacks("Keras' torch backend has no steps_per_execution > 1")
    switches = {
        "default": {},
        "eager": {"run_eagerly": True},
        "compiled": {"jit_compile": True},
        "fused": {"steps_per_execution": window},
    }[mode]
    model = keras_model(spec)
    model.compile(
        optimizer=keras.optimizers.Adam(
            spec["lr"], beta_1=spec["betas"][0], beta_2=spec["betas"][1], epsilon=spec["eps"]
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **switches,
    )
    x_host, y_host = synthetic(spec)
    x, y = keras.ops.convert_to_tensor(x_host), keras.ops.convert_to_tensor(y_host)
    stamps: dict[int, float] = {}  # steps done in the epoch -> when

    class WindowClock(keras.callbacks.Callback):
        """Timestamps the start of each epoch's steps and the end of every W-th step. The logs
        fit hands on_train_batch_end are already host numbers, so those steps have finished.
        async_safe keeps Keras' asynchronous log dispatch (JAX, torch: a thread pool reads each
        step's logs to the host) as it is without this callback; the stamps are keyed by step,
        so the pool's order does not matter."""

        async_safe = True

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                stamps[0] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % window == 0:
                float(logs["loss"])
                stamps[batch + 1] = time.perf_counter()

    clock = WindowClock()
    windows, fit_costs = [], []
    generator = np.random.default_rng(spec["seed"] + 1)
    for _ in range(spec["epochs"]):
        order = keras.ops.convert_to_tensor(generator.permutation(len(y_host)).astype(np.int32))
        x_epoch, y_epoch = keras.ops.take(x, order, axis=0), keras.ops.take(y, order, axis=0)
        stamps.clear()
        before = time.perf_counter()
        model.fit(
            x_epoch,
            y_epoch,
            batch_size=spec["batch_size"],
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[clock],
        )
        after = time.perf_counter()
        ends = range(0, spec["steps_per_epoch"] + 1, window)
        if sorted(stamps) != list(ends):
            raise RuntimeError(f"timestamps after steps {sorted(stamps)}, expected {list(ends)}")
        windows += [stamps[end] - stamps[end - window] for end in ends[1:]]
        fit_costs.append(after - before - (stamps[ends[-1]] - stamps[0]))
    params = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    # fit's own cost per call, outside the steps (start-up and end); the harness pays it once
    # per window, inside the window (its Keras windows are fit calls), the bare loop once an
    # epoch, outside every window. The first epoch's includes building the train function.
    fit_ms = 1e3 * float(np.median(fit_costs[1:] or fit_costs))
    return steady_median(windows, spec) | {"params": params, "extra": {"fit_call_ms": fit_ms}}


def main() -> int:
    spec = json.loads(sys.argv[1])
    framework = spec["framework"]
    function = {"torch": bare_torch, "jax": bare_jax}.get(framework, bare_keras)
    if framework.startswith("keras-") and os.environ.get("KERAS_BACKEND") != framework[6:]:
        raise RuntimeError(f"KERAS_BACKEND is {os.environ.get('KERAS_BACKEND')!r}")
    try:
        result = function(spec)
    except Lacks as reason:
        print(json.dumps({"lacks": str(reason)}))
        return SKIPPED_EXIT
    if not math.isfinite(result["step_ms"]):
        raise RuntimeError(f"step time {result['step_ms']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
