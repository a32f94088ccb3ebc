"""PyTorch backend: the IR as an nn.Module, trained with a plain idiomatic loop.

Modes: `eager` (the default PyTorch users get), `compiled` (torch.compile of forward + loss,
inductor; backward through AOTAutograd) and, on cuda, `fused`: the whole train step (batch
gather, forward, backward, Adam) captured once as a CUDA graph and replayed, one graph launch per
step with no Python or kernel-launch work in between (PyTorch's "whole network capture"). On cpu
there are no CUDA graphs: a fused cpu run is a `skipped` row. On cuda every mode uses the same
Adam kernel (fused=True, capturable=True: state and step count on the device) and cuDNN's
autotuner (cudnn.benchmark=True, as XLA and TensorFlow autotune their convolutions).
Precision: `fp32` (TF32 off everywhere), `tf32` (cuda only), `bf16` (autocast, fp32 weights;
on cuda the images and convolutions in channels-last memory, the layout cuDNN's bf16 tensor-core
kernels run in). An LSTM under bf16 leaves autocast, which would run PyTorch's cuDNN RNN in fp16
(aten/src/ATen/cudnn/AutocastRNN.cpp casts to half), and runs on bf16 copies of its fp32
weights and input instead; `mechanism` names the LSTM kernel that ran.
The dataset is placed on the device once, as one copy (NCHW for images, laid out on the host
first); each step gathers its batch there from the harness's epoch permutation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.base import EVAL_BATCH, BackendBase, Unsupported
from bench.config import RunConfig
from bench.data import Dataset
from bench.init import Weights
from bench.layers import (
    LSTM,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    Layer,
    MaxPool2D,
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
    Conv2D: TorchLayer(
        lambda layer, shape: nn.Conv2d(shape[-1], layer.filters, layer.kernel_size),
        lambda layer, p, _: {"weight": p["kernel"].transpose(3, 2, 0, 1), "bias": p["bias"]},
        lambda layer, s, _: {"kernel": s["weight"].transpose(2, 3, 1, 0), "bias": s["bias"]},
    ),
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
}


def torch_layer(layer: Layer) -> TorchLayer:
    try:
        return TORCH_LAYERS[type(layer)]
    except KeyError:
        raise NotImplementedError(f"torch backend has no {type(layer).__name__}") from None


def build_module(task: TaskSpec) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer, (in_shape, _) in zip(task.layers, trace_shapes(task.layers, task.input_shape)):
        modules.append(torch_layer(layer).build(layer, in_shape))
        if getattr(layer, "activation", None) == "relu":
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def flatten_source(task: TaskSpec, index: int) -> Shape | None:
    """The (H, W, C) shape flattened right before layer `index`, if that layer follows a Flatten."""
    if index > 0 and isinstance(task.layers[index - 1], Flatten):
        return trace_shapes(task.layers, task.input_shape)[index - 1][0]
    return None


def to_torch_layout(task: TaskSpec, weights: Weights) -> dict[str, np.ndarray]:
    """Canonical (NHWC / HWIO / gates i,f,g,o) -> nn.Sequential state_dict entries."""
    state = {}
    for index, layer in enumerate(task.layers):
        name, prefix = layer_name(index, layer), _sequential_names(task)[index]
        params = {
            key.split("/")[1]: value for key, value in weights.items() if key.startswith(f"{name}/")
        }
        for suffix, value in (
            torch_layer(layer).to_torch(layer, params, flatten_source(task, index)).items()
        ):
            state[f"{prefix}.{suffix}"] = np.ascontiguousarray(value)
    return state


def from_torch_layout(task: TaskSpec, state: dict[str, np.ndarray]) -> Weights:
    """The inverse of to_torch_layout (LSTM biases are summed: bias_hh is frozen at zero)."""
    weights = {}
    for index, layer in enumerate(task.layers):
        name, prefix = layer_name(index, layer), _sequential_names(task)[index]
        own = {
            key[len(prefix) + 1 :]: value
            for key, value in state.items()
            if key.startswith(f"{prefix}.")
        }
        for param, value in (
            torch_layer(layer).from_torch(layer, own, flatten_source(task, index)).items()
        ):
            weights[f"{name}/{param}"] = np.ascontiguousarray(value, dtype=np.float32)
    return weights


def _sequential_names(task: TaskSpec) -> dict[int, str]:
    """IR layer index -> its index in the nn.Sequential (ReLUs are modules of their own)."""
    names, position = {}, 0
    for index, layer in enumerate(task.layers):
        names[index] = str(position)
        position += 2 if getattr(layer, "activation", None) == "relu" else 1
    return names


def configure_torch(device: str, precision: str, threads: int) -> None:
    """torch's process-wide settings for a run (the Keras backend on torch uses them too):
    TF32 only under tf32, cuDNN's autotuner on cuda, the thread count; and a cuda run on a
    torch that sees no GPU is refused, never run on the cpu."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    # cuDNN's autotuner picks each convolution's fastest algorithm on its first call (the
    # compile and warm-up windows), as XLA and TensorFlow autotune theirs.
    torch.backends.cudnn.benchmark = device == "cuda"
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        detail = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
        raise BackendBase.no_gpu("torch", f"torch.cuda.is_available() is False; {detail}")


