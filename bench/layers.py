"""The small model IR that task specs are written in.

Each layer is a frozen dataclass that knows, from its input shape (per sample, no batch axis):
its output shape, the shapes of its parameters in the canonical layout, and its forward FLOPs.
Backends build each layer once in their framework; `bench/init.py` makes the weights in numpy.

Canonical layout (DESIGN.md, fairness invariant 2):
  activations NHWC; Conv2D kernel HWIO (kh, kw, in, out); Dense kernel (in, out);
  LSTM kernel (in, 4*units) and recurrent_kernel (units, 4*units), gates in the order i, f, g, o,
  one bias (4*units,); Embedding table (vocab, dim); Flatten flattens H, W, C in that order;
  PositionEmbedding table (seq_len, dim); LayerNorm gamma and beta (dim,); self-attention
  query/key/value kernels (dim, heads, head_dim) and biases (heads, head_dim), output kernel
  (heads, head_dim, dim) and bias (dim,) (Keras' and Flax's own layout).

Text inputs are token ids, 0 being padding (bench/data/text.py). Layers whose
`uses_padding_mask` is true (self-attention, the masked mean pool) also take the padding mask,
`tokens != PAD_ID`, which a backend's model computes once from its input (DESIGN.md, "The
padding mask").

FLOPs count a multiply-add as 2 and count matrix products only (convolutions, dense layers, the
LSTM's, attention's): activations, normalization, pooling, additions and the loss are left out,
as torch.utils.flop_counter counts (tests/test_flops.py holds the two together).

A `Residual` holds two chains of layers (body, shortcut) and adds their outputs; its weights are
named by their path: `<index>_residual/body/<j>_<type>/<param>` (and `/shortcut/`), so every
function here recurses through it and a backend finds a nested weight by that path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from bench.data.registry import PAD_ID

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Conv2D:
    """A 2-d convolution, stride `strides` in both axes, with an optional bias.

    padding "valid": no padding, output (H - k) // s + 1. padding "same": output ceil(H / s),
    padded with zeros as TensorFlow, XLA and Keras pad: in each axis
    total = max((ceil(H / s) - 1) * s + k - H, 0) pixels, total // 2 before (top / left) and
    the rest after (bottom / right), so an odd total puts the extra pixel at the bottom and the
    right (a 3x3 stride-2 conv on 32 pixels: 0 before, 1 after; stride 1: 1 and 1).
    """

    filters: int
    kernel_size: int = 3
    padding: str = "valid"  # "valid" or "same" (see the docstring for which pixels are padded)
    activation: str | None = "relu"
    strides: int = 1
    use_bias: bool = True

    def padding_amounts(self, input_shape: Shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) zeros added around the input."""
        return tuple(
            same_padding(size, self.kernel_size, self.strides, self.padding)
            for size in input_shape[:2]
        )

    def output_shape(self, input_shape: Shape) -> Shape:
        height, width, _ = input_shape
        if self.padding not in ("valid", "same"):
            raise ValueError(
                f"Conv2D padding {self.padding!r} is not supported; use 'valid' or 'same'"
            )
        (top, bottom), (left, right) = self.padding_amounts(input_shape)
        size, stride = self.kernel_size, self.strides
        out_h = (height + top + bottom - size) // stride + 1
        out_w = (width + left + right - size) // stride + 1
        return (out_h, out_w, self.filters)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        channels = input_shape[-1]
        size = self.kernel_size
        shapes = {"kernel": (size, size, channels, self.filters)}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def flops(self, input_shape: Shape) -> int:
        out_h, out_w, out_c = self.output_shape(input_shape)
        return 2 * out_h * out_w * out_c * self.kernel_size**2 * input_shape[-1]


