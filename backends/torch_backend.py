"""PyTorch backend: the IR as an nn.Module, trained with a plain idiomatic loop.

Modes: `eager` (the default PyTorch users get), `compiled` (torch.compile of forward + loss,
inductor; backward through AOTAutograd) and, on cuda, `fused`: the whole train step (batch
gather, forward, backward, Adam) captured once as a CUDA graph and replayed, one graph launch per
step with no Python or kernel-launch work in between (PyTorch's "whole network capture"). On cpu
there are no CUDA graphs: a fused cpu run is a `skipped` row.
Precision: `fp32` (TF32 off everywhere), `tf32` (cuda only), `bf16` (autocast, fp32 weights).
The dataset is placed on the device once (NCHW for images); each step gathers its batch there
from the harness's epoch permutation.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends import Unsupported
from bench.config import RunConfig
from bench.data import Dataset
from bench.init import Weights
from bench.layers import (
    LSTM,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    MaxPool2D,
    layer_name,
    trace_shapes,
)
from bench.tasks import TaskSpec

EVAL_BATCH = 1024


class LastHidden(nn.Module):
    """nn.LSTM (batch first) that returns the last hidden state, as the IR's LSTM does."""

    def __init__(self, features: int, units: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, units, batch_first=True)
        # The IR has one bias; torch has two. bias_hh stays zero and frozen, so the math and the
        # trainable parameter count equal the IR's.
        self.lstm.bias_hh_l0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(x)
        return hidden[-1]


def build_module(task: TaskSpec) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer, (in_shape, _) in zip(task.layers, trace_shapes(task.layers, task.input_shape)):
        if isinstance(layer, Conv2D):
            modules.append(nn.Conv2d(in_shape[-1], layer.filters, layer.kernel_size))
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.pool_size))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, Dense):
            modules.append(nn.Linear(in_shape[-1], layer.units))
        elif isinstance(layer, Embedding):
            modules.append(nn.Embedding(layer.vocab_size, layer.dim))
        elif isinstance(layer, LSTM):
            modules.append(LastHidden(in_shape[-1], layer.units))
        else:
            raise NotImplementedError(f"torch backend has no {type(layer).__name__}")
        if getattr(layer, "activation", None) == "relu":
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def flatten_source(task: TaskSpec, index: int) -> tuple | None:
    """The (H, W, C) shape flattened right before layer `index`, if that layer follows a Flatten."""
    if index > 0 and isinstance(task.layers[index - 1], Flatten):
        return trace_shapes(task.layers, task.input_shape)[index - 1][0]
    return None


def to_torch_layout(task: TaskSpec, weights: Weights) -> dict[str, np.ndarray]:
    """Canonical (NHWC / HWIO / gates i,f,g,o) -> nn.Sequential state_dict entries."""
    state = {}
    model_names = _sequential_names(task)
    for index, layer in enumerate(task.layers):
        name = layer_name(index, layer)
        prefix = model_names.get(index)
        if isinstance(layer, Conv2D):
            state[f"{prefix}.weight"] = weights[f"{name}/kernel"].transpose(3, 2, 0, 1)
            state[f"{prefix}.bias"] = weights[f"{name}/bias"]
        elif isinstance(layer, Dense):
            kernel = weights[f"{name}/kernel"]
            source = flatten_source(task, index)
            if source is not None:  # rows in H, W, C order -> torch's C, H, W flatten order
                height, width, channels = source
                kernel = kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
                kernel = kernel.reshape(height * width * channels, -1)
            state[f"{prefix}.weight"] = kernel.T
            state[f"{prefix}.bias"] = weights[f"{name}/bias"]
        elif isinstance(layer, Embedding):
            state[f"{prefix}.weight"] = weights[f"{name}/embeddings"]
        elif isinstance(layer, LSTM):  # torch's gate order is i, f, g, o too
            state[f"{prefix}.lstm.weight_ih_l0"] = weights[f"{name}/kernel"].T
            state[f"{prefix}.lstm.weight_hh_l0"] = weights[f"{name}/recurrent_kernel"].T
            state[f"{prefix}.lstm.bias_ih_l0"] = weights[f"{name}/bias"]
            state[f"{prefix}.lstm.bias_hh_l0"] = np.zeros_like(weights[f"{name}/bias"])
    return {key: np.ascontiguousarray(value) for key, value in state.items()}


