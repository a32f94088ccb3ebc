"""One run, inside its own fresh process: environment, backend, the clock, one result row.

    python -m bench.worker --config '<RunConfig JSON>' --out CELL_DIR [--progress-fd N]

The runner starts this with the environment from `bench.cell.worker_environment` already set, so no
framework sees another setting. The worker owns the clock: it calls the backend's run_steps
for windows of steps (each returns with the device synchronized) and times each with
perf_counter. Phases are timed apart: import, data, setup, first dispatch (compile), warm-up
windows, steady windows, evaluation. It writes CELL_DIR/result.json (the row),
windows.csv (every timed window) and history.csv (one line per epoch).

A cpu run given fewer threads than the cores it may use first confines itself to that many
cores (bench.cell.run_cpus: the thread settings alone leave XLA's and TensorFlow's pools wider).
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
import sys
import time
import traceback
from pathlib import Path

from backends import Unsupported, load_backend_class
from bench import data as datasets
from bench.calibration import Probe, calibrate
from bench.cell import base_row, confine, worker_environment
from bench.config import RunConfig
from bench.hooks import apply_hooks, test_hooks_in_use
from bench.init import epoch_permutation, initial_weights
from bench.metrics import NvmlProbe, Window, cpu_count, cpu_name, peak_rss_mb, step_time_stats
from bench.recipe import epoch_recipe
from bench.results import write_atomic
from bench.tasks import get_task

OOM_MARKERS = ("out of memory", "resource_exhausted", "resourceexhausted", "outofmemory")


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class TooFewWindows(Exception):
    """The schedule leaves no steady window: a row with an empty step time is never `ok`."""


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


def timed_window(backend, first_step: int, num_steps: int) -> tuple[float, float, float]:
    """One timed window: (loss, wall seconds, process CPU seconds) of one run_steps call, which
    returns with the device synchronized. Nothing else happens between the two clock reads."""
    clock, cpu_clock = time.perf_counter(), time.process_time()
    loss = backend.run_steps(first_step, num_steps)
    return loss, time.perf_counter() - clock, time.process_time() - cpu_clock


class Run:
    """One run's phases, filling `row` as they go, so a failure keeps what was measured."""

    def __init__(self, config: RunConfig, out_dir: Path, row: dict, progress: Progress) -> None:
        self.config, self.out_dir, self.row, self.progress = config, out_dir, row, progress
        self.task = get_task(config.task)
        self.batch_size = config.batch_size or self.task.batch_size
        self.epochs = config.epochs or self.task.epochs
        self.windows: list[Window] = []
        self.history: list[dict] = []
        self.train_time = self.eval_time = 0.0
        self.seen_sizes: set[int] = set()
        self.train_peak: int | None = None
        self.peak_counts = True  # False once the allocator's peak can no longer be reset

    def load(self) -> None:
        """Framework, data and initial weights; the calibration and NVML's baseline first."""
        config, task, row = self.config, self.task, self.row
        row.update(calibrate())  # numpy only, before any framework is imported
        self.nvml = NvmlProbe()  # its baseline: the device's memory before the framework loads
        clock = time.perf_counter()
        backend = load_backend_class(config.backend)(config, task)
        self.backend = apply_hooks(backend, config.cell_id, config.seed, config.backend)
        row["import_s"] = time.perf_counter() - clock
        row.update(mode=backend.mode, mechanism=backend.mechanism)
        row["framework_version"] = " ".join(f"{k}={v}" for k, v in backend.versions().items())
        row["device_name"] = backend.device_name() or cpu_name()
        clock = time.perf_counter()
        synthetic = config.data == "synthetic"
        data = datasets.load(
            task.dataset,
            data_dir=config.data_dir,
            synthetic=synthetic,
            train_limit=config.train_limit,  # a twin makes only the samples the run uses
            test_limit=config.test_limit,
        )
        self.data = limit(data, config.train_limit, config.test_limit)
        self.weights = initial_weights(task.layers, task.input_shape, config.seed)
        row["data_s"] = time.perf_counter() - clock
        self.steps_per_epoch = len(self.data.y_train) // self.batch_size
        if self.steps_per_epoch < 1:
            samples = len(self.data.y_train)
            raise ValueError(f"{samples} training samples make no batch of {self.batch_size}")
        row.update(
            train_samples=self.steps_per_epoch * self.batch_size,
            steps_per_epoch=self.steps_per_epoch,
        )

    def setup(self) -> None:
        """The model and the data on the device; from here the allocator's peak is training's
        (reset now, read before each evaluation and reset after it; a framework that cannot
        reset, JAX, is read before the first evaluation only)."""
        clock = time.perf_counter()
        self.backend.setup(self.weights, self.data)
        row = self.row
        row["setup_s"] = time.perf_counter() - clock
        row["params"] = self.backend.param_count()
        row["mechanism"] = self.backend.mechanism  # as setup resolved it (compilation, kernels)
        row["data_resident_mb"] = self.backend.data_resident_bytes() / 2**20
        row["window_steps"] = self.backend.window_steps
        self.nvml.sample()
        self.backend.reset_memory_peak()

    def check_schedule(self) -> None:
        """Fail before training when the planned windows leave no steady one (after the first
        dispatch and the warm-up windows): such a run could only write an empty step time."""
        seen: set[int] = set()
        phases = [
            window_phase(index, steps, seen, self.config.warmup_windows)
            for index, (_, steps) in enumerate(
                window for epoch in range(self.epochs) for window in self.plan(epoch)
            )
        ]
        if "steady" not in phases:
            total = self.epochs * self.steps_per_epoch
            raise TooFewWindows(
                f"no steady window: {self.epochs} epoch(s) of {self.steps_per_epoch} steps in "
                f"windows of {self.backend.window_steps} make {len(phases)} windows, all of them "
                f"the first dispatch or warm-up ({self.config.warmup_windows} warm-up windows); "
                f"train more steps ({total} now: --epochs, --train-limit) or pass a smaller "
                "--window-steps"
            )

    def plan(self, epoch: int) -> list[tuple[int, int]]:
        """The epoch's windows; the first of the run is the first dispatch (the compile)."""
        window_steps = self.backend.window_steps
        if epoch > 0:
            return plan_windows(self.steps_per_epoch, 0, window_steps)
        first = min(window_steps if self.backend.mode == "fused" else 1, self.steps_per_epoch)
        return [(0, first), *plan_windows(self.steps_per_epoch, first, window_steps)]

    def begin_epoch(self, epoch: int) -> None:
        """The epoch's order, and its learning rate and augmented images where the task has a
        schedule or an augmentation (bench/recipe.py), given to the backend. Counted as training
        time (time-to-target), never inside a timed window."""
        permutation = epoch_permutation(self.config.seed, epoch, len(self.data.y_train))
        recipe = epoch_recipe(self.task, self.config.seed, epoch, self.data.x_train)
        self.backend.begin_epoch(permutation, recipe.learning_rate, recipe.x_train)

    def train_epoch(self, epoch: int, probe: Probe) -> list[float]:
        """The epoch's timed windows; the machine-state probe and NVML run between them."""
        clock = time.perf_counter()
        self.begin_epoch(epoch)
        self.train_time += time.perf_counter() - clock
        probe_ms, losses = probe(), []  # the machine's speed now, after the evaluation
        for first_step, num_steps in self.plan(epoch):
            loss, seconds, cpu_seconds = timed_window(self.backend, first_step, num_steps)
            self.train_time += seconds
            probe_before, probe_ms = probe_ms, probe()  # outside the timed window
            phase = window_phase(
                len(self.windows), num_steps, self.seen_sizes, self.config.warmup_windows
            )
            around = math.sqrt(probe_before * probe_ms)
            window = Window(epoch, first_step, num_steps, seconds, phase, loss, cpu_seconds, around)
            self.windows.append(window)
            losses.append(loss)
            self.row["final_train_loss"] = loss
            if not math.isfinite(loss):
                self.record_windows()
                raise Diverged(f"training loss is {loss} at epoch {epoch + 1}, step {first_step}")
            done = epoch * self.steps_per_epoch + first_step + num_steps
            total = self.epochs * self.steps_per_epoch
            self.progress.send(epoch=epoch + 1, epochs=self.epochs, done=done, total=total)
            self.nvml.maybe_sample()  # between windows, at most once a second
        self.record_windows()
        self.nvml.sample()
        self.read_memory_peak()
        return losses

    def read_memory_peak(self) -> None:
        peak = self.backend.memory_peak_bytes() if self.peak_counts else None
        if peak is not None:
            self.train_peak = max(self.train_peak or 0, peak)
            self.row["peak_alloc_mb"] = self.train_peak / 2**20

    def evaluate(self, epoch: int, losses: list[float]) -> dict:
        """The epoch's history entry, with test accuracy on real data (never timed as training)."""
        entry = {
            "epoch": epoch + 1,
            "train_time_s": self.train_time,
            "train_loss": sum(losses) / len(losses),
        }
        if self.data.synthetic:
            return entry | {"test_accuracy": None, "test_loss": None, "eval_s": None}
        clock = time.perf_counter()
        accuracy, test_loss = self.backend.evaluate()
        seconds = time.perf_counter() - clock
        self.eval_time += seconds
        self.peak_counts = self.peak_counts and self.backend.reset_memory_peak()
        entry.update(test_accuracy=accuracy, test_loss=test_loss, eval_s=seconds)
        record_accuracy(self.row, entry, self.task.target_accuracy, epoch + 1, self.train_time)
        return entry

    def record_windows(self) -> None:
        record_windows(self.row, self.windows, self.batch_size, self.train_time, self.task)

    def end_epoch(self, epoch: int, entry: dict) -> None:
        self.history.append(entry)
        self.row["epochs"] = epoch + 1
        self.row["eval_time_s"] = self.eval_time
        write_csv(self.out_dir / "history.csv", self.history)
        write_csv(self.out_dir / "windows.csv", [dataclasses.asdict(w) for w in self.windows])
        self.progress.send(
            force=True,
            epoch=epoch + 1,
            epochs=self.epochs,
            done=(epoch + 1) * self.steps_per_epoch,
            total=self.epochs * self.steps_per_epoch,
            accuracy=entry["test_accuracy"],
        )

    def finish(self) -> None:
        nvml = self.nvml
        self.row["peak_nvml_mb"] = nvml.peak_bytes / 2**20 if nvml.peak_bytes else None
        self.row["nvml_source"] = nvml.source if nvml.peak_bytes else None


