"""The result schema: the columns of a results.csv row, their meaning and their type.

COLUMNS is the single source of truth for the column names and their meaning; results/SCHEMA.md
documents the same list (a test keeps the two in step). Columns are never renamed silently: a
change bumps SCHEMA_VERSION. Every column has one type: INTEGER_COLUMNS and TEXT_COLUMNS say
which; every other column is a float. Empty means "not measured" (never zero).

Imports nothing heavy (no pandas): the worker writes rows through this module.
"""

from __future__ import annotations

import math
from numbers import Real

SCHEMA_VERSION = 3
# Versions this bench reads. 2 added cpu_time_median_ms, calib_matmul_ms, calib_dispatch_ms and
# test_hooks at the end; rows of version 1 read them as empty (not measured). 3 made
# peak_alloc_mb training's peak (no longer the whole process's: setup and evaluation are out) and
# added data_resident_mb and nvml_source at the end.
READABLE_SCHEMA_VERSIONS = (1, 2, 3)

STATUSES = ("ok", "failed", "oom", "timeout", "diverged", "skipped")

# name -> meaning (units in the name). Order is the CSV's column order.
COLUMNS: dict[str, str] = {
    "schema_version": "version of this schema",
    "run_id": "the matrix run this row belongs to (its results/<run_id>/ folder)",
    "cell_id": "this run's id within the matrix (its cells/<cell_id>/ folder)",
    "task": "task name (bench list)",
    "dataset": "dataset name",
    "data": "real | synthetic (synthetic rows have no accuracy)",
    "backend": "backend name (torch, jax, keras-tensorflow, keras-jax, keras-torch)",
    "framework_version": "version of the framework package(s), e.g. torch=2.13.0",
    "device": "cpu | cuda",
    "device_name": "GPU name, or the CPU model for cpu runs",
    "threads": "CPU threads given to the framework",
    "precision": "fp32 (TF32 off) | tf32 | bf16 (bf16 compute, fp32 weights)",
    "mode": "eager | compiled | fused, as resolved (never 'default')",
    "mechanism": "what the mode is in that framework, e.g. torch.compile(inductor, forward+loss)",
    "batch_size": "samples per training step",
    "seed": "seed of the initial weights and of the epoch permutations",
    "epochs": "epochs trained",
    "train_samples": "training samples per epoch (the last partial batch is dropped)",
    "steps_per_epoch": "training steps per epoch",
    "status": "ok | failed | oom | timeout | diverged | skipped",
    "attempt": "1 for the first try of this cell; higher after --retries or a resume",
    "error": "why the run is not ok (exception, exit code or signal, stderr tail); empty if ok",
    "import_s": "seconds to import the framework and the backend",
    "data_s": "seconds to load the dataset (from files or cache) and make the initial weights",
    "setup_s": "seconds to build the model, load the weights and place the data on the device",
    "compile_s": "seconds of the first dispatch (compilation + the first step, or first chunk)",
    "first_dispatch_steps": "steps in that first dispatch (1, or a whole chunk in fused mode)",
    "window_steps": "steps per timed window (--window-steps, unless the backend needs others)",
    "warmup_s": "seconds of the warm-up windows after the first dispatch (not in step stats)",
    "steady_windows": "timed steady-state windows (each ends with the device synchronized)",
    "steady_steps": "training steps inside the steady-state windows",
    "step_time_median_ms": "median over steady windows of (window seconds / window steps)",
    "step_time_p10_ms": "10th percentile of the same per-window step times",
    "step_time_p90_ms": "90th percentile of the same per-window step times",
    "step_time_mean_ms": "mean of the same per-window step times",
    "step_time_cv_pct": "coefficient of variation of the per-window step times, percent",
    "samples_per_s": "batch_size / step_time_median_ms: steady-state training throughput",
    "train_time_s": "seconds spent training (all windows incl. compile and warm-up; no eval)",
    "eval_time_s": "seconds spent evaluating on the test split (all epochs)",
    "total_time_s": "wall seconds of the worker process, import to result",
    "final_test_accuracy": "test accuracy after the last epoch (empty for synthetic data)",
    "best_test_accuracy": "best test accuracy after any epoch",
    "final_test_loss": "mean test cross-entropy after the last epoch",
    "final_train_loss": "loss of the last training step",
    "target_accuracy": "the task's target test accuracy",
    "time_to_target_s": "training seconds until the first epoch end at/above target; empty if never",
    "epochs_to_target": "epochs until the target was first reached; empty if never",
    "peak_alloc_mb": "framework allocator peak during training (resident data included; setup and evaluation excluded), MiB (empty on cpu)",
    "peak_nvml_mb": "device memory per NVML (the allocator's reserved pool), highest sample between windows, MiB (empty w/o NVML)",
    "peak_rss_mb": "host peak resident set size of the worker, MiB",
    "params": "trainable parameters as the framework counts them",
    "flops_per_sample": "analytic forward FLOPs per sample from the IR (multiply-add = 2)",
    "train_tflops_per_s": "3 * flops_per_sample * samples_per_s / 1e12 (forward + backward)",
    "cpu_time_median_ms": "median over steady windows of (process CPU seconds / window steps)",
    "calib_matmul_ms": "machine calibration: ms per fixed 256x256 float32 numpy matmul (fastest of 7)",
    "calib_dispatch_ms": "machine calibration: ms per fixed loop of 10,000 tiny numpy calls (fastest of 7)",
    "test_hooks": "test-only hooks active in the run (e.g. BENCH_TEST_SLOWDOWN=0.15); empty if real",
    "data_resident_mb": "the dataset (train and test inputs and labels) as setup placed it on the device, one copy, MiB",
    "nvml_source": "process (NVML's figure for this PID) | device (device memory used minus its level before the framework loaded; where NVML lists no PID of ours: containers, MIG)",
}

