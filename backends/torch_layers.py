"""The IR in torch: one entry per layer type (TORCH_LAYERS: its module and its parameters'
layout both ways), the model as an nn.Sequential (MaskedSequential when a layer takes the
padding mask), and the LSTM that returns its last hidden state, with the bf16 kernels it can
run on (see backends/torch_backend.py's docstring).
A Residual is a module of two Chains (`body`, `shortcut`: nn.Sequentials that hand the padding
mask on), built and mapped by the same functions as the model's own chain, so its state_dict
names are `<i>.body.<j>.weight`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
    Shape,
    layer_name,
    model_uses_padding_mask,
    padding_mask,
    trace_shapes,
)
from bench.tasks import TaskSpec


class LastHidden(nn.Module):
    """nn.LSTM (batch first) that returns the last hidden state, as the IR's LSTM does.

    With `compute_dtype` set (the bf16 policy) it runs outside autocast on copies of its fp32
    weights and input in that dtype, with the kernel `implementation` names: "cudnn", "native"
    (ATen's own LSTM with cuDNN off) or "loop" (one matmul per timestep, written here); gradients
    flow back through the casts into the fp32 master weights. Without it, nn.LSTM as it is.
    """

    def __init__(self, features: int, units: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, units, batch_first=True)
        # The IR has one bias; torch has two. bias_hh stays zero and frozen, so the math and the
        # trainable parameter count equal the IR's.
        self.lstm.bias_hh_l0.requires_grad_(False)
        self.compute_dtype: torch.dtype | None = None
        self.implementation = "module"

    def flat_weights(self) -> list[torch.Tensor]:
        lstm = self.lstm
        return [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            _, (hidden, _) = self.lstm(x)
            return hidden[-1]
        dtype = self.compute_dtype
        with torch.autocast(x.device.type, enabled=False):
            weights = [weight.to(dtype) for weight in self.flat_weights()]
            return lstm_last_hidden(x.to(dtype), weights, self.implementation, self.training)


def lstm_last_hidden(
    x: torch.Tensor, weights: list[torch.Tensor], implementation: str, train: bool
) -> torch.Tensor:
    """The last hidden state of a one-layer LSTM over x (batch, time, features), zero initial
    state, gates i, f, g, o, in the dtype of its arguments."""
    w_ih, w_hh, b_ih, b_hh = weights
    units = w_hh.shape[1]
    if implementation == "loop":
        projected = x @ w_ih.T + (b_ih + b_hh)  # every timestep's input projection at once
        hidden = cell = x.new_zeros((x.shape[0], units))
        for t in range(x.shape[1]):
            i, f, g, o = (projected[:, t] + hidden @ w_hh.T).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden
    zeros = x.new_zeros((1, x.shape[0], units))
    cudnn = _cudnn_off() if implementation == "native" else contextlib.nullcontext()
    with cudnn:  # what nn.LSTM.forward calls, on the cast weights
        _, hidden, _ = torch._VF.lstm(x, (zeros, zeros), weights, True, 1, 0.0, train, False, True)
    return hidden[-1]


def _cudnn_off() -> contextlib.AbstractContextManager:
    return torch.backends.cudnn.flags(enabled=False)


LSTM_IMPLEMENTATIONS = {
    "cudnn": "cuDNN",
    "native": "ATen's LSTM kernels, cuDNN off",
    "loop": "a loop of matmuls per timestep",
    "cpu": "PyTorch's CPU LSTM",
}


def choose_lstm_implementation(device: torch.device, dtype: torch.dtype, features: int) -> str:
    """The first LSTM kernel that trains in `dtype` here (a forward and backward on a tiny
    batch): cuDNN, then ATen's own kernels with cuDNN off, then the explicit loop. On cpu,
    PyTorch's CPU LSTM (or the loop, if that cannot run the dtype)."""
    candidates = ("cudnn", "native", "loop") if device.type == "cuda" else ("cpu", "loop")
    x = torch.randn(2, 3, features, device=device, dtype=dtype)
    weights = [
        torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        for shape in ((8, features), (8, 2), (8,), (8,))
    ]
    for implementation in candidates:
        try:
            lstm_last_hidden(x, weights, implementation, train=True).float().sum().backward()
            return implementation
        except RuntimeError:
            continue
    return "loop"


MASKED_SCORE = -1e9  # added to a padding key's score (bench/layers.py's MultiHeadSelfAttention)


class Chain(nn.Sequential):
    """nn.Sequential (the same state_dict) that hands the padding mask, when it is given one, to
    every module that takes it (`takes_padding_mask`): a Residual's branches."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for module in self:
            x = module(x, mask) if getattr(module, "takes_padding_mask", False) else module(x)
        return x


class MaskedSequential(Chain):
    """The model of a task whose layers take the padding mask: computes it once from the input
    token ids and hands it on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, padding_mask(x))


