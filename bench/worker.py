"""One run, inside its own fresh process: environment, backend, the clock, one result row.

    python -m bench.worker --config '<RunConfig JSON>' --out CELL_DIR [--progress-fd N]

The runner starts this with the environment from `bench.cell.worker_environment` already set, so no
framework sees another setting. The worker owns the clock: it calls the backend's run_steps
for windows of steps (each returns with the device synchronized) and times each with
perf_counter. Phases are timed apart: import, data, setup, first dispatch (compile), warm-up
windows, steady windows, evaluation. It writes CELL_DIR/result.json (the row),
windows.csv (every timed window) and history.csv (one line per epoch).

Before the framework is imported it records a machine-speed calibration (bench/calibration.py)
in the row, so that `bench gate` can compare runs made on different machines.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from backends import Unsupported, load_backend_class
from bench import data as datasets
from bench.calibration import Probe, calibrate
from bench.cell import base_row, worker_environment
from bench.config import RunConfig
from bench.init import epoch_permutation, initial_weights
from bench.metrics import NvmlProbe, Window, cpu_count, cpu_name, peak_rss_mb, step_time_stats
from bench.results import write_atomic
from bench.tasks import get_task

OOM_MARKERS = ("out of memory", "resource_exhausted", "resourceexhausted", "outofmemory")
# Test-only fault injection, inactive unless set: BENCH_TEST_FAULT applies to every run,
# BENCH_TEST_FAULTS (JSON {cell_id: fault}) to the named runs.
FAULT_VARIABLE = "BENCH_TEST_FAULT"
FAULTS_VARIABLE = "BENCH_TEST_FAULTS"
# Test-only regressions for the gate's proof tests, inactive unless set; a row made under any
# test hook names it in its `test_hooks` column (and `bench baseline` refuses such rows).
SLOWDOWN_VARIABLE = "BENCH_TEST_SLOWDOWN"  # e.g. 0.15: every timed window takes 15% longer,
# busy (work on the CPU, as a slower train step does, so wall and CPU time both grow)
CORRUPT_LABELS_VARIABLE = "BENCH_TEST_CORRUPT_LABELS"  # e.g. 0.4: that share of training labels
# is moved to the next class (label + 1 mod classes), a systematic error that costs accuracy


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class Progress:
    """JSON lines to the runner on a pipe of its own (frameworks may print on stdout)."""

    def __init__(self, descriptor: int | None) -> None:
        self.stream = os.fdopen(descriptor, "w", buffering=1) if descriptor is not None else None
        self.last = 0.0

    def send(self, force: bool = False, **event: object) -> None:
        now = time.perf_counter()
        if self.stream is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        try:
            self.stream.write(json.dumps(event) + "\n")
        except OSError:  # the runner is gone; the run itself goes on
            self.stream = None


def plan_windows(steps: int, first: int, size: int) -> list[tuple[int, int]]:
    """(first_step, num_steps) windows covering steps [first, steps)."""
    return [(start, min(size, steps - start)) for start in range(first, steps, size)]


def is_oom(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in OOM_MARKERS)


def run(config: RunConfig, out_dir: Path, row: dict, progress: Progress) -> None:
    """Fill `row` as the run goes, so a failure keeps what was measured before it."""
    started = time.perf_counter()
    task = get_task(config.task)
    batch_size = config.batch_size or task.batch_size
    epochs = config.epochs or task.epochs
    slowdown, corrupt_fraction = test_regressions()
    row.update(calibrate())  # numpy only, before any framework is imported
    nvml = NvmlProbe()  # its baseline: the device's memory before the framework loads

    clock = time.perf_counter()
    backend = load_backend_class(config.backend)(config)
    row["import_s"] = time.perf_counter() - clock
    row.update(mode=backend.mode, mechanism=backend.mechanism)
    row["framework_version"] = " ".join(f"{k}={v}" for k, v in backend.versions().items())
    row["device_name"] = backend.device_name() or cpu_name()

    clock = time.perf_counter()
    data = datasets.load(
        task.dataset, data_dir=config.data_dir, synthetic=config.data == "synthetic"
    )
    data = limit(data, config.train_limit, config.test_limit)
    if corrupt_fraction:
        data = corrupt_labels(data, corrupt_fraction, task.num_classes, config.seed)
    weights = initial_weights(task.layers, task.input_shape, config.seed)
    row["data_s"] = time.perf_counter() - clock
    steps_per_epoch = len(data.y_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(data.y_train)} training samples make no batch of {batch_size}")
    row.update(train_samples=steps_per_epoch * batch_size, steps_per_epoch=steps_per_epoch)

    clock = time.perf_counter()
    backend.setup(task, weights, data)
    row["setup_s"] = time.perf_counter() - clock
    row["params"] = backend.param_count()
    row["mechanism"] = backend.mechanism  # as setup resolved it (compilation, kernels)
    row["data_resident_mb"] = backend.data_resident_bytes() / 2**20
    nvml.sample()
    # From here the allocator's peak is training's: reset now, read before each evaluation and
    # reset after it; a framework that cannot reset (JAX) is read before the first one only.
    backend.reset_memory_peak()
    peak_counts, train_peak = True, None
    fault = injected_fault(config.cell_id)
    inject_fault(fault)

    # A backend may ask for other windows (e.g. whole epochs where its loop cannot be cut finer).
    window_steps = getattr(backend, "window_steps", None) or config.window_steps
    row["window_steps"] = window_steps
    first_dispatch = min(window_steps if backend.mode == "fused" else 1, steps_per_epoch)
    windows: list[Window] = []
    history: list[dict] = []
    probe = Probe()
    train_time = eval_time = 0.0
    seen_sizes: set[int] = set()
    total_steps = epochs * steps_per_epoch
    for epoch in range(epochs):
        clock = time.perf_counter()
        backend.begin_epoch(epoch_permutation(config.seed, epoch, len(data.y_train)))
        train_time += time.perf_counter() - clock
        probe_ms = probe()  # the machine's speed now, after the evaluation
        start = first_dispatch if epoch == 0 else 0
        plan = plan_windows(steps_per_epoch, start, window_steps)
        if epoch == 0:
            plan.insert(0, (0, first_dispatch))
        epoch_losses = []
        for first_step, num_steps in plan:
            probe_before = probe_ms
            clock, cpu_clock = time.perf_counter(), time.process_time()
            loss = backend.run_steps(first_step, num_steps)
            if slowdown:  # test-only: a slower train step, inside the timed window
                busy_wait(
                    slowdown * (time.perf_counter() - clock),
                    slowdown * (time.process_time() - cpu_clock),
                )
            seconds = time.perf_counter() - clock
            cpu_seconds = time.process_time() - cpu_clock
            train_time += seconds
            probe_ms = probe()  # outside the timed window
            around = math.sqrt(probe_before * probe_ms)
            phase = window_phase(len(windows), num_steps, seen_sizes, config.warmup_windows)
            windows.append(
                Window(epoch, first_step, num_steps, seconds, phase, loss, cpu_seconds, around)
            )
            epoch_losses.append(loss)
            if fault == "nan" and len(windows) > 1:
                loss = float("nan")  # test-only: the loss a diverging run reports
            row["final_train_loss"] = loss
            if not math.isfinite(loss):
                record_windows(row, windows, batch_size, train_time, task)
                raise Diverged(f"training loss is {loss} at epoch {epoch + 1}, step {first_step}")
            done = epoch * steps_per_epoch + first_step + num_steps
            progress.send(epoch=epoch + 1, epochs=epochs, done=done, total=total_steps)
            nvml.maybe_sample()  # between windows, at most once a second
        record_windows(row, windows, batch_size, train_time, task)
        nvml.sample()
        peak = backend.memory_peak_bytes() if peak_counts else None
        if peak is not None:
            train_peak = max(train_peak or 0, peak)
            row["peak_alloc_mb"] = train_peak / 2**20
        entry = {
            "epoch": epoch + 1,
            "train_time_s": train_time,
            "train_loss": sum(epoch_losses) / len(epoch_losses),
        }
        if data.synthetic:
            entry.update(test_accuracy=None, test_loss=None, eval_s=None)
        else:
            clock = time.perf_counter()
            accuracy, test_loss = backend.evaluate()
            seconds = time.perf_counter() - clock
            eval_time += seconds
            peak_counts = peak_counts and backend.reset_memory_peak()
            entry.update(test_accuracy=accuracy, test_loss=test_loss, eval_s=seconds)
            record_accuracy(row, entry, task.target_accuracy, epoch + 1, train_time)
        history.append(entry)
        row["epochs"] = epoch + 1
        row["eval_time_s"] = eval_time
        write_csv(out_dir / "history.csv", history)
        write_csv(out_dir / "windows.csv", [dataclasses.asdict(w) for w in windows])
        progress.send(
            force=True,
            epoch=epoch + 1,
            epochs=epochs,
            done=(epoch + 1) * steps_per_epoch,
            total=total_steps,
            accuracy=entry["test_accuracy"],
        )

    row["peak_nvml_mb"] = nvml.peak_bytes / 2**20 if nvml.peak_bytes else None
    row["nvml_source"] = nvml.source if nvml.peak_bytes else None
    row["total_time_s"] = time.perf_counter() - started


def injected_fault(cell_id: str) -> str | None:
    faults = json.loads(os.environ.get(FAULTS_VARIABLE) or "{}")
    return faults.get(cell_id) or os.environ.get(FAULT_VARIABLE) or None


def test_hooks_in_use(cell_id: str) -> str:
    """The test-only hooks set for this run, as the `test_hooks` column shows them."""
    hooks = [f"{FAULT_VARIABLE}={injected_fault(cell_id)}"] if injected_fault(cell_id) else []
    for name in (SLOWDOWN_VARIABLE, CORRUPT_LABELS_VARIABLE):
        if os.environ.get(name):
            hooks.append(f"{name}={os.environ[name]}")
    return " ".join(hooks)


def test_regressions() -> tuple[float, float]:
    """(slowdown, corrupted label fraction) from the test-only variables; (0, 0) when unset."""
    values = []
    for name, upper in ((SLOWDOWN_VARIABLE, 10.0), (CORRUPT_LABELS_VARIABLE, 1.0)):
        text = os.environ.get(name) or "0"
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= upper:
            raise ValueError(f"{name} must be a number from 0 to {upper:g}, got {text!r}")
        values.append(value)
    return values[0], values[1]


def busy_wait(wall_seconds: float, cpu_seconds: float) -> None:
    """Test-only (the slowdown hook): spin until at least `wall_seconds` of wall time and
    `cpu_seconds` of process CPU time have passed, so that the window grows by the share asked
    for in both the wall and the CPU time per step (a multi-threaded step uses more CPU time
    than wall time, and a spin on one thread adds as much of each)."""
    wall_end = time.perf_counter() + wall_seconds
    cpu_end = time.process_time() + cpu_seconds
    while time.perf_counter() < wall_end or time.process_time() < cpu_end:
        pass


def corrupt_labels(
    data: datasets.Dataset, fraction: float, num_classes: int, seed: int
) -> datasets.Dataset:
    """Test-only: move a seeded `fraction` of the training labels to the next class."""
    chosen = np.random.default_rng([seed, 7919]).random(len(data.y_train)) < fraction
    labels = data.y_train.copy()
    labels[chosen] = (labels[chosen] + 1) % num_classes
    return dataclasses.replace(data, y_train=labels)


def inject_fault(fault: str | None) -> None:
    """Test-only: fail the way real runs fail, after setup. Does nothing when unset."""
    if not fault or fault == "nan":  # nan acts later, on the training loss
        return
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        time.sleep(10**6)
    elif fault == "raise":
        raise RuntimeError("injected failure")
    elif fault == "oom":
        raise RuntimeError("CUDA out of memory (injected)")
    else:
        raise ValueError(f"unknown injected fault {fault!r}: kill, hang, raise, oom or nan")


def window_phase(index: int, num_steps: int, seen_sizes: set[int], warmup_windows: int) -> str:
    """The first window is the compile; then `warmup_windows` more, and the first window of any
    new length (a new length may mean a new compilation), are warm-up; the rest are steady."""
    new_size = num_steps not in seen_sizes
    seen_sizes.add(num_steps)
    if index == 0:
        return "compile"
    if index <= warmup_windows or new_size:
        return "warmup"
    return "steady"


def record_windows(
    row: dict, windows: list[Window], batch_size: int, train_time: float, task
) -> None:
    row["compile_s"] = windows[0].seconds
    row["first_dispatch_steps"] = windows[0].steps
    row["warmup_s"] = sum(w.seconds for w in windows if w.phase == "warmup")
    row["train_time_s"] = train_time
    row.update(step_time_stats(windows, batch_size))
    if row["samples_per_s"]:
        row["train_tflops_per_s"] = 3 * task.flops_per_sample * row["samples_per_s"] / 1e12


def record_accuracy(
    row: dict, entry: dict, target: float | None, epoch: int, train_time: float
) -> None:
    accuracy = entry["test_accuracy"]
    row["final_test_accuracy"] = accuracy
    row["final_test_loss"] = entry["test_loss"]
    row["best_test_accuracy"] = max(accuracy, row["best_test_accuracy"] or 0.0)
    if target is not None and accuracy >= target and row["time_to_target_s"] is None:
        row["time_to_target_s"] = train_time
        row["epochs_to_target"] = epoch


def memory_figures(row: dict) -> str:
    figures = [("allocator peak", row.get("peak_alloc_mb")), ("NVML", row.get("peak_nvml_mb"))]
    figures.append(("host peak RSS", row.get("peak_rss_mb")))
    return ", ".join(f"{name} {value:.0f} MiB" for name, value in figures if value is not None)


def limit(data: datasets.Dataset, train: int | None, test: int | None) -> datasets.Dataset:
    if train is None and test is None:
        return data
    return dataclasses.replace(
        data,
        x_train=data.x_train[:train],
        y_train=data.y_train[:train],
        x_test=data.x_test[:test],
        y_test=data.y_test[:test],
    )


def write_csv(path: Path, records: list[dict]) -> None:
    if not records:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="RunConfig as JSON")
    parser.add_argument("--out", required=True, type=Path, help="the run's cell directory")
    parser.add_argument("--progress-fd", type=int, default=None)
    args = parser.parse_args(argv)
    config = RunConfig.from_json(args.config)
    config = dataclasses.replace(config, threads=config.threads or cpu_count())
    os.environ.update(worker_environment(config, base={}))  # in case it was started by hand
    args.out.mkdir(parents=True, exist_ok=True)
    row = base_row(config)
    row["test_hooks"] = test_hooks_in_use(config.cell_id) or None
    started = time.perf_counter()
    try:
        run(config, args.out, row, Progress(args.progress_fd))
        row["status"] = "ok"
    except Unsupported as error:
        row.update(status="skipped", error=str(error))
    except Diverged as error:
        row.update(status="diverged", error=str(error))
    except BaseException as error:  # noqa: BLE001 - every failure becomes a row
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}"
        if is_oom(error):
            row["peak_rss_mb"] = peak_rss_mb()
            message = f"out of memory at batch size {row['batch_size']} ({memory_figures(row)}): {message}"
        row.update(status="oom" if is_oom(error) else "failed", error=message[-2000:])
    row["peak_rss_mb"] = peak_rss_mb()
    row["total_time_s"] = row["total_time_s"] or time.perf_counter() - started
    write_atomic(args.out / "result.json", json.dumps(row, indent=1) + "\n")
    return 0 if row["status"] in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