def from_torch_layout(task: TaskSpec, state: dict[str, np.ndarray]) -> Weights:
    """The inverse of to_torch_layout (LSTM biases are summed: bias_hh is frozen at zero)."""
    weights = {}
    model_names = _sequential_names(task)
    for index, layer in enumerate(task.layers):
        name = layer_name(index, layer)
        prefix = model_names.get(index)
        if isinstance(layer, Conv2D):
            weights[f"{name}/kernel"] = state[f"{prefix}.weight"].transpose(2, 3, 1, 0)
            weights[f"{name}/bias"] = state[f"{prefix}.bias"]
        elif isinstance(layer, Dense):
            kernel = state[f"{prefix}.weight"].T
            source = flatten_source(task, index)
            if source is not None:
                height, width, channels = source
                kernel = kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3)
                kernel = kernel.reshape(height * width * channels, -1)
            weights[f"{name}/kernel"] = kernel
            weights[f"{name}/bias"] = state[f"{prefix}.bias"]
        elif isinstance(layer, Embedding):
            weights[f"{name}/embeddings"] = state[f"{prefix}.weight"]
        elif isinstance(layer, LSTM):
            weights[f"{name}/kernel"] = state[f"{prefix}.lstm.weight_ih_l0"].T
            weights[f"{name}/recurrent_kernel"] = state[f"{prefix}.lstm.weight_hh_l0"].T
            bias = state[f"{prefix}.lstm.bias_ih_l0"] + state[f"{prefix}.lstm.bias_hh_l0"]
            weights[f"{name}/bias"] = bias
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()}


def _sequential_names(task: TaskSpec) -> dict[int, str]:
    """IR layer index -> its index in the nn.Sequential (ReLUs are modules of their own)."""
    names, position = {}, 0
    for index, layer in enumerate(task.layers):
        names[index] = str(position)
        position += 2 if getattr(layer, "activation", None) == "relu" else 1
    return names


