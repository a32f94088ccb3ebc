"""One run's configuration, the valid choices for each axis, and their validation.

A run is (task, backend, device, precision, mode, batch size, seed) plus measurement settings.
The runner builds RunConfigs from the CLI, hands each to a fresh worker process as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from backends import BACKENDS
from bench.results import empty_row
from bench.results.schema import TEXT_COLUMNS
from bench.tasks import TASKS

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
# "default" resolves, per backend, to the mode that framework's users get by default.
MODES = ("default", "eager", "compiled", "fused")
DATA_KINDS = ("real", "synthetic")


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with code 2."""


def check_choice(axis: str, value: str, valid: tuple[str, ...] | list[str]) -> str:
    if value not in valid:
        raise UsageError(f"unknown {axis} {value!r}; valid {axis}s: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class RunConfig:
    task: str
    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    mode: str = "default"
    data: str = "real"  # "real" or "synthetic" (throughput only: accuracy left empty)
    data_dir: str | None = None
    batch_size: int | None = None  # None: the task's
    epochs: int | None = None  # None: the task's
    seed: int = 0
    train_limit: int | None = None  # use only the first N training samples (quick suites, tests)
    test_limit: int | None = None
    window_steps: int = 25  # steps per timed steady-state window (closed by a device sync)
    warmup_windows: int = 2  # windows after the first step that are timed but not counted
    threads: int | None = None  # CPU threads for every framework; None: all cores
    timeout_s: float = 3600.0  # per run, enforced by the runner

    def __post_init__(self) -> None:
        check_choice("task", self.task, list(TASKS))
        check_choice("backend", self.backend, list(BACKENDS))
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("mode", self.mode, MODES)
        check_choice("data kind", self.data, DATA_KINDS)
        for name in ("batch_size", "epochs", "train_limit", "test_limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}")
        if self.window_steps < 1 or self.warmup_windows < 0:
            raise UsageError("window_steps must be >= 1 and warmup_windows >= 0")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))

    @property
    def cell_id(self) -> str:
        """A file-system-safe name for the run, unique within a matrix."""
        parts = [self.task, self.backend, self.device, self.precision, self.mode]
        if self.batch_size:
            parts.append(f"b{self.batch_size}")
        parts.append(f"s{self.seed}")
        return "-".join(parts)


def fits_column(column: str, value: object) -> bool:
    if isinstance(value, bool):
        return False
    if column in TEXT_COLUMNS:
        return isinstance(value, str | int | float)
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class InvalidCell:
    """A matrix entry that is not a valid RunConfig: it gets a `failed` row, the rest goes on."""

    raw: dict
    error: str

    @property
    def cell_id(self) -> str:
        defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
        keys = ("task", "backend", "device", "precision", "mode")
        parts = [str(self.raw.get(key, defaults.get(key, "?"))) for key in keys]
        return "-".join(parts + [f"s{self.raw.get('seed', 0)}", "invalid"])

    def row(self) -> dict:
        """A failed row with what the entry says, where it fits the column: a text column takes
        any scalar, a number column a number only (a "big" batch size stays empty)."""
        row = empty_row()
        row.update({k: v for k, v in self.raw.items() if k in row and fits_column(k, v)})
        row.update(cell_id=self.cell_id, status="failed", error=f"invalid run: {self.error}")
        return row
