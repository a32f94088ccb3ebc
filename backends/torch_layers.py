"""The IR in torch: one entry per layer type (TORCH_LAYERS: its module and its parameters'
layout both ways), the model as an nn.Sequential, and the LSTM that returns its last hidden
state, with the bf16 kernels it can run on (see backends/torch_backend.py's docstring).
A Residual is a module of two nn.Sequentials (`body`, `shortcut`), built and mapped by the same
functions as the model's own chain, so its state_dict names are `<i>.body.<j>.weight`.
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
    MaxPool2D,
    Residual,
    Shape,
    layer_name,
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


class TorchResidual(nn.Module):
    """body(x) + shortcut(x), the shortcut an empty nn.Sequential (the identity) if the IR's is
    empty; the block's activation is a module after it, as for every layer (build_chain)."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


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
}


def torch_layer(layer: Layer) -> TorchLayer:
    try:
        return TORCH_LAYERS[type(layer)]
    except KeyError:
        raise NotImplementedError(f"torch backend has no {type(layer).__name__}") from None


def build_module(task: TaskSpec) -> nn.Sequential:
    return build_chain(task.layers, task.input_shape)


def build_chain(layers: tuple[Layer, ...], input_shape: Shape) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer, (in_shape, _) in zip(layers, trace_shapes(layers, input_shape)):
        modules.append(torch_layer(layer).build(layer, in_shape))
        if getattr(layer, "activation", None) == "relu":
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


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
    """IR layer index -> its index in the nn.Sequential (ReLUs are modules of their own)."""
    names, position = {}, 0
    for index, layer in enumerate(layers):
        names[index] = str(position)
        position += 2 if getattr(layer, "activation", None) == "relu" else 1
    return names
