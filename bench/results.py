"""The result schema, CSV / JSON writing, environment capture and the comparison table.

One CSV row per run. COLUMNS is the single source of truth for the column names and their
meaning; results/SCHEMA.md documents the same list (a test keeps the two in step). Columns are
never renamed silently: a change bumps SCHEMA_VERSION.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from backends import FRAMEWORK_PACKAGES
from bench.metrics import cpu_count, cpu_name, nvml_devices

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


def empty_row() -> dict[str, object]:
    return {name: None for name in COLUMNS} | {"schema_version": SCHEMA_VERSION}


def format_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def csv_line(row: dict[str, object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([format_value(row.get(c)) for c in COLUMNS])
    return buffer.getvalue()


def append_row(path: Path, row: dict[str, object]) -> None:
    """Append one row with a single write (header first if the file is new), then fsync."""
    line = csv_line(row)
    if not path.exists() or path.stat().st_size == 0:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(list(COLUMNS))
        line = header.getvalue() + line
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def repair_csv(path: Path) -> None:
    """Cut a torn last line (a writer killed mid-write leaves no final newline)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data[: data.rfind(b"\n") + 1]
    temporary = path.with_name(f".{path.name}.repair")
    temporary.write_bytes(keep)
    os.replace(temporary, path)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter, read from metadata (nothing imported)."""
    names = (*FRAMEWORK_PACKAGES, "numpy", "pandas", "nvidia-ml-py")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}{'-dirty' if dirty else ''}" if sha else None


def environment(command: list[str]) -> dict[str, object]:
    return {
        "schema_version": SCHEMA_VERSION,
        "command": " ".join(command),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": cpu_count(),
        "gpus": nvml_devices(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "bench_data_dir": os.environ.get("BENCH_DATA_DIR"),
    }


def write_environment(run_dir: Path, command: list[str]) -> None:
    write_atomic(run_dir / "env.json", json.dumps(environment(command), indent=2) + "\n")


TABLE_COLUMNS = (
    ("task", "task"),
    ("backend", "backend"),
    ("device", "device"),
    ("precision", "prec"),
    ("mode", "mode"),
    ("status", "status"),
    ("samples_per_s", "samples/s"),
    ("step_time_median_ms", "step ms"),
    ("step_time_p10_ms", "p10 ms"),
    ("step_time_p90_ms", "p90 ms"),
    ("compile_s", "compile s"),
    ("peak_alloc_mb", "alloc MiB"),
    ("data_resident_mb", "data MiB"),
    ("peak_rss_mb", "RSS MiB"),
    ("final_test_accuracy", "final acc"),
    ("best_test_accuracy", "best acc"),
    ("time_to_target_s", "to target s"),
)


def _cell(value: object) -> str:
    if value in (None, ""):
        return "-"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if number.is_integer() and abs(number) >= 100:
        return f"{int(number):,}"
    return f"{number:,.4g}" if abs(number) < 1 else f"{number:,.1f}"


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows grouped by task, fastest first; failed rows at the end of their task with why."""

    def order(row: dict[str, object]) -> tuple:
        speed = row.get("samples_per_s")
        return (str(row.get("task")), row.get("status") != "ok", -float(speed or 0))

    lines = [
        "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    notes = []
    for row in sorted(rows, key=order):
        lines.append("| " + " | ".join(_cell(row.get(name)) for name, _ in TABLE_COLUMNS) + " |")
        if row.get("status") != "ok" and row.get("error"):
            error = str(row["error"]).strip().splitlines()[-1][:200]
            notes.append(f"- `{row.get('cell_id')}`: {row.get('status')}: {error}")
        if row.get("test_hooks"):
            notes.append(f"- `{row.get('cell_id')}`: TEST HOOKS {row['test_hooks']}: not real")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text
