"""PyTorch backend: the IR as an nn.Module, trained with a plain idiomatic loop.

Modes: `eager` (the default PyTorch users get), `compiled` (torch.compile, inductor, of the
whole train step: batch gather, forward, loss, backward through AOTAutograd's compiled graphs,
and the Adam step, which inductor fuses into one loop over each parameter; nn.LSTM itself is a
Dynamo graph break and runs ATen's kernel in between) and, on cuda, `fused`: the whole train step (batch
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
The model is in train() mode for steps and eval() mode for evaluation and predict (BatchNorm:
batch statistics and running-statistic updates, or the running statistics); the optimizer is
the spec's (TORCH_OPTIMIZERS: Adam, or SGD with torch's own coupled weight decay).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from backends.base import EVAL_BATCH, BackendBase, Unsupported
from backends.torch_layers import (
    LSTM_IMPLEMENTATIONS,
    LastHidden,
    build_module,
    choose_lstm_implementation,
    from_torch_layout,
    to_torch_layout,
)
from bench.config import RunConfig
from bench.data import Dataset
from bench.init import Weights
from bench.tasks import SGD, Adam, TaskSpec


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


def torch_adam(
    spec: Adam, params: list, cuda: bool, lr: float | torch.Tensor
) -> torch.optim.Optimizer:
    # on cuda one kernel for every mode; state and step on the device. On cpu the foreach
    # kernel takes no tensor lr (torch: "not supported for capturable=False and foreach=True"),
    # so a scheduled task's Adam runs the single-tensor loop there (the same arithmetic).
    implementation = {"fused": True, "capturable": True} if cuda else {"foreach": True}
    if not cuda and torch.is_tensor(lr):
        implementation = {"foreach": False}
    return torch.optim.Adam(
        params,
        lr=lr,
        betas=(spec.beta_1, spec.beta_2),
        eps=spec.epsilon,
        **implementation,
    )


def torch_sgd(
    spec: SGD, params: list, cuda: bool, lr: float | torch.Tensor
) -> torch.optim.Optimizer:
    """torch.optim.SGD is the spec's definition (bench/tasks.py): coupled weight decay."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
        **({"fused": True} if cuda else {"foreach": True}),
    )


# One builder per optimizer spec: (spec, trainable parameters, on cuda, learning rate) -> the
# optimizer. A task with a schedule gets its rate as a 0-d tensor on the device, which
# begin_epoch fills in place: torch.compile then reads it as an input (a float would be a
# constant it recompiles for) and a CUDA graph reads its new value on replay.
TORCH_OPTIMIZERS = {Adam: torch_adam, SGD: torch_sgd}
OPTIMIZER_KERNELS = {Adam: "Adam fused=True capturable=True", SGD: "SGD fused=True"}  # cuda


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
        """What ran: the mode (compiled: with the task's optimizer), and on cuda the optimizer's
        kernel, cuDNN autotuning and memory format; for an LSTM, its kernel and dtype."""
        step = f"forward+backward+{type(self.task.optimizer).__name__}"
        parts = [
            {
                "eager": "eager",
                "compiled": f"torch.compile(inductor, whole train step: {step})",
                "fused": "CUDA graph of the whole eager train step, 1 launch/step",
            }[self.mode]
        ]
        if self.device.type == "cuda":
            kernel = OPTIMIZER_KERNELS[type(self.task.optimizer)]
            parts.append(f"{kernel}; cudnn.benchmark=True")
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
        # with augmentation, storage of its own (on cpu too): begin_epoch writes into it
        copy = task.augmentation is not None
        self.x_train = self.host_inputs(data.x_train).to(self.device, copy=copy)
        self.y_train = torch.from_numpy(data.y_train).to(self.device, torch.int64)
        self.x_test = self.to_device_inputs(data.x_test)
        self.y_test = torch.from_numpy(data.y_test).to(self.device, torch.int64)
        params = [p for p in self.model.parameters() if p.requires_grad]
        spec = task.optimizer
        lr: float | torch.Tensor = spec.learning_rate
        if task.schedule is not None:
            lr = torch.tensor(spec.learning_rate, dtype=torch.float32, device=self.device)
        self.optimizer = TORCH_OPTIMIZERS[type(spec)](spec, params, self.device.type == "cuda", lr)
        self.steps_per_epoch = len(data.y_train) // self.batch_size
        train_step = self.train_step
        if self.mode == "compiled":
            train_step = torch.compile(train_step, dynamic=False)
        self.compiled_train_step = train_step

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

    def host_inputs(self, x: np.ndarray) -> torch.Tensor:
        """Inputs on the host in the device copy's layout. Images go NCHW: laid out on the host,
        or, in channels-last memory, as NHWC storage seen through NCHW strides."""
        if x.ndim != 4:
            return torch.from_numpy(x)
        if self.channels_last:
            return torch.from_numpy(x).permute(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def to_device_inputs(self, x: np.ndarray) -> torch.Tensor:
        """One copy on the device (no second one on the way)."""
        return self.host_inputs(x).to(self.device)

    def load_weights(self, weights: Weights) -> None:
        state = to_torch_layout(self.task, weights)
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                tensor.copy_(torch.from_numpy(state[name]))

    def get_weights(self) -> Weights:
        # copies (on cpu .cpu() would return the parameters' own memory: a caller's "before"
        # would move with the training)
        state = {
            k: v.detach().to("cpu", copy=True).numpy() for k, v in self.model.state_dict().items()
        }
        return from_torch_layout(self.task, state)

    def forward_loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.model(inputs)
        return F.cross_entropy(logits.float(), labels)

    def train_step(self, index: torch.Tensor) -> torch.Tensor:
        """One step on the samples `index` names; compiled whole in `compiled` mode."""
        loss = self.forward_loss(self.x_train[index], self.y_train[index])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def begin_epoch(
        self,
        permutation: np.ndarray,
        learning_rate: float | None = None,
        x_train: np.ndarray | None = None,
    ) -> None:
        """The order; the epoch's rate into the optimizer's rate tensor, and augmented images
        into the training split's own storage (in place: the compiled step and the CUDA graph
        keep reading the tensors they were made with)."""
        self.check_recipe(learning_rate, x_train)
        if learning_rate is not None:
            for group in self.optimizer.param_groups:
                group["lr"].fill_(learning_rate)
        if x_train is not None:
            self.x_train.copy_(self.host_inputs(x_train))
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
        # the parameters and the buffers (BatchNorm's running statistics) the warm-up moves
        tensors = [*self.model.parameters(), *self.model.buffers()]
        saved = [tensor.detach().clone() for tensor in tensors]
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
            for tensor, value in zip(tensors, saved):
                tensor.copy_(value)
            for state in self.optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()  # exp_avg, exp_avg_sq and the step count
        torch.cuda.synchronize(self.device)

    def run_steps(self, first_step: int, num_steps: int) -> float:
        self.check_window(first_step, num_steps, self.steps_per_epoch * self.batch_size)
        self.model.train()  # BatchNorm: batch statistics, running statistics updated
        if self.mode == "fused":
            return self.replay_steps(first_step, num_steps)
        batch = self.batch_size
        for step in range(first_step, first_step + num_steps):
            loss = self.compiled_train_step(self.permutation[step * batch : (step + 1) * batch])
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
        self.model.eval()  # BatchNorm: the running statistics
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
        self.model.eval()
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