def same_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) zeros in one axis (Conv2D's docstring); (0, 0) for "valid"."""
    if padding != "same":
        return (0, 0)
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2)


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization over the last (channel) axis, then an optional activation.

    Training: y = gamma * (x - mean) / sqrt(var + epsilon) + beta with the batch's mean and
    biased variance (divided by the count, as Keras and Flax compute it; torch's own BatchNorm
    would store the unbiased one, so the torch backend updates its buffers itself), taken over
    every axis but the last; then
      moving_mean     = momentum * moving_mean     + (1 - momentum) * mean
      moving_variance = momentum * moving_variance + (1 - momentum) * var   (biased)
    `momentum` is the fraction kept, Keras' and Flax's convention; torch's is its complement
    (torch momentum 0.1 = 0.9 here). Evaluation normalizes with the moving statistics.
    gamma and beta are trainable; moving_mean and moving_variance are state (not counted as
    parameters, not trained, but exported and loaded with the weights).
    FLOPs: 0 (elementwise, as activations are; framework counters do not count it either).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    activation: str | None = None

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"gamma": (input_shape[-1],), "beta": (input_shape[-1],)}

    def state_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"moving_mean": (input_shape[-1],), "moving_variance": (input_shape[-1],)}

    def flops(self, input_shape: Shape) -> int:
        return 0


