"""Does the harness add cost of its own? Its step time against a bare hand-written loop.

    python tests/overhead.py [--backends torch,jax,...] [--modes eager,compiled,...] [--device cpu]
    make overhead                       (the same, every installed backend and mode, on cpu)

For each backend and mode, on the MNIST CNN (batch 64, synthetic data of MNIST's shapes):
  harness  `bench run` (a fresh worker process, the harness's windows, its median step time)
  bare     a loop written here from the framework's own API, with no harness code at all: the
           same model, optimizer, batch gathering from a permutation on the device, windows of
           the same length ended by a device sync, median over windows
Both run in a fresh process with the same environment; they alternate, three times each, and the best
median of each side is compared (the best is the least disturbed by a busy machine). The table
printed at the end is what docs/MEASUREMENTS.md's overhead section quotes. Nothing here is asserted: it is
a measurement.

The bare loops, one per framework, are the `bare_*` functions below; `--bare` runs one alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAIN = 12800
BATCH = 64
WINDOW = 25
WARMUP_STEPS = 50
REPEATS = 3  # harness and bare alternate, REPEATS times each; the best of each is compared


def windows_median(step, steps: int, sync) -> float:
    """Median ms/step over windows of WINDOW steps after WARMUP_STEPS, each ended by `sync`."""
    result = None
    for index in range(WARMUP_STEPS):
        result = step(index)
    sync(result)
    times = []
    for first in range(WARMUP_STEPS, steps - WINDOW + 1, WINDOW):
        clock = time.perf_counter()
        for index in range(first, first + WINDOW):
            result = step(index)
        sync(result)
        times.append((time.perf_counter() - clock) / WINDOW)
    return 1e3 * float(np.median(times))


def bare_torch(mode: str, steps: int, device: str) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    dev = torch.device(device)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(5408, 64), nn.ReLU(), nn.Linear(64, 10),
    ).to(dev)  # fmt: skip
    x = torch.rand(TRAIN, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (TRAIN,), device=dev)
    fused = {"fused": True} if device == "cuda" else {"foreach": True}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8, **fused)

    def forward_loss(inputs, labels):
        return F.cross_entropy(model(inputs), labels)

    if mode == "compiled":
        forward_loss = torch.compile(forward_loss, dynamic=False)
    permutation = torch.randperm(TRAIN, device=dev)
    per_epoch = TRAIN // BATCH

    def step(index):
        index %= per_epoch
        batch = permutation[index * BATCH : (index + 1) * BATCH]
        loss = forward_loss(x[batch], y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return windows_median(step, steps, lambda loss: loss.item())


def bare_jax(mode: str, steps: int, device: str) -> float:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen

    jax.config.update("jax_default_matmul_precision", "highest")

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.relu(linen.Conv(32, (3, 3), padding="VALID")(x))
            x = linen.max_pool(x, (2, 2), strides=(2, 2))
            x = linen.relu(linen.Dense(64)(x.reshape(x.shape[0], -1)))
            return linen.Dense(10)(x)

    net = Net()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((TRAIN, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, TRAIN).astype(np.int32))
    permutation = jnp.asarray(rng.permutation(TRAIN).astype(np.int32))
    params = net.init(jax.random.key(0), x[:1])["params"]
    optimizer = optax.adam(1e-3, eps=1e-8)
    state = (params, optimizer.init(params))

    def train_step(state, step):
        params, opt_state = state
        batch = jax.lax.dynamic_slice_in_dim(permutation, step * BATCH, BATCH)

        def loss_of(p):
            logits = net.apply({"params": p}, x[batch])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[batch]).mean()

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    per_epoch = TRAIN // BATCH
    holder = {"state": state}
    if mode == "fused":

        def window(state, first):
            return jax.lax.scan(train_step, state, first + jnp.arange(WINDOW))

        fused = jax.jit(window, donate_argnums=0)

        def run(index):  # one call runs a whole window: count calls as windows
            holder["state"], losses = fused(
                holder["state"], (index * WINDOW) % (per_epoch - WINDOW)
            )
            return losses[-1]

        for index in range(3):
            loss = run(index)
        float(loss)
        times = []
        for index in range(3, steps // WINDOW):
            clock = time.perf_counter()
            float(run(index))
            times.append((time.perf_counter() - clock) / WINDOW)
        return 1e3 * float(np.median(times))
    jitted = jax.jit(train_step, donate_argnums=0)

    def step(index):
        holder["state"], loss = jitted(holder["state"], index % per_epoch)
        return loss

    if mode == "eager":  # op by op, as the harness's eager mode runs it

        def eager_step(index):
            holder["state"], loss = train_step(holder["state"], index % per_epoch)
            return loss

        with jax.disable_jit():
            return windows_median(eager_step, WARMUP_STEPS + 4 * WINDOW, float)
    return windows_median(step, steps, float)


def bare_keras(mode: str, steps: int, device: str) -> float:
    """A bare `fit`: Keras' own Sequential, Adam and loss, one fit over the whole data set."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((TRAIN, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, TRAIN).astype(np.int32)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    switches = {"eager": {"run_eagerly": True}, "compiled": {"jit_compile": True}}.get(mode, {})
    if mode == "fused":
        switches = {"steps_per_execution": WINDOW}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **switches,
    )
    model.fit(x[: WARMUP_STEPS * BATCH], y[: WARMUP_STEPS * BATCH], batch_size=BATCH, verbose=0)
    per_fit = TRAIN // BATCH
    times = []
    for _ in range(max(1, steps // per_fit)):
        clock = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        times.append((time.perf_counter() - clock) / per_fit)
    return 1e3 * float(np.median(times))


def run_bare(backend: str, mode: str, device: str, steps: int) -> float:
    """The bare loop in a fresh process with the worker's environment."""
    from bench.cell import worker_environment
    from bench.config import RunConfig

    config = RunConfig(task="mnist_cnn", backend=backend, mode=mode, device=device, threads=2)
    env = worker_environment(config)
    command = [sys.executable, __file__, "--bare", backend, mode, device, str(steps)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"bare {backend} {mode}: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def run_harness(backend: str, mode: str, device: str, epochs: int) -> tuple[float | None, str]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "bench", "run", "--tasks", "mnist_cnn", "--backends"]
        command += [backend, "--mode", mode, "--device", device, "--data", "synthetic"]
        command += ["--train-limit", str(TRAIN), "--test-limit", "256", "--epochs", str(epochs)]
        command += ["--threads", "2", "--out", out, "--run-id", "x"]
        subprocess.run(command, capture_output=True, text=True, check=False)
        with open(Path(out) / "x" / "results.csv", newline="") as handle:
            row = next(csv.DictReader(handle))
    median = row["step_time_median_ms"]
    return (float(median) if median else None), row["status"] + " " + row["error"][-200:]


def main() -> None:
    if sys.argv[1:2] == ["--bare"]:
        backend, mode, device, steps = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        framework = "keras" if backend.startswith("keras") else backend
        function = {"torch": bare_torch, "jax": bare_jax, "keras": bare_keras}[framework]
        print(function(mode, steps, device))
        return
    from backends import BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--modes", default="eager,compiled,fused")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args()
    rows = []
    print("| backend | mode | harness ms/step | bare ms/step | harness / bare |")
    print("|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for mode in args.modes.split(","):
            harness, bare, note = [], [], ""
            for _ in range(REPEATS):
                median, note = run_harness(backend, mode, args.device, args.epochs)
                if median is None:
                    break
                harness.append(median)
                bare.append(run_bare(backend, mode, args.device, args.epochs * TRAIN // BATCH))
            if not harness:
                print(f"| {backend} | {mode} | {note.strip()} | | |")
                continue
            ratio = min(harness) / min(bare)
            rows.append(dict(backend=backend, mode=mode, harness_ms=harness, bare_ms=bare))
            print(
                f"| {backend} | {mode} | {min(harness):.2f} | {min(bare):.2f} | {ratio:.3f} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