# Column types. Text columns read as strings, integer columns as Int64, all others as floats;
# in every type an empty cell reads as NA (not measured).
# fmt: off
TEXT_COLUMNS = (
    "run_id", "cell_id", "task", "dataset", "data", "backend", "framework_version", "device",
    "device_name", "precision", "mode", "mechanism", "status", "error", "test_hooks",
    "nvml_source",
)
INTEGER_COLUMNS = (
    "schema_version", "threads", "batch_size", "seed", "epochs", "train_samples",
    "steps_per_epoch", "attempt", "first_dispatch_steps", "window_steps", "steady_windows",
    "steady_steps", "epochs_to_target", "params", "flops_per_sample",
)
# fmt: on
FLOAT_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS and c not in INTEGER_COLUMNS)

# A results.csv without these cannot be grouped, ranked or matched; any other column that a
# file lacks (added to the schema after it was written) reads as empty.
REQUIRED_COLUMNS = (
    "cell_id", "task", "device", "device_name", "threads", "precision", "batch_size", "data",
    "backend", "mode", "status",
)  # fmt: skip


class ResultsError(ValueError):
    """Results that cannot be read (missing, malformed, another schema version): one line that
    names the file and what is wrong. The command line prints it and exits with code 2."""


def empty_row() -> dict[str, object]:
    """A row of every column, all empty but the schema version: what a run begins as."""
    return {name: None for name in COLUMNS} | {"schema_version": SCHEMA_VERSION}


def format_value(value: object) -> str:
    """A cell as the CSV holds it: empty for None, 6 significant digits for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def number(value: object) -> float | None:
    """A finite float, or None for empty / NA / not a number (empty means not measured).

    Takes typed values (int, float, None, as `bench.results.records` gives them) and CSV text.
    """
    if isinstance(value, str):
        try:
            result = float(value) if value.strip() else math.nan
        except ValueError:
            return None
    elif isinstance(value, Real) and not isinstance(value, bool):
        result = float(value)
    else:
        return None
    return result if math.isfinite(result) else None


def text(value: object) -> str:
    """A value as a label: "" for empty / NA, integers without a decimal point."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, str | Real) else ""