class TorchBackend(BackendBase):
    framework = "torch"
    default_mode = "eager"

    def __init__(self, config: RunConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        if self.mode == "fused" and config.device != "cuda":
            raise Unsupported(
                "torch's fused mode is a CUDA graph of the whole train step; there are no "
                "CUDA graphs on cpu"
            )
        configure_torch(config.device, config.precision, config.threads or os.cpu_count() or 1)
        torch.manual_seed(config.seed)
        self.device = torch.device(config.device)
        self.autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None
        # bf16 convolutions in channels-last memory on cuda (cuDNN's tensor-core layout)
        self.channels_last = self.device.type == "cuda" and config.precision == "bf16"
        self.lstm_implementation: str | None = None  # chosen in setup, for a model with an LSTM
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def mechanism(self) -> str:
        """What ran: the mode, and on cuda the Adam kernel, cuDNN autotuning and memory format;
        for an LSTM, its kernel and dtype."""
        parts = [
            {
                "eager": "eager",
                "compiled": "torch.compile(inductor, forward+loss)",
                "fused": "CUDA graph of the whole eager train step, 1 launch/step",
            }[self.mode]
        ]
        if self.device.type == "cuda":
            parts.append("Adam fused=True capturable=True; cudnn.benchmark=True")
            if self.channels_last:
                parts.append("channels_last")
        if self.lstm_implementation is not None:
            dtype = (
                "bf16, cast from fp32 weights outside autocast" if self.autocast_dtype else "fp32"
            )
            parts.append(f"LSTM: {LSTM_IMPLEMENTATIONS[self.lstm_implementation]} ({dtype})")
        return "; ".join(parts)

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

    def setup(self, weights: Weights, data: Dataset) -> None:
        task = self.task
        self.model = build_module(task).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.load_weights(weights)
        self.setup_lstm(data)
        self.x_train = self.to_device_inputs(data.x_train)
        self.y_train = torch.from_numpy(data.y_train).to(self.device, torch.int64)
        self.x_test = self.to_device_inputs(data.x_test)
        self.y_test = torch.from_numpy(data.y_test).to(self.device, torch.int64)
        params = [p for p in self.model.parameters() if p.requires_grad]
        adam = task.optimizer
        if self.device.type == "cuda":  # one kernel for every mode; state and step on the device
            implementation = {"fused": True, "capturable": True}
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

    def setup_lstm(self, data: Dataset) -> None:
        """Under bf16, each LSTM runs in bf16 on the first kernel that can (see LastHidden)."""
        lstms = [module for module in self.model.modules() if isinstance(module, LastHidden)]
        if not lstms:
            return
        if self.autocast_dtype is None:
            self.lstm_implementation = "cudnn" if self.device.type == "cuda" else "cpu"
            return
        features = lstms[0].lstm.input_size
        self.lstm_implementation = choose_lstm_implementation(
            self.device, self.autocast_dtype, features
        )
        for module in lstms:
            module.compute_dtype = self.autocast_dtype
            module.implementation = self.lstm_implementation

    def to_device_inputs(self, x: np.ndarray) -> torch.Tensor:
        """One copy on the device. Images go NCHW: laid out on the host, or, in channels-last
        memory, as NHWC storage seen through NCHW strides (no copy either way)."""
        if x.ndim != 4:
            return torch.from_numpy(x).to(self.device)
        if self.channels_last:
            return torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.device)

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
        with torch.cuda.graph(self.graph, stream=stream):  # the stream that warmed up
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
        self.check_window(first_step, num_steps, self.steps_per_epoch * self.batch_size)
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

    def reset_memory_peak(self) -> bool:
        """The allocator's peak starts again from what is allocated now."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return True

    def data_resident_bytes(self) -> int:
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        return sum(tensor.untyped_storage().nbytes() for tensor in tensors)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)
