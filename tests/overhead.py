"""Does the harness add cost of its own? Its step time against bare loops, interleaved.

    python tests/overhead.py [--backends torch,jax,...] [--modes eager,compiled,fused,default]
        [--tasks mnist_cnn,sst2_lstm,...] [--blocks 3] [--seed 0] [--device cpu] [--threads 2]
        [--out DIR]
    python tests/overhead.py --quick        (1 block, MNIST only: a smoke check)
    make overhead [BACKENDS=...] [TASKS=...] [MODES=...] [BLOCKS=...]

Cells: every backend x mode x task asked for (modes eager, compiled, fused for every backend,
and `default` for the Keras backends, where it is compile()'s defaults; torch's default is
eager and JAX's compiled, already there). In each cell two kinds of process, each fresh:
  A  harness  `python -m bench run` of the cell: synthetic data of the task's shapes, 2 threads
              (--threads), the task's batch size, the cell's windows; its results.csv's
              step_time_median_ms
  B  bare     tests/overhead_bare.py: the same model and optimizer written with the framework's
              own API and nothing of the harness, started with the worker's environment
              (bench.cell.worker_environment, and its own empty compile cache as the runner
              gives a worker) and, where --threads is fewer than the cores, confined to as
              many cores, chosen as the worker chooses (bench.cell.run_cpus), its median over
              the same windows
Both sides run 3 epochs of 4 windows of W steps (4W steps an epoch; W from the cell's measured
step time, STEP_MS: windows of about a second, 1 to 25 steps), so both time the same steps:
the first window holds the compilation, it and two more are warm-up, the median is over the
last 9. The processes alternate in blocks of four, each block ABBA or BAAB (a balanced set of
both, shuffled by a seeded RNG, one per cell), `--blocks` blocks per cell.
A block's number is the log of harness over bare from its pairs (the mean log of its two A runs
minus that of its two B runs), so a drift of the machine's speed within the block cancels to
first order; the cell's ratio is the geometric mean over blocks, with a 95% Student-t interval
across blocks (scipy.stats.t), printed as `x1.02 [0.98, 1.06]`. A mode a backend lacks is
reported as skipped with the harness's reason (its row's status `skipped` and error).

One markdown line per cell is printed as the cell finishes (the table docs/MEASUREMENTS.md's
overhead section quotes); every process's number goes to --out (overhead.json, overhead.csv,
overhead.md, rewritten after each process). Nothing here is asserted: it is a measurement.
The estimated total is printed before the first process starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BARE = Path(__file__).resolve().parent / "overhead_bare.py"
SKIPPED_EXIT = 3  # overhead_bare.py's exit status for a mode its framework lacks
HARNESS, BARE_SIDE = "A", "B"
SIDE_NAMES = {HARNESS: "harness", BARE_SIDE: "bare"}
BACKEND_ORDER = ("torch", "jax", "keras-tensorflow", "keras-jax", "keras-torch")
MODE_ORDER = ("eager", "compiled", "fused", "default")
TASK_ORDER = ("mnist_cnn", "cifar10_cnn", "sst2_lstm", "imdb_lstm")
EPOCHS = 3
WINDOWS_PER_EPOCH = 4  # a Keras harness window is at least a quarter epoch: 4 keeps it W
SKIP_WINDOWS = 3  # the compile window and the two warm-up windows (the worker's default)
THREADS = 2  # the default; --threads
PROCESS_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class Plan:
    """One cell's windows: W steps, 4W steps an epoch, 3 epochs (12 windows, 12W steps)."""

    window_steps: int

    @property
    def steps_per_epoch(self) -> int:
        return WINDOWS_PER_EPOCH * self.window_steps

    @property
    def steps(self) -> int:
        return EPOCHS * self.steps_per_epoch


