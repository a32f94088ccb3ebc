"""The one shape every backend has: the `Backend` protocol, and `BackendBase`, which holds what
every adapter would otherwise repeat (mode resolution, batch size, the refusals every framework
shares, the timed-window length, the evaluation batch).

Framework-free, like the rest of this package's top level: the adapters (torch_backend,
jax_backend, keras_backend) import their framework; this module imports none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: importing backends stays cheap
    import numpy as np

    from bench.config import RunConfig
    from bench.data import Dataset
    from bench.init import Weights
    from bench.tasks import TaskSpec

EVAL_BATCH = 1024  # test-split batch of every backend's evaluate (outside the timed windows)
TF32_ON_CPU = "tf32 is a CUDA tensor-core math mode; on cpu use fp32 or bf16"


class Unsupported(Exception):
    """This backend cannot run this configuration: the worker writes a `skipped` row with why."""


class Backend(Protocol):
    """What the worker (and the parity and contract tests) use; it never branches on the
    framework. A backend is made once per run, in the run's own process."""

    framework: str  # e.g. "torch", "keras-jax"
    mode: str  # the concrete mode ("default" resolved): eager | compiled | fused
    mechanism: str  # what ran, e.g. "torch.compile(inductor, forward+loss)"; setup may refine it
    window_steps: int  # steps per timed window: the run's --window-steps, or what setup needs

    def __init__(self, config: RunConfig, task: TaskSpec) -> None:
        """Set precision flags and threads; raise Unsupported for a device / mode / precision
        the framework cannot run, RuntimeError for a device it cannot see."""

    def versions(self) -> dict[str, str]:
        """Framework package versions."""

    def device_name(self) -> str | None:
        """The GPU's name; None on cpu."""

    def setup(self, weights: Weights, data: Dataset) -> None:
        """Build the IR, load the canonical weights, place the data on the device (one copy;
        each step gathers its batch there)."""

    def begin_epoch(
        self,
        permutation: np.ndarray,
        learning_rate: float | None = None,
        x_train: np.ndarray | None = None,
    ) -> None:
        """The harness's sample order for this epoch (int32); the epoch's learning rate when the
        task has a schedule (None: leave it), and its training inputs when the task augments
        them (None: keep those set up; else the same shape and dtype, replacing them on the
        device). Both come from bench/recipe.py, so every backend gets the same."""

    def run_steps(self, first_step: int, num_steps: int) -> float:
        """Train steps [first, first + num) of the epoch; return the last step's loss as a
        float, with the device synchronized."""

    def evaluate(self) -> tuple[float, float]:
        """(accuracy, mean loss) on the test split, never inside a timed window."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits, numpy in and out (parity tests)."""

    def get_weights(self) -> Weights:
        """The weights in the canonical layout (parity tests)."""

    def memory_peak_bytes(self) -> int | None:
        """The framework allocator's peak on the device; None where there is none (cpu)."""

    def reset_memory_peak(self) -> bool:
        """Start that peak again from what is allocated now; False where the framework cannot
        (JAX): the worker then reads it once, before the first evaluation."""

    def data_resident_bytes(self) -> int:
        """The dataset as setup placed it: one copy on the device."""

    def param_count(self) -> int:
        """Trainable parameters as the framework counts them."""


class BackendBase:
    """What every adapter shares. A subclass sets `framework` and `default_mode`, and calls
    `super().__init__(config, task)` before its framework-specific setup."""

    framework: str
    default_mode: str

    def __init__(self, config: RunConfig, task: TaskSpec) -> None:
        self.config = config
        self.task = task
        self.mode = self.default_mode if config.mode == "default" else config.mode
        self.batch_size = config.batch_size or task.batch_size
        self.window_steps = config.window_steps
        if config.precision == "tf32" and config.device == "cpu":
            raise Unsupported(TF32_ON_CPU)

    @staticmethod
    def no_gpu(framework: str, detail: str) -> RuntimeError:
        """The error for a cuda run whose framework sees no GPU: never a silent cpu run."""
        return RuntimeError(
            f"device cuda was requested but {framework} sees no GPU ({detail}); "
            "refusing to run on cpu"
        )

    def check_window(self, first_step: int, num_steps: int, epoch_samples: int) -> None:
        """Refuse steps past the epoch (an on-device slice would clamp and silently repeat
        the epoch's last batch)."""
        if (first_step + num_steps) * self.batch_size > epoch_samples:
            raise ValueError(
                f"steps [{first_step}, {first_step + num_steps}) of {self.batch_size} samples "
                f"run past the epoch's {epoch_samples} samples"
            )

    def check_recipe(self, learning_rate: float | None, x_train: np.ndarray | None) -> None:
        """begin_epoch's rate and inputs only for a task that has a schedule / augmentation
        (the backends set their optimizers and data up for those alone)."""
        if learning_rate is not None and self.task.schedule is None:
            raise ValueError(f"{self.task.name} has no learning-rate schedule to set")
        if x_train is not None and self.task.augmentation is None:
            raise ValueError(f"{self.task.name} has no augmentation: its inputs stay as set up")

    def memory_peak_bytes(self) -> int | None:
        return None

    def reset_memory_peak(self) -> bool:
        return True  # nothing to reset where there is no device allocator
