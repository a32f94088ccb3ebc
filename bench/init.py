"""Framework-neutral initial weights, made in numpy from the IR and the run's seed.

Every backend loads these (converting from the canonical layout of bench/layers.py once, at
load), so all frameworks start from bit-identical float32 weights. The schemes are Keras'
defaults, written out here so no framework's initializer is involved:
  Conv2D / Dense kernels: Glorot uniform; biases: zeros;
  BatchNorm: gamma ones, beta zeros, moving mean zeros, moving variance ones;
  Embedding: uniform(-0.05, 0.05);
  LSTM: kernel Glorot uniform, recurrent kernel orthogonal, bias zeros with the forget gate at 1;
  PositionEmbedding: uniform(-0.05, 0.05), as Keras' Embedding; LayerNorm: gamma ones, beta
  zeros (every framework's default);
  MultiHeadSelfAttention: each kernel Glorot uniform with the fans of the (dim, dim) matrix it
  is (Keras would take the fans of its 3-d shape, which weighs heads and head_dim unevenly),
  biases zeros.
Each layer draws from its own generator seeded with (seed, layer index), so adding a layer
never changes the weights of the layers before it; a layer inside a Residual is seeded with its
path, (seed, block index, branch + 1, index in the branch + 1, ...): the +1s keep a nested
path from ending in 0, which SeedSequence would not tell apart from the shorter path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bench.layers import (
    LSTM,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Layer,
    LayerNorm,
    MultiHeadSelfAttention,
    PositionEmbedding,
    Residual,
    Shape,
    layer_name,
    trace_shapes,
)

Weights = dict[str, np.ndarray]


def glorot_uniform(rng: np.random.Generator, shape: Shape, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def orthogonal(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """A (rows, columns) matrix with orthonormal rows or columns, as Keras' Orthogonal makes it."""
    tall = rng.standard_normal((max(rows, columns), min(rows, columns)))
    q, r = np.linalg.qr(tall)
    q *= np.sign(np.diag(r))
    return (q if rows >= columns else q.T).astype(np.float32)


def dense_like(rng: np.random.Generator, layer: Conv2D | Dense, shapes: dict) -> Weights:
    """Conv2D and Dense: a Glorot-uniform kernel (fans from its receptive field), zero bias."""
    kernel_shape = shapes["kernel"]
    receptive = int(np.prod(kernel_shape[:-2]))  # kh * kw for a conv, 1 for a dense kernel
    fan_in, fan_out = receptive * kernel_shape[-2], receptive * kernel_shape[-1]
    weights = {"kernel": glorot_uniform(rng, kernel_shape, fan_in, fan_out)}
    if "bias" in shapes:  # a Conv2D with use_bias=False has none
        weights["bias"] = np.zeros(shapes["bias"], np.float32)
    return weights


def batch_norm(rng: np.random.Generator, layer: BatchNorm, shapes: dict) -> Weights:
    """Parameters and moving statistics (the state comes with the weights: every backend loads
    and exports both)."""
    (channels,) = shapes["gamma"]
    ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    return {
        "gamma": ones,
        "beta": zeros,
        "moving_mean": zeros.copy(),
        "moving_variance": ones.copy(),
    }


def embedding(
    rng: np.random.Generator, layer: Embedding | PositionEmbedding, shapes: dict
) -> Weights:
    return {"embeddings": rng.uniform(-0.05, 0.05, size=shapes["embeddings"]).astype(np.float32)}


def layer_norm(rng: np.random.Generator, layer: LayerNorm, shapes: dict) -> Weights:
    return {
        "gamma": np.ones(shapes["gamma"], np.float32),
        "beta": np.zeros(shapes["beta"], np.float32),
    }


def self_attention(
    rng: np.random.Generator, layer: MultiHeadSelfAttention, shapes: dict
) -> Weights:
    """Each kernel is a (dim, dim) projection in a 3-d layout: Glorot over dim and dim."""
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("kernel"):
            dim = math.isqrt(math.prod(shape))  # dim * heads * head_dim = dim * dim
            weights[name] = glorot_uniform(rng, shape, dim, dim)
        else:
            weights[name] = np.zeros(shape, np.float32)
    return weights


def lstm(rng: np.random.Generator, layer: LSTM, shapes: dict) -> Weights:
    features, gates = shapes["kernel"]
    bias = np.zeros(gates, np.float32)
    bias[layer.units : 2 * layer.units] = 1.0  # forget gate (order i, f, g, o)
    return {
        "kernel": glorot_uniform(rng, shapes["kernel"], features, gates),
        "recurrent_kernel": orthogonal(rng, layer.units, gates),
        "bias": bias,
    }


# One initializer per IR layer type with parameters: (rng, layer, canonical shapes) -> weights.
# A layer type without parameters needs no entry.
INITIALIZERS: dict[type, Callable[[np.random.Generator, Layer, dict], Weights]] = {
    Conv2D: dense_like,
    Dense: dense_like,
    Embedding: embedding,
    LSTM: lstm,
    PositionEmbedding: embedding,
    LayerNorm: layer_norm,
    MultiHeadSelfAttention: self_attention,
    BatchNorm: batch_norm,
}


def layer_weights(rng: np.random.Generator, layer: Layer, input_shape: Shape) -> Weights:
    shapes = layer.param_shapes(input_shape)
    if hasattr(layer, "state_shapes"):
        shapes = {**shapes, **layer.state_shapes(input_shape)}
    initializer = INITIALIZERS.get(type(layer))
    if initializer is None:
        assert not shapes, f"no initializer for {type(layer).__name__}"
        return {}
    return initializer(rng, layer, shapes)


def initial_weights(layers: tuple[Layer, ...], input_shape: Shape, seed: int) -> Weights:
    """`<layer name>/<param>` -> float32 array in the canonical layout, in layer order: the
    parameters and the state (bench.layers.variable_shapes)."""
    return chain_weights(layers, input_shape, [seed])


def chain_weights(layers: tuple[Layer, ...], input_shape: Shape, path: list[int]) -> Weights:
    """The weights of a chain whose generators are seeded with `path` + (index,)."""
    weights: Weights = {}
    nested = len(path) > 1  # inside a Residual: indices count from 1 (module docstring)
    for index, (layer, (in_shape, _)) in enumerate(zip(layers, trace_shapes(layers, input_shape))):
        layer_path = [*path, index + nested]
        if isinstance(layer, Residual):
            params = residual_weights(layer, in_shape, layer_path)
        else:
            params = layer_weights(np.random.default_rng(layer_path), layer, in_shape)
        for param, value in params.items():
            weights[f"{layer_name(index, layer)}/{param}"] = value
    return weights


def residual_weights(layer: Residual, input_shape: Shape, path: list[int]) -> Weights:
    """`body/...` then `shortcut/...`, each chain seeded below the block's own path."""
    weights: Weights = {}
    for number, (branch, layers) in enumerate(layer.branches(), start=1):
        for key, value in chain_weights(layers, input_shape, [*path, number]).items():
            weights[f"{branch}/{key}"] = value
    return weights


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The order in which every backend visits the training set in `epoch` (0-based)."""
    rng = np.random.default_rng([seed, 1_000_003, epoch])
    return rng.permutation(num_samples).astype(np.int32)