# ms/step of each cell's bare loop, measured on the 2-vCPU CI machine class under other load
# (2026-12, one-step windows, rounded): what sizes each cell's windows (window_steps) and the
# estimate printed before a run. Keras' torch `default` is its eager mode.
STEP_MS = {
    # MNIST: the bare medians of this check's own interleaved run, 2 threads, no other load
    # (2026-12-02, results/cpu/2026-12-02-overhead-mnist-*); the loaded one-step guesses before
    # (keras-torch 500 ms against 15 measured) gave its cells windows of 1-2 steps, 15-30 ms
    "mnist_cnn": {
        "torch": {"eager": 10, "compiled": 14},
        "jax": {"eager": 93, "compiled": 29, "fused": 20},
        "keras-tensorflow": {"eager": 33, "compiled": 13, "fused": 4, "default": 6},
        "keras-jax": {"eager": 33, "compiled": 25, "fused": 26, "default": 25},
        "keras-torch": {"eager": 15, "compiled": 15},
    },
    # CIFAR-10 CNN: one short `bench run` per cell, synthetic, 1 thread on one core (2026-12-04,
    # Intel Xeon VM); the older guesses (torch eager 700 ms against 15 measured) gave 1-step
    # windows, where the harness read x1.06 [1.03, 1.09] of the bare loop (torch eager, 3 blocks;
    # results/cpu/2026-12-04-overhead-cifar/first-attempt); runs default to 25-step windows
    "cifar10_cnn": {
        "torch": {"eager": 15, "compiled": 23},
        "jax": {"eager": 129, "compiled": 39, "fused": 415},
        "keras-tensorflow": {"eager": 47, "compiled": 20, "fused": 8, "default": 9},
        "keras-jax": {"eager": 65, "compiled": 38, "fused": 39, "default": 38},
        "keras-torch": {"eager": 24, "compiled": 30},
    },
    "sst2_lstm": {
        "torch": {"eager": 120, "compiled": 100},
        "jax": {"eager": 11600, "compiled": 100, "fused": 80},
        "keras-tensorflow": {"eager": 670, "compiled": 140, "fused": 105, "default": 100},
        "keras-jax": {"eager": 1560, "compiled": 150, "fused": 160, "default": 160},
        "keras-torch": {"eager": 1300, "compiled": 1580},
    },
    # IMDB LSTM: one short `bench run` per cell, synthetic, 1 thread on one core (2026-12-04,
    # Intel Xeon VM, 8 steps in 2-step windows); the loaded guesses before were 2-20x too high
    "imdb_lstm": {
        "torch": {"eager": 117, "compiled": 115},
        "jax": {"eager": 1210, "compiled": 129, "fused": 121},
        "keras-tensorflow": {"eager": 583, "compiled": 144, "fused": 138, "default": 143},
        "keras-jax": {"eager": 891, "compiled": 150, "fused": 176, "default": 163},
        "keras-torch": {"eager": 820, "compiled": 369},
    },
}
# Seconds a process takes besides its steps (start, imports, data, compilation; the harness's
# runner and calibration), measured the same way; torch.compile takes the longest.
START_S = {"harness": 20.0, "bare": 20.0}
COMPILE_S = {("torch", "compiled"): 40.0, ("keras-torch", "compiled"): 70.0}  # besides START_S


def step_ms(cell: Cell) -> float:
    """The measured guess; a cell without one (a mode the backend lacks) gets 100 ms."""
    mode = "eager" if (cell.backend, cell.mode) == ("keras-torch", "default") else cell.mode
    return STEP_MS[cell.task][cell.backend].get(mode, 100.0)


def plan_for(cell: Cell) -> Plan:
    """Windows of about half a second to a second on the measured machine (at most 25 steps,
    at least 1): a process then spends about 5-12 s on its steps, and a Keras harness window
    (one fit call, whose start-up of a few ms counts inside it) is long beside that start-up."""
    ms = step_ms(cell)
    for limit, steps in ((40, 25), (100, 10), (200, 5), (500, 2)):
        if ms < limit:
            return Plan(steps)
    return Plan(1)


# --- statistics and ordering (framework-free; tests/test_overhead.py) ---------------------------