def run(config: RunConfig, out_dir: Path, row: dict, progress: Progress) -> None:
    """Fill `row` as the run goes, so a failure keeps what was measured before it."""
    started = time.perf_counter()
    job = Run(config, out_dir, row, progress)
    progress.send(force=True, phase="loading")  # phases, for a run killed for time to name
    job.load()
    progress.send(force=True, phase="setup")
    job.setup()
    job.check_schedule()
    progress.send(force=True, phase="training")  # then an event after each window
    probe = Probe()
    for epoch in range(job.epochs):
        losses = job.train_epoch(epoch, probe)
        job.end_epoch(epoch, job.evaluate(epoch, losses))
    job.finish()
    row["total_time_s"] = time.perf_counter() - started


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
    cpus = confine(config)  # before the thread count is read and before any framework starts
    if cpus is not None:
        print(f"worker: confined to CPU {','.join(map(str, cpus))} (threads {config.threads})")
    config = dataclasses.replace(config, threads=config.threads or cpu_count())
    os.environ.update(worker_environment(config, base={}))  # in case it was started by hand
    args.out.mkdir(parents=True, exist_ok=True)
    row = base_row(config)
    row["test_hooks"] = test_hooks_in_use(config.cell_id) or None
    started = time.perf_counter()
    try:
        run(config, args.out, row, Progress(args.progress_fd))
        if row["step_time_median_ms"] is None:  # the schedule check should have said so
            raise TooFewWindows("the run timed no steady window, so it has no step time")
        row["status"] = "ok"
    except Unsupported as error:
        row.update(status="skipped", error=str(error))
    except Diverged as error:
        row.update(status="diverged", error=str(error))
    except TooFewWindows as error:
        row.update(status="failed", error=str(error))
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