@dataclass(frozen=True)
class GlobalAveragePooling2D:
    """The mean over height and width: (H, W, C) -> (C,). FLOPs: 0 (pooling is not counted)."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[-1],)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def flops(self, input_shape: Shape) -> int:
        return 0


@dataclass(frozen=True)
class MaxPool2D:
    pool_size: int = 2  # stride equals pool size; a partial window at the edge is dropped

    def output_shape(self, input_shape: Shape) -> Shape:
        height, width, channels = input_shape
        return (height // self.pool_size, width // self.pool_size, channels)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def flops(self, input_shape: Shape) -> int:
        return 0


@dataclass(frozen=True)
class Flatten:
    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def flops(self, input_shape: Shape) -> int:
        return 0


@dataclass(frozen=True)
class Dense:
    units: int
    activation: str | None = None  # None (logits), "relu", "sigmoid" or "gelu" (ACTIVATIONS)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"kernel": (input_shape[-1], self.units), "bias": (self.units,)}

    def flops(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape) * self.units


@dataclass(frozen=True)
class Embedding:
    vocab_size: int
    dim: int

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.dim)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"embeddings": (self.vocab_size, self.dim)}

    def flops(self, input_shape: Shape) -> int:
        return 0  # a gather


@dataclass(frozen=True)
class LSTM:
    """Single-layer LSTM over (seq_len, features); outputs the last hidden state.

    Gates i, f, g, o; tanh cell and output activations, sigmoid gates; state starts at zero.
    """

    units: int

    def output_shape(self, input_shape: Shape) -> Shape:
        return (self.units,)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        features = input_shape[-1]
        return {
            "kernel": (features, 4 * self.units),
            "recurrent_kernel": (self.units, 4 * self.units),
            "bias": (4 * self.units,),
        }

    def flops(self, input_shape: Shape) -> int:
        seq_len, features = input_shape
        return 2 * seq_len * (features + self.units) * 4 * self.units


@dataclass(frozen=True)
class PositionEmbedding:
    """Learned absolute position embeddings: row t of a (seq_len, dim) table is added to the
    input at position t. Text is front-padded, so a short text's tokens sit at the last
    positions, as a Keras pad_sequences model sees them."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"embeddings": tuple(input_shape)}

    def flops(self, input_shape: Shape) -> int:
        return 0  # an addition


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalization over the last axis: gamma * (x - mean) / sqrt(var + epsilon) + beta,
    with the biased variance and epsilon inside the square root, as torch (nn.LayerNorm), Flax
    (linen.LayerNorm) and Keras (LayerNormalization) all place it; each backend is given this
    epsilon explicitly (their defaults differ: 1e-5, 1e-6, 1e-3)."""

    epsilon: float = 1e-5

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"gamma": (input_shape[-1],), "beta": (input_shape[-1],)}

    def flops(self, input_shape: Shape) -> int:
        return 0  # elementwise


@dataclass(frozen=True)
class MultiHeadSelfAttention:
    """Multi-head self-attention over (seq_len, dim), padded keys masked out.

    q, k, v = x @ kernel + bias per head (head_dim = dim // heads); scores q.k / sqrt(head_dim);
    a padding key's score is replaced by a very negative number (-1e9 added, or the dtype's
    lowest value: the same softmax in fp32) before the softmax over the keys; heads concatenated
    and projected by the output kernel. A text without any token (SST-2's training split holds
    two) so attends uniformly over its padding, finite in every framework; queries at padding
    positions are computed like any other and dropped by the masked mean pool.
    """

    heads: int
    uses_padding_mask: ClassVar[bool] = True

    def head_dim(self, input_shape: Shape) -> int:
        dim = input_shape[-1]
        if dim % self.heads:
            raise ValueError(f"width {dim} is not a multiple of {self.heads} heads")
        return dim // self.heads

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        dim, heads, head_dim = input_shape[-1], self.heads, self.head_dim(input_shape)
        shapes: dict[str, Shape] = {}
        for projection in ("query", "key", "value"):
            shapes[f"{projection}_kernel"] = (dim, heads, head_dim)
            shapes[f"{projection}_bias"] = (heads, head_dim)
        shapes["output_kernel"] = (heads, head_dim, dim)
        shapes["output_bias"] = (dim,)
        return shapes

    def flops(self, input_shape: Shape) -> int:
        seq_len, dim = input_shape
        projections = 4 * 2 * seq_len * dim * dim  # query, key, value, output
        attention = 2 * 2 * seq_len * seq_len * dim  # scores, then the weighted sum of values
        return projections + attention


@dataclass(frozen=True)
class MaskedMeanPool:
    """The mean over the sequence axis of the non-padding positions: (seq_len, dim) -> (dim,).
    A text without any token pools to zeros (the count is clipped to at least 1)."""

    uses_padding_mask: ClassVar[bool] = True

    def output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[-1],)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def flops(self, input_shape: Shape) -> int:
        return 0  # pooling


@dataclass(frozen=True)
class Residual:
    """activation(body(x) + shortcut(x)): a block with a skip path (He et al., 2016).

    An empty shortcut is the identity. Both chains see the block's input and must give the same
    output shape. Nested weights are `<index>_residual/body/<j>_<type>/<param>` and
    `<index>_residual/shortcut/<j>_<type>/<param>`; the addition is elementwise (not counted).
    """

    body: tuple[Layer, ...]
    shortcut: tuple[Layer, ...] = ()
    activation: str | None = None

    def branches(self) -> tuple[tuple[str, tuple[Layer, ...]], ...]:
        """(name, layers) of each chain, in weight order: body, then shortcut."""
        return (("body", self.body), ("shortcut", self.shortcut))

    def output_shape(self, input_shape: Shape) -> Shape:
        body = chain_output_shape(self.body, input_shape)
        shortcut = chain_output_shape(self.shortcut, input_shape)
        if body != shortcut:
            raise ValueError(f"Residual body gives {body} but its shortcut gives {shortcut}")
        return body

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {
            f"{branch}/{key}": shape
            for branch, layers in self.branches()
            for key, shape in param_shapes(layers, input_shape).items()
        }

    def state_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {
            f"{branch}/{key}": shape
            for branch, layers in self.branches()
            for key, shape in state_shapes(layers, input_shape).items()
        }

    def flops(self, input_shape: Shape) -> int:
        return sum(forward_flops(layers, input_shape) for _, layers in self.branches())


Layer = (
    Conv2D
    | MaxPool2D
    | Flatten
    | Dense
    | Embedding
    | LSTM
    | PositionEmbedding
    | LayerNorm
    | MultiHeadSelfAttention
    | MaskedMeanPool
    | Residual
    | BatchNorm
    | GlobalAveragePooling2D
)

# The activations a layer's `activation` may name. GELU is the exact one, x * Phi(x) with the
# normal CDF from erf: torch's nn.GELU and Keras' gelu default to it; Flax's linen.gelu defaults
# to the tanh approximation, so the JAX backend asks for approximate=False.
ACTIVATIONS = (None, "relu", "sigmoid", "gelu")  # sigmoid: AlgoPerf's MNIST MLP


def uses_padding_mask(layer: Layer) -> bool:
    """Whether `layer` takes the padding mask beside its input (a Residual does when a layer
    of its chains does, and hands it on to them)."""
    if isinstance(layer, Residual):
        return any(model_uses_padding_mask(chain) for _, chain in layer.branches())
    return getattr(layer, "uses_padding_mask", False)


def model_uses_padding_mask(layers: tuple[Layer, ...]) -> bool:
    return any(uses_padding_mask(layer) for layer in layers)


def padding_mask(tokens):
    """True at the real tokens, False at padding: `tokens != PAD_ID`, for numpy arrays and any
    framework's tensors alike."""
    return tokens != PAD_ID