def block_orders(blocks: int, rng: random.Random) -> list[str]:
    """`blocks` orders, each "ABBA" or "BAAB": as many of each as can be (one more of one, drawn,
    when odd), in an order drawn from `rng`."""
    orders = ["ABBA", "BAAB"] * (blocks // 2)
    if blocks % 2:
        orders.append(rng.choice(["ABBA", "BAAB"]))
    rng.shuffle(orders)
    return orders


def cell_rng(seed: int, task: str, backend: str, mode: str) -> random.Random:
    """One RNG per cell, so a cell's orders do not depend on which other cells run."""
    return random.Random(f"{seed}/{task}/{backend}/{mode}")


def block_log_ratio(harness: list[float], bare: list[float]) -> float:
    """log(harness / bare) of one block: mean log of its harness times minus that of its bare."""
    if not harness or not bare:
        raise ValueError("a block needs both sides")
    return sum(map(math.log, harness)) / len(harness) - sum(map(math.log, bare)) / len(bare)


def ratio_interval(log_ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The geometric-mean ratio over blocks and its Student-t interval (nan bounds for one)."""
    from scipy import stats

    count = len(log_ratios)
    if count == 0:
        raise ValueError("no blocks")
    mean = sum(log_ratios) / count
    if count == 1:
        return math.exp(mean), math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in log_ratios) / (count - 1))
    half = stats.t.ppf(0.5 + level / 2, count - 1) * sd / math.sqrt(count)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def format_ratio(ratio: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"x{ratio:.2f}"
    return f"x{ratio:.2f} [{low:.2f}, {high:.2f}]"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- cells -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    task: str
    backend: str
    mode: str


def cells_for(tasks: list[str], backends: list[str], modes: list[str]) -> list[Cell]:
    """Task by task, backend by backend; `default` only for the Keras backends."""
    cells = []
    for task in tasks:
        for backend in backends:
            for mode in modes:
                if mode == "default" and not backend.startswith("keras-"):
                    continue  # torch's default is eager, JAX's compiled: cells already there
                cells.append(Cell(task, backend, mode))
    return cells


def model_name(task_name: str) -> str:
    """Which model overhead_bare.py writes for the task; the task's layers must be exactly it."""
    from bench.tasks import CIFAR_CNN, SMALL_CNN, get_task, text_classifier

    layers = get_task(task_name).layers
    for name, known in (
        ("small_cnn", SMALL_CNN),
        ("cifar_cnn", CIFAR_CNN),
        ("lstm", text_classifier()),
    ):
        if layers == known:
            return name
    raise ValueError(f"tests/overhead_bare.py has no bare model for {task_name}'s layers")


def bare_spec(cell: Cell, device: str, seed: int, threads: int = THREADS) -> dict:
    from bench.data import DATASETS
    from bench.layers import LSTM, Embedding
    from bench.tasks import get_task

    task = get_task(cell.task)
    plan = plan_for(cell)
    spec = {
        "framework": cell.backend,
        "mode": cell.mode,
        "device": device,
        "threads": threads,
        "seed": seed,
        "model": model_name(cell.task),
        "input_shape": list(task.input_shape),
        "num_classes": task.num_classes,
        "batch_size": task.batch_size,
        "lr": task.optimizer.learning_rate,
        "betas": [task.optimizer.beta_1, task.optimizer.beta_2],
        "eps": task.optimizer.epsilon,
        "window_steps": plan.window_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "epochs": EPOCHS,
        "skip_windows": SKIP_WINDOWS,
        "param_count": task.param_count,
    }
    for layer in task.layers:
        if isinstance(layer, Embedding):
            spec.update(vocab_size=DATASETS[task.dataset].vocab_size, embedding_dim=layer.dim)
        if isinstance(layer, LSTM):
            spec["units"] = layer.units
    return spec


def expected_params(cell: Cell, spec: dict) -> int:
    """The task's parameter count; torch's nn.LSTM has a second bias vector (4 x units)."""
    extra = 4 * spec["units"] if cell.backend == "torch" and spec["model"] == "lstm" else 0
    return spec["param_count"] + extra


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What every process of a run shares."""

    device: str = "cpu"
    seed: int = 0
    timeout: float = PROCESS_TIMEOUT_S
    threads: int = THREADS


@dataclass
class Record:
    """One process: its side, where it ran in the cell, and what it gave."""

    task: str
    backend: str
    mode: str
    block: int
    order: str
    position: int
    side: str  # "harness" | "bare"
    status: str  # "ok" | "skipped" | "failed"
    step_ms: float | None = None
    wall_s: float = 0.0
    note: str = ""
    mechanism: str = ""
    window_steps: int | None = None
    window_step_ms: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # the bare Keras loop's fit_call_ms
    load_1min: float | None = None  # the machine's load average as the process ended


def run_harness(cell: Cell, settings: Settings) -> dict:
    device, seed, timeout = settings.device, settings.seed, settings.timeout
    plan = plan_for(cell)
    with tempfile.TemporaryDirectory(prefix="overhead-") as out:
        command = [sys.executable, "-m", "bench", "run", "--tasks", cell.task]
        command += ["--backends", cell.backend, "--mode", cell.mode, "--device", device]
        command += ["--data", "synthetic", "--threads", str(settings.threads)]
        command += ["--seeds", str(seed)]
        command += ["--train-limit", str(plan.steps_per_epoch * batch_size(cell.task))]
        command += ["--test-limit", "256", "--epochs", str(EPOCHS)]
        command += ["--window-steps", str(plan.window_steps), "--warmup-windows", "2"]
        command += ["--timeout", str(timeout), "--out", out, "--run-id", "x"]
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout + 60
        )
        path = Path(out) / "x" / "results.csv"
        if not path.exists():
            return {"status": "failed", "note": f"no results.csv: {result.stderr[-1500:]}"}
        with open(path, newline="") as handle:
            row = next(csv.DictReader(handle))
    status, value, note = row["status"], row["step_time_median_ms"], row["error"]
    if status == "ok" and not value:
        note = "no step time in results.csv"
    if status not in ("ok", "skipped") or note:
        status = "failed" if status != "skipped" else status
    return {
        "status": status,
        "step_ms": float(value) if value else None,
        "note": f"{row['status']}: {note}" if status == "failed" else note,
        "mechanism": row["mechanism"],
        "window_steps": int(row["window_steps"]) if row["window_steps"] else None,
    }


def run_bare(cell: Cell, settings: Settings) -> dict:
    device, seed, timeout = settings.device, settings.seed, settings.timeout
    from backends import compile_cache_environment
    from bench.cell import run_cpus, worker_environment
    from bench.config import RunConfig

    config = RunConfig(
        task=cell.task,
        backend=cell.backend,
        mode=cell.mode,
        device=device,
        threads=settings.threads,
        data="synthetic",
        seed=seed,
    )
    spec = bare_spec(cell, device, seed, settings.threads)
    cpus = run_cpus(config)  # as many cores as the harness's worker confines itself to
    with tempfile.TemporaryDirectory(prefix="overhead-cache-") as cache:
        env = worker_environment(config) | compile_cache_environment(cache)
        env["PYTHONPATH"] = ""  # nothing of the harness on the path: only the framework
        result = subprocess.run(
            [sys.executable, str(BARE), json.dumps(spec)],
            cwd=tempfile.gettempdir(),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
    lines = result.stdout.strip().splitlines()
    if result.returncode == SKIPPED_EXIT:
        return {"status": "skipped", "note": json.loads(lines[-1])["lacks"]}
    if result.returncode != 0 or not lines:
        return {"status": "failed", "note": f"exit {result.returncode}: {result.stderr[-1500:]}"}
    out = json.loads(lines[-1])
    note = ""
    if out["params"] != expected_params(cell, spec):
        note = f"bare model has {out['params']} parameters, the task {spec['param_count']}"
    return {
        "status": "failed" if note else "ok",
        "step_ms": out["step_ms"],
        "note": note,
        "window_steps": spec["window_steps"],
        "window_step_ms": [1e3 * s for s in out["window_step_s"]],
        "extra": out.get("extra", {}),
    }


def batch_size(task_name: str) -> int:
    from bench.tasks import get_task

    return get_task(task_name).batch_size


# --- output ------------------------------------------------------------------------------------

HEADER = (
    "| backend | mode | task | harness ms/step | bare ms/step | harness / bare [95%] | blocks |\n"
    "|---|---|---|---:|---:|---|---:|"
)


@dataclass
class CellResult:
    cell: Cell
    status: str  # "ok" | "skipped" | "failed"
    harness_ms: list[float] = field(default_factory=list)
    bare_ms: list[float] = field(default_factory=list)
    block_log_ratios: list[float] = field(default_factory=list)
    note: str = ""

    def summary(self) -> dict:
        out = asdict(self.cell) | {"status": self.status, "note": self.note}
        out.update(harness_ms=self.harness_ms, bare_ms=self.bare_ms)
        out["block_ratios"] = [math.exp(x) for x in self.block_log_ratios]
        if self.block_log_ratios:
            ratio, low, high = ratio_interval(self.block_log_ratios)
            out.update(ratio=ratio, low=None if math.isnan(low) else low)
            out["high"] = None if math.isnan(high) else high
        return out

    def line(self) -> str:
        c = self.cell
        if not self.block_log_ratios:
            note = " ".join(self.note.split())[:160]
            return f"| {c.backend} | {c.mode} | {c.task} | {self.status}: {note} | | | 0 |"
        ratio = format_ratio(*ratio_interval(self.block_log_ratios))
        harness, bare = median(self.harness_ms), median(self.bare_ms)
        blocks = len(self.block_log_ratios)
        suffix = f" ({self.status}: {self.note[:80]})" if self.status != "ok" else ""
        return f"| {c.backend} | {c.mode} | {c.task} | {harness:.2f} | {bare:.2f} | {ratio}{suffix} | {blocks} |"


class Output:
    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.records: list[Record] = []
        self.cells: list[CellResult] = []
        self.meta = {"command": sys.argv, "args": vars(args), "machine": machine()}

    def write(self) -> None:
        data = self.meta | {
            "cells": [c.summary() for c in self.cells],
            "records": [asdict(r) for r in self.records],
        }
        (self.folder / "overhead.json").write_text(json.dumps(data, indent=1))
        columns = [f for f in Record.__dataclass_fields__ if f not in ("window_step_ms", "extra")]
        with open(self.folder / "overhead.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(asdict(r) for r in self.records)
        lines = [HEADER, *(c.line() for c in self.cells)]
        (self.folder / "overhead.md").write_text("\n".join(lines) + "\n")


def machine() -> dict:
    from bench.metrics import cpu_count

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": name, "cpus": cpu_count(), "load_average": list(os.getloadavg())}


# --- the run -----------------------------------------------------------------------------------


def run_cell(cell: Cell, args: argparse.Namespace, output: Output) -> CellResult:
    settings = Settings(args.device, args.seed, args.timeout, args.threads)
    result = CellResult(cell, "ok")
    output.cells.append(result)
    orders = block_orders(args.blocks, cell_rng(args.seed, cell.task, cell.backend, cell.mode))
    for block, order in enumerate(orders):
        sides: dict[str, list[float]] = {HARNESS: [], BARE_SIDE: []}
        for position, side in enumerate(order):
            run = run_harness if side == HARNESS else run_bare
            clock = time.perf_counter()
            try:
                out = run(cell, settings)
            except subprocess.TimeoutExpired:
                out = {"status": "failed", "note": f"timed out after {args.timeout:.0f} s"}
            record = Record(
                cell.task, cell.backend, cell.mode, block, order, position, SIDE_NAMES[side],
                wall_s=time.perf_counter() - clock, load_1min=os.getloadavg()[0], **out,
            )  # fmt: skip
            output.records.append(record)
            output.write()
            shown = f"{record.step_ms:.2f} ms/step" if record.step_ms else record.status
            print(
                f"  {cell.task} {cell.backend} {cell.mode} block {block + 1} {order} "
                f"{record.side}: {shown} ({record.wall_s:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            if record.status == "skipped" and side == BARE_SIDE:
                # the bare loop lacks the mode: the cell's reason is the harness's own
                harness = run_harness(cell, settings)
                result.status = "skipped" if harness["status"] == "skipped" else "failed"
                result.note = harness["note"] or f"bare: {record.note}; harness ran it"
                return result
            if record.status != "ok":
                result.status, result.note = record.status, record.note
                return result
            sides[side].append(record.step_ms)
        result.harness_ms += sides[HARNESS]
        result.bare_ms += sides[BARE_SIDE]
        result.block_log_ratios.append(block_log_ratio(sides[HARNESS], sides[BARE_SIDE]))
        output.write()
    return result


def estimate_s(cells: list[Cell], blocks: int) -> float:
    """Seconds for the cells' processes (2 of each side a block), from STEP_MS and START_S."""
    total = 0.0
    for cell in cells:
        mode = "eager" if (cell.backend, cell.mode) == ("keras-torch", "default") else cell.mode
        if mode not in STEP_MS[cell.task][cell.backend]:  # a mode it lacks: one or two starts
            total += START_S["harness"] + START_S["bare"]
            continue
        steps_s = plan_for(cell).steps * step_ms(cell) / 1e3
        compile_s = COMPILE_S.get((cell.backend, cell.mode), 5.0)
        process_s = 2 * (steps_s + compile_s) + START_S["harness"] + START_S["bare"]
        total += 2 * blocks * process_s
    return total


def split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKEND_ORDER))
    parser.add_argument("--modes", default=",".join(MODE_ORDER))
    parser.add_argument("--tasks", default=",".join(TASK_ORDER))
    parser.add_argument("--blocks", type=int, default=3, help="ABBA/BAAB blocks per cell")
    parser.add_argument("--seed", type=int, default=0, help="seeds the block orders and data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=THREADS, help="CPU threads per process")
    parser.add_argument("--timeout", type=float, default=PROCESS_TIMEOUT_S, help="per process")
    parser.add_argument("--out", default=None, help="folder (default results/overhead-<time>)")
    parser.add_argument("--quick", action="store_true", help="1 block, mnist_cnn only")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.tasks = 1, "mnist_cnn"
    for axis, valid in (("backends", BACKEND_ORDER), ("modes", MODE_ORDER), ("tasks", TASK_ORDER)):
        values = split(getattr(args, axis))
        unknown = [v for v in values if v not in valid]
        if unknown or not values:
            parser.error(f"--{axis}: {', '.join(unknown) or 'none'}; valid: {', '.join(valid)}")
        setattr(args, axis, values)
    if args.blocks < 1:
        parser.error("--blocks must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cells = cells_for(args.tasks, args.backends, args.modes)
    folder = Path(args.out or ROOT / "results" / time.strftime("overhead-%Y%m%d-%H%M%S"))
    output = Output(folder, args)
    seconds = estimate_s(cells, args.blocks)
    print(
        f"{len(cells)} cells x {args.blocks} blocks x 4 processes = "
        f"{4 * len(cells) * args.blocks} processes, estimated {seconds / 60:.0f} min "
        f"(a skipped cell takes one or two); numbers -> {folder}",
        flush=True,
    )
    print(HEADER, flush=True)
    started = time.perf_counter()
    for cell in cells:
        print(run_cell(cell, args, output).line(), flush=True)
    output.meta["total_s"] = time.perf_counter() - started
    output.write()
    print(f"took {output.meta['total_s'] / 60:.0f} min; numbers in {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