def set_precision(device: str, precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if device == "cpu" and tf32:
        raise Unsupported("tf32 is a CUDA tensor-core math mode; on cpu use fp32 or bf16")


class TorchBackend:
    framework = "torch"
    default_mode = "eager"

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.mode = self.default_mode if config.mode == "default" else config.mode
        if self.mode == "fused" and config.device != "cuda":
            raise Unsupported(
                "torch's fused mode is a CUDA graph of the whole train step; there are no "
                "CUDA graphs on cpu"
            )
        if config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "device cuda was requested but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); refusing to run on cpu"
            )
        set_precision(config.device, config.precision)
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
        torch.manual_seed(config.seed)
        self.device = torch.device(config.device)
        self.autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None
        self.mechanism = {
            "eager": "eager",
            "compiled": "torch.compile(inductor, forward+loss)",
            "fused": "CUDA graph of the whole eager train step (Adam capturable), 1 launch/step",
        }[self.mode]
        self.graph: torch.cuda.CUDAGraph | None = None

    def versions(self) -> dict[str, str]:
        versions = {"torch": torch.__version__}
        if self.device.type == "cuda":
            versions["cuda"] = str(torch.version.cuda)
            versions["cudnn"] = str(torch.backends.cudnn.version())
        return versions

    def device_name(self) -> str | None:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # A CUDA graph must not keep autocast's cast cache alive across captures
        cache = self.mode != "fused"
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=cache)

    def setup(self, task: TaskSpec, weights: Weights, data: Dataset) -> None:
        self.task = task
        self.batch_size = self.config.batch_size or task.batch_size
        self.model = build_module(task).to(self.device)
        self.load_weights(weights)
        self.x_train = self.to_device_inputs(data.x_train)
        self.y_train = torch.from_numpy(data.y_train).to(self.device, torch.int64)
        self.x_test = self.to_device_inputs(data.x_test)
        self.y_test = torch.from_numpy(data.y_test).to(self.device, torch.int64)
        params = [p for p in self.model.parameters() if p.requires_grad]
        adam = task.optimizer
        if self.mode == "fused":  # state and step count on the device, updated inside the graph
            implementation = {"foreach": True, "capturable": True}
        elif self.device.type == "cuda":
            implementation = {"fused": True}
        else:
            implementation = {"foreach": True}
        self.optimizer = torch.optim.Adam(
            params,
            lr=adam.learning_rate,
            betas=(adam.beta_1, adam.beta_2),
            eps=adam.epsilon,
            **implementation,
        )
        self.steps_per_epoch = len(data.y_train) // self.batch_size
        forward_loss = self.forward_loss
        if self.mode == "compiled":
            forward_loss = torch.compile(forward_loss, dynamic=False)
        self.compiled_forward_loss = forward_loss

    def to_device_inputs(self, x: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(x).to(self.device)
        return tensor.permute(0, 3, 1, 2).contiguous() if tensor.ndim == 4 else tensor

    def load_weights(self, weights: Weights) -> None:
        state = to_torch_layout(self.task, weights)
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                tensor.copy_(torch.from_numpy(state[name]))

    def get_weights(self) -> Weights:
        state = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        return from_torch_layout(self.task, state)

    def forward_loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.model(inputs)
        return F.cross_entropy(logits.float(), labels)

    def begin_epoch(self, permutation: np.ndarray) -> None:
        self.permutation = torch.from_numpy(permutation.astype(np.int64)).to(self.device)
        if self.mode == "fused":  # into the graph's own buffer: its address is baked in
            self.static_batches().copy_(self.epoch_batches(self.permutation))

    def epoch_batches(self, permutation: torch.Tensor) -> torch.Tensor:
        """The epoch's sample indices as (steps_per_epoch, batch): row s is step s's batch."""
        count = self.steps_per_epoch * self.batch_size
        return permutation[:count].view(self.steps_per_epoch, self.batch_size)

    def static_batches(self) -> torch.Tensor:
        if not hasattr(self, "batches"):
            self.batches = torch.zeros(
                (self.steps_per_epoch, self.batch_size), dtype=torch.int64, device=self.device
            )
            self.step_counter = torch.zeros(1, dtype=torch.int64, device=self.device)
        return self.batches

    def graphed_step(self) -> torch.Tensor:
        """One train step that reads its batch row from a device-side counter and advances it:
        no host value enters it, so it can be captured once and replayed for every step."""
        index = self.batches.index_select(0, self.step_counter).squeeze(0)
        loss = self.forward_loss(self.x_train[index], self.y_train[index])
        loss.backward()
        self.optimizer.step()
        self.step_counter.add_(1)
        return loss

    def capture(self) -> None:
        """Warm up on a side stream (lazy optimizer state, cuBLAS/cuDNN handles), capture one
        step, then put the weights and the optimizer state back as they were: the warm-up steps
        train nothing that counts, and every tensor keeps the address the graph recorded.
        Runs in the first timed window, so its cost is reported as the compile time."""
        self.static_batches()
        saved = [p.detach().clone() for p in self.model.parameters()]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self.step_counter.zero_()
                self.graphed_step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates .grad from the pool
        with torch.cuda.graph(self.graph):
            self.static_loss = self.graphed_step()
        with torch.no_grad():
            for parameter, value in zip(self.model.parameters(), saved):
                parameter.copy_(value)
            for state in self.optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()  # exp_avg, exp_avg_sq and the step count
        torch.cuda.synchronize(self.device)

    def run_steps(self, first_step: int, num_steps: int) -> float:
        if self.mode == "fused":
            return self.replay_steps(first_step, num_steps)
        batch = self.batch_size
        for step in range(first_step, first_step + num_steps):
            index = self.permutation[step * batch : (step + 1) * batch]
            loss = self.compiled_forward_loss(self.x_train[index], self.y_train[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.item()  # .item() waits for the device: the window ends synchronized

    def replay_steps(self, first_step: int, num_steps: int) -> float:
        if first_step + num_steps > self.steps_per_epoch:
            raise ValueError(
                f"steps [{first_step}, {first_step + num_steps}) run past the epoch's "
                f"{self.steps_per_epoch} batches"
            )
        if self.graph is None:
            self.capture()
        self.step_counter.fill_(first_step)
        for _ in range(num_steps):
            self.graph.replay()
        return self.static_loss.item()  # waits for the device: the window ends synchronized

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(self.y_test), EVAL_BATCH):
            inputs = self.x_test[start : start + EVAL_BATCH]
            labels = self.y_test[start : start + EVAL_BATCH]
            with self.autocast():
                logits = self.model(inputs).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
        count = len(self.y_test)
        return correct.item() / count, loss_sum.item() / count

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.autocast():
            return self.model(self.to_device_inputs(x)).float().cpu().numpy()

    def memory_peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)