class TorchPositionEmbedding(nn.Module):
    def __init__(self, seq_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(seq_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight.to(x.dtype)


class TorchSelfAttention(nn.Module):
    """nn.MultiheadAttention as self-attention, padded keys masked by an additive float mask
    (-1e9; a boolean key_padding_mask would be -inf, NaN for a text without any token)."""

    takes_padding_mask = True

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key_padding = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        key_padding = key_padding.masked_fill(~mask, MASKED_SCORE)
        return self.attention(x, x, x, key_padding_mask=key_padding, need_weights=False)[0]


class TorchMaskedMeanPool(nn.Module):
    takes_padding_mask = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(x.dtype).unsqueeze(-1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def attention_to_torch(layer: MultiHeadSelfAttention, params: Weights, _) -> Weights:
    """(dim, heads, head_dim) kernels -> nn.MultiheadAttention's packed in_proj (3 * dim, dim),
    q, k, v stacked, each (out, in); heads are contiguous blocks of head_dim in both."""
    dim = params["output_bias"].shape[0]
    kernels = [params[f"{p}_kernel"].reshape(dim, dim).T for p in ("query", "key", "value")]
    biases = [params[f"{p}_bias"].reshape(dim) for p in ("query", "key", "value")]
    return {
        "attention.in_proj_weight": np.concatenate(kernels, axis=0),
        "attention.in_proj_bias": np.concatenate(biases),
        "attention.out_proj.weight": params["output_kernel"].reshape(dim, dim).T,
        "attention.out_proj.bias": params["output_bias"],
    }


def attention_from_torch(layer: MultiHeadSelfAttention, state: Weights, _) -> Weights:
    dim = state["attention.out_proj.bias"].shape[0]
    heads, head_dim = layer.heads, dim // layer.heads
    kernels = np.split(state["attention.in_proj_weight"], 3, axis=0)
    biases = np.split(state["attention.in_proj_bias"], 3)
    params = {}
    for projection, kernel, bias in zip(("query", "key", "value"), kernels, biases):
        params[f"{projection}_kernel"] = kernel.T.reshape(dim, heads, head_dim)
        params[f"{projection}_bias"] = bias.reshape(heads, head_dim)
    params["output_kernel"] = state["attention.out_proj.weight"].T.reshape(heads, head_dim, dim)
    params["output_bias"] = state["attention.out_proj.bias"]
    return params


class TorchResidual(nn.Module):
    """body(x) + shortcut(x), the shortcut an empty Chain (the identity) if the IR's is empty;
    the block's activation is a module after it, as for every layer (build_chain). The padding
    mask, where the model has one, goes on to both chains."""

    takes_padding_mask = True

    def __init__(self, body: Chain, shortcut: Chain) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(x, mask) + self.shortcut(x, mask)


def build_residual(layer: Residual, shape: Shape) -> TorchResidual:
    return TorchResidual(build_chain(layer.body, shape), build_chain(layer.shortcut, shape))


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d that first pads its input unevenly, (left, right, top, bottom) zeros: the IR's
    "same" padding where it is not symmetric (stride 2 on an even size puts the extra zero after,
    bench/layers.py's Conv2D), which nn.Conv2d's own `padding` cannot express."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def build_conv(layer: Conv2D, shape: Shape) -> nn.Conv2d:
    """nn.Conv2d, with symmetric padding in the module and uneven padding in PaddedConv2d."""
    (top, bottom), (left, right) = layer.padding_amounts(shape)
    args = (shape[-1], layer.filters, layer.kernel_size)
    kwargs = {"stride": layer.strides, "bias": layer.use_bias}
    if top == bottom and left == right:
        return nn.Conv2d(*args, padding=(top, left), **kwargs)
    return PaddedConv2d(*args, pad=(left, right, top, bottom), **kwargs)


def conv_to_torch(layer: Conv2D, params: Weights, flattened: Shape | None) -> Weights:
    state = {"weight": params["kernel"].transpose(3, 2, 0, 1)}
    return {**state, "bias": params["bias"]} if layer.use_bias else state


def conv_from_torch(layer: Conv2D, state: Weights, flattened: Shape | None) -> Weights:
    params = {"kernel": state["weight"].transpose(2, 3, 1, 0)}
    return {**params, "bias": state["bias"]} if layer.use_bias else params


class SpecBatchNorm(nn.Module):
    """BatchNorm as the IR defines it (bench/layers.py): F.batch_norm normalizes, and in training
    the module updates its running statistics itself with the batch's biased variance and the
    IR's momentum (the fraction kept); nn.BatchNorm2d would store the unbiased variance. Over
    axis 1, the channels of torch's NCHW (or of a 2-d input)."""

    def __init__(self, channels: int, momentum: float, epsilon: float) -> None:
        super().__init__()
        self.momentum, self.epsilon = momentum, epsilon
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.epsilon,
            )
        with torch.no_grad():
            axes = [0, *range(2, x.dim())]
            var, mean = torch.var_mean(x.detach().float(), dim=axes, correction=0)
            self.running_mean.lerp_(mean, 1.0 - self.momentum)
            self.running_var.lerp_(var, 1.0 - self.momentum)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.epsilon)


class GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # NCHW: height and width


BATCH_NORM_NAMES = {  # canonical -> SpecBatchNorm's state_dict
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


@dataclass(frozen=True)
class TorchLayer:
    """How one IR layer type becomes torch: its module, and its parameters' layout both ways.

    build(layer, input_shape) -> nn.Module
    to_torch(layer, params, flattened) -> {state_dict suffix: array}, from the canonical params
    from_torch(layer, state, flattened) -> {canonical param: array}, the inverse
    `flattened` is the (H, W, C) shape a Flatten right before the layer flattened, else None.
    """

    build: Callable[[Layer, Shape], nn.Module]
    to_torch: Callable[[Layer, Weights, Shape | None], Weights] = lambda *_: {}
    from_torch: Callable[[Layer, Weights, Shape | None], Weights] = lambda *_: {}


def dense_to_torch(layer: Dense, params: Weights, flattened: Shape | None) -> Weights:
    kernel = params["kernel"]
    if flattened is not None:  # rows in H, W, C order -> torch's C, H, W flatten order
        height, width, channels = flattened
        kernel = kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
        kernel = kernel.reshape(height * width * channels, -1)
    return {"weight": kernel.T, "bias": params["bias"]}


def dense_from_torch(layer: Dense, state: Weights, flattened: Shape | None) -> Weights:
    kernel = state["weight"].T
    if flattened is not None:
        height, width, channels = flattened
        kernel = kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3)
        kernel = kernel.reshape(height * width * channels, -1)
    return {"kernel": kernel, "bias": state["bias"]}


def lstm_to_torch(layer: LSTM, params: Weights, flattened: Shape | None) -> Weights:
    """torch's gate order is i, f, g, o too; its second bias stays zero (LastHidden)."""
    return {
        "lstm.weight_ih_l0": params["kernel"].T,
        "lstm.weight_hh_l0": params["recurrent_kernel"].T,
        "lstm.bias_ih_l0": params["bias"],
        "lstm.bias_hh_l0": np.zeros_like(params["bias"]),
    }


def lstm_from_torch(layer: LSTM, state: Weights, flattened: Shape | None) -> Weights:
    return {
        "kernel": state["lstm.weight_ih_l0"].T,
        "recurrent_kernel": state["lstm.weight_hh_l0"].T,
        "bias": state["lstm.bias_ih_l0"] + state["lstm.bias_hh_l0"],
    }


TORCH_LAYERS: dict[type, TorchLayer] = {
    Conv2D: TorchLayer(build_conv, conv_to_torch, conv_from_torch),
    MaxPool2D: TorchLayer(lambda layer, shape: nn.MaxPool2d(layer.pool_size)),
    Flatten: TorchLayer(lambda layer, shape: nn.Flatten()),
    Dense: TorchLayer(
        lambda layer, shape: nn.Linear(shape[-1], layer.units), dense_to_torch, dense_from_torch
    ),
    Embedding: TorchLayer(
        lambda layer, shape: nn.Embedding(layer.vocab_size, layer.dim),
        lambda layer, p, _: {"weight": p["embeddings"]},
        lambda layer, s, _: {"embeddings": s["weight"]},
    ),
    LSTM: TorchLayer(
        lambda layer, shape: LastHidden(shape[-1], layer.units), lstm_to_torch, lstm_from_torch
    ),
    Residual: TorchLayer(build_residual),  # its parameters are its chains' (chain_to_torch)
    BatchNorm: TorchLayer(
        lambda layer, shape: SpecBatchNorm(shape[-1], layer.momentum, layer.epsilon),
        lambda layer, p, _: {BATCH_NORM_NAMES[key]: value for key, value in p.items()},
        lambda layer, s, _: {key: s[name] for key, name in BATCH_NORM_NAMES.items()},
    ),
    GlobalAveragePooling2D: TorchLayer(lambda layer, shape: GlobalAveragePool()),
    PositionEmbedding: TorchLayer(
        lambda layer, shape: TorchPositionEmbedding(*shape),
        lambda layer, p, _: {"weight": p["embeddings"]},
        lambda layer, s, _: {"embeddings": s["weight"]},
    ),
    LayerNorm: TorchLayer(
        lambda layer, shape: nn.LayerNorm(shape[-1], eps=layer.epsilon),
        lambda layer, p, _: {"weight": p["gamma"], "bias": p["beta"]},
        lambda layer, s, _: {"gamma": s["weight"], "beta": s["bias"]},
    ),
    MultiHeadSelfAttention: TorchLayer(
        lambda layer, shape: TorchSelfAttention(shape[-1], layer.heads),
        attention_to_torch,
        attention_from_torch,
    ),
    MaskedMeanPool: TorchLayer(lambda layer, shape: TorchMaskedMeanPool()),
}

# The module after a layer whose `activation` names one (bench.layers.ACTIVATIONS); GELU exact.
TORCH_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "gelu": lambda: nn.GELU(approximate="none"),
}


def torch_layer(layer: Layer) -> TorchLayer:
    try:
        return TORCH_LAYERS[type(layer)]
    except KeyError:
        raise NotImplementedError(f"torch backend has no {type(layer).__name__}") from None


def build_module(task: TaskSpec) -> nn.Sequential:
    model = MaskedSequential if model_uses_padding_mask(task.layers) else nn.Sequential
    return build_chain(task.layers, task.input_shape, model)


def build_chain(
    layers: tuple[Layer, ...], input_shape: Shape, container: type[nn.Sequential] = Chain
) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer, (in_shape, _) in zip(layers, trace_shapes(layers, input_shape)):
        modules.append(torch_layer(layer).build(layer, in_shape))
        activation = getattr(layer, "activation", None)
        if activation is not None:
            modules.append(TORCH_ACTIVATIONS[activation]())
    return container(*modules)


def flatten_source(layers: tuple[Layer, ...], input_shape: Shape, index: int) -> Shape | None:
    """The (H, W, C) shape flattened right before layer `index`, if that layer follows a Flatten."""
    if index > 0 and isinstance(layers[index - 1], Flatten):
        return trace_shapes(layers, input_shape)[index - 1][0]
    return None


def to_torch_layout(task: TaskSpec, weights: Weights) -> dict[str, np.ndarray]:
    """Canonical (NHWC / HWIO / gates i,f,g,o) -> nn.Sequential state_dict entries."""
    return chain_to_torch(task.layers, task.input_shape, weights)


def chain_to_torch(layers: tuple[Layer, ...], input_shape: Shape, weights: Weights) -> Weights:
    """A chain's canonical weights (keys relative to it) -> its nn.Sequential's state_dict."""
    state = {}
    shapes = trace_shapes(layers, input_shape)
    for index, layer in enumerate(layers):
        name, prefix = layer_name(index, layer), _sequential_names(layers)[index]
        params = {
            key[len(name) + 1 :]: value
            for key, value in weights.items()
            if key.startswith(f"{name}/")
        }
        if isinstance(layer, Residual):
            converted = {
                f"{branch}.{key}": value
                for branch, chain in layer.branches()
                for key, value in chain_to_torch(
                    chain, shapes[index][0], _branch_params(params, branch)
                ).items()
            }
        else:
            source = flatten_source(layers, input_shape, index)
            converted = torch_layer(layer).to_torch(layer, params, source)
        for suffix, value in converted.items():
            state[f"{prefix}.{suffix}"] = np.ascontiguousarray(value)
    return state


def from_torch_layout(task: TaskSpec, state: dict[str, np.ndarray]) -> Weights:
    """The inverse of to_torch_layout (LSTM biases are summed: bias_hh is frozen at zero)."""
    return chain_from_torch(task.layers, task.input_shape, state)


def chain_from_torch(layers: tuple[Layer, ...], input_shape: Shape, state: Weights) -> Weights:
    weights = {}
    shapes = trace_shapes(layers, input_shape)
    for index, layer in enumerate(layers):
        name, prefix = layer_name(index, layer), _sequential_names(layers)[index]
        own = {
            key[len(prefix) + 1 :]: value
            for key, value in state.items()
            if key.startswith(f"{prefix}.")
        }
        if isinstance(layer, Residual):
            converted = {
                f"{branch}/{key}": value
                for branch, chain in layer.branches()
                for key, value in chain_from_torch(
                    chain, shapes[index][0], _branch_params(own, branch, ".")
                ).items()
            }
        else:
            source = flatten_source(layers, input_shape, index)
            converted = torch_layer(layer).from_torch(layer, own, source)
        for param, value in converted.items():
            weights[f"{name}/{param}"] = np.ascontiguousarray(value, dtype=np.float32)
    return weights


def _branch_params(params: Weights, branch: str, separator: str = "/") -> Weights:
    """The entries under `branch` + separator, with that prefix taken off."""
    start = f"{branch}{separator}"
    return {key[len(start) :]: value for key, value in params.items() if key.startswith(start)}


def _sequential_names(layers: tuple[Layer, ...]) -> dict[int, str]:
    """IR layer index -> its index in the nn.Sequential (activations are modules of their own)."""
    names, position = {}, 0
    for index, layer in enumerate(layers):
        names[index] = str(position)
        position += 1 if getattr(layer, "activation", None) is None else 2
    return names
