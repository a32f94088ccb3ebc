"""A convolution's train step inside lax.scan against the same step jitted alone, on XLA:CPU.

    taskset -c 1 python scan_conv.py

One 3x3 convolution, 64 -> 64 channels on a batch of 32 32x32 images (the size of ResNet-18's
first stage on CIFAR-10), NHWC, its gradient and an SGD update: `jit step` dispatches it once
per step, `scan of 2` runs two of them in one jitted lax.scan (what the JAX backend's fused mode
does with a window's steps). Prints the time per step of each, warm (compiled before timing),
alternating the two ROUNDS times. jax-ml/jax#12868 reports the same: convolutions inside a loop
body much slower on the CPU.
"""

import time

import jax
import jax.numpy as jnp

ROUNDS = 2
x = jnp.ones((32, 32, 32, 64))
w = jnp.ones((3, 3, 64, 64)) * 0.01


def loss(w, x):
    y = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return (y**2).mean()


grad = jax.grad(loss)


def step(w, _):
    return w - 0.01 * grad(w, x), None


one = jax.jit(lambda w: step(w, None)[0])
two = jax.jit(lambda w: jax.lax.scan(step, w, None, length=2)[0])
for f in (one, two):
    f(w).block_until_ready()
for _ in range(ROUNDS):
    for name, f, n in (("jit step", one, 1), ("scan of 2", two, 2)):
        start, r = time.perf_counter(), w
        for _ in range(5):
            r = f(r)
        r.block_until_ready()
        print(name, f"{(time.perf_counter() - start) / (5 * n) * 1e3:.1f} ms per step", flush=True)