def layer_name(index: int, layer: Layer) -> str:
    """The canonical name of a layer in a weight dict: `<index>_<type>`, e.g. `0_conv2d`."""
    return f"{index}_{type(layer).__name__.lower()}"


def trace_shapes(layers: tuple[Layer, ...], input_shape: Shape) -> list[tuple[Shape, Shape]]:
    """(input shape, output shape) of every layer, per sample."""
    shapes = []
    shape = tuple(input_shape)
    for layer in layers:
        out = layer.output_shape(shape)
        if min(out) <= 0:
            raise ValueError(f"{layer} maps input {shape} to an empty output {out}")
        shapes.append((shape, out))
        shape = out
    return shapes


def chain_output_shape(layers: tuple[Layer, ...], input_shape: Shape) -> Shape:
    """The output shape of layers applied in order (the input shape for an empty chain)."""
    shapes = trace_shapes(layers, input_shape)
    return shapes[-1][1] if shapes else tuple(input_shape)


def param_shapes(layers: tuple[Layer, ...], input_shape: Shape) -> dict[str, Shape]:
    """Every parameter as `<layer name>/<param>` -> shape, in layer order."""
    result = {}
    for index, (layer, (in_shape, _)) in enumerate(zip(layers, trace_shapes(layers, input_shape))):
        for param, shape in layer.param_shapes(in_shape).items():
            result[f"{layer_name(index, layer)}/{param}"] = shape
    return result


def state_shapes(layers: tuple[Layer, ...], input_shape: Shape) -> dict[str, Shape]:
    """Every non-trainable state variable (BatchNorm's moving statistics) as
    `<layer name>/<name>` -> shape, in layer order; a layer without state has no
    `state_shapes`."""
    result = {}
    for index, (layer, (in_shape, _)) in enumerate(zip(layers, trace_shapes(layers, input_shape))):
        shapes = getattr(layer, "state_shapes", None)
        for name, shape in (shapes(in_shape) if shapes else {}).items():
            result[f"{layer_name(index, layer)}/{name}"] = shape
    return result


def variable_shapes(layers: tuple[Layer, ...], input_shape: Shape) -> dict[str, Shape]:
    """Parameters and state together, in the order of bench/init.py's weights: layer by layer,
    each layer's parameters before its state (Keras' own order)."""
    params, state = param_shapes(layers, input_shape), state_shapes(layers, input_shape)
    order = list(initial_order(layers, input_shape))
    shapes = {**params, **state}
    return {key: shapes[key] for key in order}


def initial_order(layers: tuple[Layer, ...], input_shape: Shape, prefix: str = ""):
    """Every variable's canonical name, layer by layer, parameters before state."""
    for index, (layer, (in_shape, _)) in enumerate(zip(layers, trace_shapes(layers, input_shape))):
        name = f"{prefix}{layer_name(index, layer)}"
        if isinstance(layer, Residual):
            for branch, chain in layer.branches():
                yield from initial_order(chain, in_shape, f"{name}/{branch}/")
            continue
        yield from (f"{name}/{key}" for key in layer.param_shapes(in_shape))
        shapes = getattr(layer, "state_shapes", None)
        yield from (f"{name}/{key}" for key in (shapes(in_shape) if shapes else {}))


def count_params(layers: tuple[Layer, ...], input_shape: Shape) -> int:
    return sum(math.prod(shape) for shape in param_shapes(layers, input_shape).values())


def forward_flops(layers: tuple[Layer, ...], input_shape: Shape) -> int:
    """Forward FLOPs per sample (multiply-add = 2)."""
    shapes = trace_shapes(layers, input_shape)
    return sum(layer.flops(in_shape) for layer, (in_shape, _) in zip(layers, shapes))
