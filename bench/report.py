"""`bench report`: merge run directories into comparison tables, plots and one HTML page.

    bench report results/20260310-091500 results/20260311-140000 --out results/report
    bench report results/                   every run directory under results/ (has results.csv)
    python -m bench.report RUN_DIR [RUN_DIR ...] [--out DIR] [--tensorboard DIR]

Rows are compared only with their like: one table per (task, device, device name, precision,
batch size, data kind, and on a CPU the thread count), captioned with the environment of its
runs. Within a table the ok rows are ranked by steady-state samples/s; failed, skipped (and other
not-ok) rows are listed with their status and a short reason, never ranked. A cell that was
retried keeps its last row. Under --out (default: RUN_DIR/report for one run
directory, <their common parent>/report for several) it writes

    report.md       the tables, each with its environment, and links to the plots
    report.html     the same with the plots embedded: one self-contained page, readable offline
    comparison.csv  pivoted: one line per (table, metric), one column per backend/mode
    runs.csv        every merged row with the derived columns (rank, speed vs fastest, MFU)
    plots/*.png     per table: throughput, peak memory, test accuracy against training time,
                    compile time against step time (800 x 450 px each)

`--tensorboard DIR` also writes every cell's per-epoch history (cells/<cell_id>/history.csv) as
TensorBoard event files, DIR/<run-id>/<cell_id>/ (needs tensorboardX). Rows of another schema
version are an error (exit code 2). Imports no deep-learning framework; matplotlib is imported
only when drawing.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from backends import BACKENDS, FRAMEWORK_MODULES
from bench.results import COLUMNS, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, format_value

# Rows are like for like when these agree (threads only on the cpu, where they set the speed).
GROUP_COLUMNS = ("task", "device", "device_name", "threads", "precision", "batch_size", "data")
BACKEND_ORDER = tuple(BACKENDS)
MODE_ORDER = ("eager", "compiled", "fused", "default")
PLOT_SIZE_INCHES = (8.0, 4.5)
PLOT_DPI = 100  # 8 x 4.5 in at 100 dpi: every PNG is 800 x 450 px

# Dense (no sparsity) peak FLOP/s per precision policy, from the vendors' datasheets:
# NVIDIA H100 Tensor Core GPU datasheet: H100 SXM FP32 67 TFLOPS, TF32 989 and BF16 1,979 with
# sparsity (495 and 989 dense); H100 PCIe FP32 51, TF32 756 and BF16 1,513 with sparsity.
# NVIDIA H200 datasheet (SXM): the same compute as the H100 SXM. NVIDIA A100 Tensor Core GPU
# datasheet (SXM and PCIe): FP32 19.5, TF32 156, BF16 312 dense. fp32 (TF32 off) runs on the
# CUDA cores, so its peak is the non-tensor FP32 one. CPUs and other GPUs get no MFU.
DEVICE_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H100.*PCIe", {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12}),
    (r"H100.*(SXM|HBM3)", {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12}),
    (r"H200(?!.*NVL)", {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12}),
    (r"A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12}),
)

# Columns added to every merged row (runs.csv); the pivoted CSV's metrics, in order.
# fmt: off
DERIVED_COLUMNS = (
    "host", "run_dir", "label", "rank", "speed_vs_fastest", "samples_per_s_low",
    "samples_per_s_high", "device_peak_flops", "mfu_pct", "note",
)
PIVOT_METRICS = (
    "status", "rank", "speed_vs_fastest", "samples_per_s", "samples_per_s_low",
    "samples_per_s_high", "step_time_median_ms", "step_time_p10_ms", "step_time_p90_ms",
    "compile_s", "peak_alloc_mb", "data_resident_mb", "peak_nvml_mb", "peak_rss_mb",
    "train_tflops_per_s", "mfu_pct",
    "final_test_accuracy", "best_test_accuracy", "time_to_target_s", "framework_version",
    "mechanism", "host", "note",
)
# fmt: on
TENSORBOARD_SCALARS = (
    ("test/accuracy", "test_accuracy"),
    ("test/loss", "test_loss"),
    ("train/loss", "train_loss"),
    ("time/train_time_s", "train_time_s"),
    ("time/eval_s", "eval_s"),
)
READING_GUIDE = (
    "samples/s: steady-state training throughput (batch size / median step time); its range is "
    "the p10-p90 of the per-window step times. vs fastest: samples/s over the fastest ok row of "
    "the same table (rows of other tables are never compared). compile s: the first dispatch. "
    "alloc / NVML / RSS: peak framework allocator, this process on the GPU per NVML, host RSS, "
    "MiB. MFU: training FLOP/s over the GPU's dense datasheet peak for the precision. Columns: "
    "results/SCHEMA.md."
)


# A results.csv without these cannot be placed in a table; any other missing column reads empty.
REQUIRED_COLUMNS = ("cell_id", *GROUP_COLUMNS, "backend", "mode", "status")


class ReportError(ValueError):
    """Bad input (no run directory, another schema version): one line, exit code 2."""


@dataclass(frozen=True)
class Run:
    """One run directory: its rows (results.csv) and its environment (env.json)."""

    path: Path
    environment: dict
    rows: list[dict[str, str]]

    @property
    def host(self) -> str:
        return str(self.environment.get("hostname") or "unknown host")

    def description(self) -> str:
        parts = [f"run {self.path.name}"]
        if self.environment.get("git_sha"):
            parts.append(f"git {str(self.environment['git_sha'])[:12]}")
        drivers = sorted({gpu.get("driver", "") for gpu in self.environment.get("gpus") or []})
        if any(drivers):
            parts.append(f"driver {', '.join(drivers)}")
        return f"{self.host} ({', '.join(parts)})"


@dataclass
class Group:
    """Rows that are like for like: one table, ranked within itself only."""

    key: tuple[str, ...]
    rows: list[dict]

    def value(self, column: str) -> str:
        return self.key[GROUP_COLUMNS.index(column)]

    @property
    def slug(self) -> str:
        """A file-name-safe id, e.g. mnist_cnn-cuda-NVIDIA_H100_80GB_HBM3-bf16-b64-real."""
        task, device, device_name, threads, precision, batch_size, data = self.key
        threads = f"-t{threads}" if threads else ""
        text = f"{task}-{device}-{device_name}{threads}-{precision}-b{batch_size}-{data}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")

    @property
    def title(self) -> str:
        task, device, device_name, threads, precision, batch_size, data = self.key
        where = f"{device}, {threads} threads" if threads else device
        return f"{device_name} ({where}) · {precision} · batch {batch_size} · {data} data"

    def caption(self) -> str:
        versions = sorted({v for row in self.rows for v in row["framework_version"].split()})
        runs = sorted({row["_run"].description() for row in self.rows})
        return (
            f"Environment: {self.title}; frameworks: {', '.join(versions) or 'unknown'}; "
            f"host: {'; '.join(runs)}"
        )


# ---------------------------------------------------------------------------- reading runs


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories (each holds results.csv); any other folder stands for those inside it."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "results.csv").is_file():
            found.append(path)
        elif path.is_dir():
            children = sorted(csv_path.parent for csv_path in path.rglob("results.csv"))
            if not children:
                raise ReportError(f"{path} holds no results.csv, nor does any folder in it")
            found.extend(children)
        else:
            raise ReportError(f"no such run directory: {path}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def check_schema(csv_path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
    if "schema_version" not in fieldnames:
        raise ReportError(f"{csv_path} has no schema_version column: not a bench results file")
    readable = [str(version) for version in READABLE_SCHEMA_VERSIONS]
    others = [row["schema_version"] for row in rows if row["schema_version"] not in readable]
    if others:
        raise ReportError(
            f"{csv_path}: {len(others)} rows have schema_version {', '.join(sorted(set(others)))}"
            f" but this bench reads versions {', '.join(readable)} (results/SCHEMA.md); report "
            "them with the bench version that wrote them"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in fieldnames]
    if missing:
        raise ReportError(f"{csv_path} lacks the columns {', '.join(missing)}")


def latest_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per cell: a retried or resumed cell keeps its last (newest) row."""
    by_cell = {row["cell_id"]: row for row in rows}
    return list(by_cell.values())


def load_run(path: Path) -> Run:
    csv_path = path / "results.csv"
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [{key: value or "" for key, value in row.items()} for row in reader]
        check_schema(csv_path, list(reader.fieldnames or []), rows)
    # a column added to the schema after this file was written is simply not measured there
    rows = [{name: "" for name in COLUMNS} | row for row in latest_rows(rows)]
    try:
        environment = json.loads((path / "env.json").read_text())
    except (OSError, ValueError):
        environment = {}
    return Run(path, environment, rows)


def environment_device_name(environment: dict, device: str) -> str:
    """What env.json says the device is, for rows that failed before naming it."""
    gpus = environment.get("gpus") or []
    if device == "cuda" and gpus:
        return str(gpus[0].get("name", "unknown GPU"))
    if device == "cpu" and environment.get("cpu"):
        return str(environment["cpu"])
    return f"unknown {device}"


def merge_runs(runs: list[Run]) -> list[dict]:
    """Every row of every run, with its host, run directory and a device name filled in."""
    rows = []
    for run in runs:
        for row in run.rows:
            merged: dict = dict(row) | {"run_id": row["run_id"] or run.path.name}
            if not merged["device_name"]:
                merged["device_name"] = environment_device_name(run.environment, row["device"])
            run_name = f"{run.host}/{run.path.name}"
            merged.update(host=run.host, run_dir=str(run.path), run_name=run_name, _run=run)
            rows.append(merged)
    return rows


def read_history(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


# ---------------------------------------------------------------------------- derived values


def number(value: object) -> float | None:
    """A finite float, or None for empty / not a number (empty means not measured)."""
    if value is None or value == "":
        return None
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def device_peak_flops(device: str, device_name: str, precision: str) -> float | None:
    """The datasheet peak for this GPU and precision; None for CPUs and unknown devices."""
    if device != "cuda":
        return None
    for pattern, peaks in DEVICE_PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peaks.get(precision)
    return None


def short_reason(error: str, limit: int = 120) -> str:
    """The error's first line; for a dead worker, also the last line of its stderr tail."""
    head, _, tail = error.partition("; stderr tail:")
    lines = head.strip().splitlines()
    reason = lines[0].strip() if lines else ""
    tail_lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if tail_lines:
        reason += f": {tail_lines[-1]}"
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def group_key(row: dict) -> tuple[str, ...]:
    return tuple("" if c == "threads" and row["device"] != "cpu" else row[c] for c in GROUP_COLUMNS)


def add_measures(row: dict) -> None:
    batch_size = number(row["batch_size"])
    p10, p90 = number(row["step_time_p10_ms"]), number(row["step_time_p90_ms"])
    low = row["samples_per_s_low"] = batch_size / p90 * 1e3 if batch_size and p90 else None
    high = row["samples_per_s_high"] = batch_size / p10 * 1e3 if batch_size and p10 else None
    row["samples_per_s_range"] = f"{compact(low)}–{compact(high)}" if low and high else ""
    peak = device_peak_flops(row["device"], row["device_name"], row["precision"])
    tflops = number(row["train_tflops_per_s"])
    row["device_peak_flops"] = peak
    row["mfu_pct"] = 100 * tflops * 1e12 / peak if peak and tflops is not None else None
    row["note"] = short_reason(row["error"]) if row["status"] != "ok" else ""
    if row["status"] == "ok" and number(row["samples_per_s"]) is None:
        row["note"] = "no steady-state window (too few steps for the window size): not ranked"
    row["rank"] = row["speed_vs_fastest"] = None


def order_key(row: dict) -> tuple:
    backend, mode = row["backend"], row["mode"]
    return (
        BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER),
        backend,
        MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER),
        mode,
        number(row["seed"]) or 0,
        row["run_dir"],
    )


def assign_labels(rows: list[dict]) -> None:
    """backend/mode, plus the seed, host or run id where backend/mode alone is ambiguous."""
    for row in rows:
        row["label"] = f"{row['backend']}/{row['mode']}"
    for key, text in (("seed", "seed {}"), ("host", "{}"), ("run_id", "{}")):
        same_label: dict[str, list[dict]] = {}
        for row in rows:
            same_label.setdefault(row["label"], []).append(row)
        for same in same_label.values():
            if len(same) > 1 and len({row[key] for row in same}) > 1:
                for row in same:
                    row["label"] += " " + text.format(row[key])


def rank_group(rows: list[dict]) -> list[dict]:
    """Ok rows fastest first, ranked against the fastest; the others after them, unranked."""
    for row in rows:
        add_measures(row)
    assign_labels(rows)
    ranked = [r for r in rows if r["status"] == "ok" and number(r["samples_per_s"])]
    ranked.sort(key=lambda r: -number(r["samples_per_s"]))
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
        row["speed_vs_fastest"] = number(row["samples_per_s"]) / number(ranked[0]["samples_per_s"])
    others = sorted((r for r in rows if r not in ranked), key=lambda r: (r["status"], order_key(r)))
    return ranked + others


def group_rows(rows: list[dict]) -> list[Group]:
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)

    def group_order(key: tuple[str, ...]) -> tuple:
        task, device, device_name, threads, precision, batch_size, data = key
        numbers = (number(threads) or 0, precision, number(batch_size) or 0)
        return (task, device != "cuda", device_name, *numbers, data)

    return [Group(key, rank_group(groups[key])) for key in sorted(groups, key=group_order)]


# ---------------------------------------------------------------------------- tables


def significant(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def compact(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    format: Callable[[float], str] | None = None  # None: the text as it is
    numeric: bool = True

    def cell(self, row: dict) -> str:
        if self.format is None:
            return str(row.get(self.key) or "")
        value = number(row.get(self.key))
        return "" if value is None else self.format(value)


TABLE_COLUMNS = (
    Column("#", "rank", lambda v: f"{v:.0f}"),
    Column("backend", "backend", numeric=False),
    Column("mode", "mode", numeric=False),
    Column("status", "status", numeric=False),
    Column("samples/s", "samples_per_s", lambda v: f"{v:,.0f}"),
    Column("p10–p90 samples/s", "samples_per_s_range"),
    Column("vs fastest", "speed_vs_fastest", lambda v: f"{v:.2f}×"),
    Column("step ms", "step_time_median_ms", significant),
    Column("compile s", "compile_s", significant),
    Column("alloc MiB", "peak_alloc_mb", lambda v: f"{v:,.0f}"),
    Column("data MiB", "data_resident_mb", lambda v: f"{v:,.0f}"),
    Column("NVML MiB", "peak_nvml_mb", lambda v: f"{v:,.0f}"),
    Column("RSS MiB", "peak_rss_mb", lambda v: f"{v:,.0f}"),
    Column("MFU %", "mfu_pct", significant),
    Column("final acc", "final_test_accuracy", lambda v: f"{v:.4f}"),
    Column("best acc", "best_test_accuracy", lambda v: f"{v:.4f}"),
    Column("to target s", "time_to_target_s", significant),
    Column("note", "note", numeric=False),
)
SEED_COLUMN = Column("seed", "seed", numeric=False)
RUN_COLUMN = Column("run", "run_name", numeric=False)


def table_columns(group: Group) -> list[Column]:
    """The fixed columns, plus seed and run where the table holds more than one of them."""
    extra = []
    if len({row["seed"] for row in group.rows}) > 1:
        extra.append(SEED_COLUMN)
    if len({row["run_dir"] for row in group.rows}) > 1:
        extra.append(RUN_COLUMN)
    return [*TABLE_COLUMNS[:3], *extra, *TABLE_COLUMNS[3:]]


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "–"


def markdown_table(group: Group) -> str:
    columns = table_columns(group)
    lines = [
        "| " + " | ".join(column.title for column in columns) + " |",
        "|" + "|".join("---:" if column.numeric else "---" for column in columns) + "|",
    ]
    for row in group.rows:
        lines.append("| " + " | ".join(markdown_cell(c.cell(row)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def pivot_labels(groups: list[Group]) -> list[str]:
    rows = sorted((row for group in groups for row in group.rows), key=order_key)
    return list(dict.fromkeys(row["label"] for row in rows))


def write_pivot_csv(groups: list[Group], path: Path) -> None:
    """One line per (table, metric), one column per backend/mode: backends side by side."""
    labels = pivot_labels(groups)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*GROUP_COLUMNS, "metric", *labels])
        for group in groups:
            by_label = {row["label"]: row for row in group.rows}
            for metric in PIVOT_METRICS:
                cells = [
                    by_label[label].get(metric) if label in by_label else None for label in labels
                ]
                writer.writerow([*group.key, metric, *(format_cell(c) for c in cells)])


def format_cell(value: object) -> str:
    parsed = number(value) if isinstance(value, str) else value
    return format_value(parsed if isinstance(parsed, float) else value)


def write_runs_csv(groups: list[Group], path: Path) -> None:
    names = [*COLUMNS, *DERIVED_COLUMNS]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for group in groups:
            for row in group.rows:
                writer.writerow([format_cell(row.get(name)) for name in names])


# ---------------------------------------------------------------------------- plots


def new_figure():
    """A fixed-size figure drawn with Agg; no pyplot, so no global state and no display."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI, layout="constrained")
    return figure, figure.subplots()


def backend_color(backend: str) -> str:
    index = BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER)
    return f"C{index % 10}"


def mode_marker(mode: str) -> str:
    return {"eager": "o", "compiled": "s", "fused": "^"}.get(mode, "D")


def thousands_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def log_axis(axes, axis) -> None:
    """A log scale labelled in plain numbers: 1, 2, 5, 10, 20, 50, ..."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _) -> str:
        leading = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
        return f"{value:g}" if round(leading) in (2, 5) else ""

    (axes.set_xscale if axis is axes.xaxis else axes.set_yscale)("log")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def set_title(axes, group: Group, what: str) -> None:
    axes.set_title(f"{group.value('task')}: {what}\n{group.title}", fontsize=10)


def ok_rows(group: Group, key: str) -> list[dict]:
    return [row for row in group.rows if row["status"] == "ok" and number(row.get(key))]


def plot_throughput(group: Group, axes) -> bool:
    """Bars per backend, one per mode: median samples/s; whiskers: the p10-p90 range."""
    measured = ok_rows(group, "samples_per_s")
    if not measured:
        return False
    rows = sorted(group.rows, key=order_key)
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    width = 0.8 / len(modes)
    for mode_index, mode in enumerate(modes):
        for backend_index, backend in enumerate(backends):
            x = backend_index - 0.4 + width * (mode_index + 0.5)
            same = [r for r in rows if r["backend"] == backend and r["mode"] == mode]
            speeds = [number(r["samples_per_s"]) for r in same if r in measured]
            if not speeds:
                if same:
                    axes.text(
                        x,
                        0,
                        f" {same[0]['status']}",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        color="0.4",
                    )
                continue
            median = statistics.median(speeds)
            low = min((r["samples_per_s_low"] or median) for r in same if r in measured)
            high = max((r["samples_per_s_high"] or median) for r in same if r in measured)
            axes.bar(x, median, width, color=f"C{mode_index}", label=mode)
            axes.errorbar(
                x,
                median,
                yerr=[[median - low], [high - median]],
                color="black",
                capsize=3,
                linewidth=1,
            )
    axes.set_xticks(range(len(backends)), backends)
    axes.set_xlim(-0.5, len(backends) - 0.5)
    axes.set_ylabel("training samples/s (steady state)")
    thousands_axis(axes.yaxis)
    set_title(axes, group, "throughput")
    unique_legend(axes, title="mode (whiskers: p10–p90)")
    axes.grid(axis="y", alpha=0.3)
    return True


def unique_legend(axes, **options) -> None:
    handles, labels = axes.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    if by_label:
        axes.legend(by_label.values(), by_label.keys(), fontsize="small", **options)


DEVICE_MEMORY = (
    ("peak_alloc_mb", "device: framework allocator, training peak"),
    ("data_resident_mb", "device: resident dataset (inside the peak)"),
    ("peak_nvml_mb", "device: NVML"),
)
HOST_MEMORY = (("peak_rss_mb", "host: peak RSS"),)


def plot_memory(group: Group, axes) -> bool:
    """Peak device memory per backend/mode (host RSS where no device memory was measured)."""
    rows = sorted([r for r in group.rows if r["status"] == "ok"], key=order_key)
    device = [(k, name) for k, name in DEVICE_MEMORY if any(number(r[k]) for r in rows)]
    if not any(number(r["peak_alloc_mb"]) or number(r["peak_nvml_mb"]) for r in rows):
        device = []  # on cpu only the resident data size is known: plot host memory instead
    series = device or [(k, name) for k, name in HOST_MEMORY if any(number(r[k]) for r in rows)]
    if not series:
        return False
    width = 0.8 / len(series)
    for index, (key, name) in enumerate(series):
        xs = [i - 0.4 + width * (index + 0.5) for i in range(len(rows))]
        axes.bar(xs, [number(r[key]) or 0 for r in rows], width, label=name, color=f"C{index}")
    axes.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=30, ha="right")
    axes.set_ylabel("peak memory (MiB)")
    thousands_axis(axes.yaxis)
    set_title(axes, group, "peak memory")
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return True


def plot_accuracy(group: Group, axes) -> bool:
    """Test accuracy after each epoch against cumulative training time, one line per run."""
    drawn = False
    for row in sorted(group.rows, key=order_key):
        history = read_history(row["_run"].path / "cells" / row["cell_id"] / "history.csv")
        points = [(number(h.get("train_time_s")), number(h.get("test_accuracy"))) for h in history]
        points = [(t, a) for t, a in points if t is not None and a is not None]
        if not points:
            continue
        times, accuracies = zip(*points)
        axes.plot(
            times,
            accuracies,
            marker=mode_marker(row["mode"]),
            label=row["label"],
            color=backend_color(row["backend"]),
        )
        drawn = True
    if not drawn:
        return False
    target = number(group.rows[0].get("target_accuracy"))
    if target is not None:
        axes.axhline(target, linestyle="--", color="0.5", label=f"target {target:g}")
    axes.set_xlabel("training time (s, evaluation excluded)")
    axes.set_ylabel("test accuracy")
    set_title(axes, group, "accuracy")
    axes.legend(fontsize="small", ncol=2)
    axes.grid(alpha=0.3)
    return True


def plot_compile(group: Group, axes) -> bool:
    """First-dispatch (compile) seconds against steady-state step time, log-log."""
    from matplotlib.lines import Line2D

    rows = [r for r in ok_rows(group, "compile_s") if number(r["step_time_median_ms"])]
    if not rows:
        return False
    for row in sorted(rows, key=order_key):
        axes.scatter(
            number(row["step_time_median_ms"]),
            number(row["compile_s"]),
            s=50,
            color=backend_color(row["backend"]),
            marker=mode_marker(row["mode"]),
        )
    handles = [
        Line2D([], [], color=backend_color(b), marker="o", linestyle="", label=b)
        for b in dict.fromkeys(r["backend"] for r in sorted(rows, key=order_key))
    ] + [
        Line2D([], [], color="0.3", marker=mode_marker(m), linestyle="", label=m)
        for m in dict.fromkeys(r["mode"] for r in sorted(rows, key=order_key))
    ]
    axes.legend(handles=handles, fontsize="small", ncol=2)
    for axis in (axes.xaxis, axes.yaxis):
        log_axis(axes, axis)
    axes.set_xlabel("steady-state step time (ms, median)")
    axes.set_ylabel("first dispatch (compile) time (s)")
    set_title(axes, group, "compile vs step time")
    axes.grid(alpha=0.3, which="both")
    return True


PLOTS = (
    ("throughput", "Throughput per backend and mode", plot_throughput),
    ("memory", "Peak memory per backend and mode", plot_memory),
    ("accuracy", "Test accuracy against training time", plot_accuracy),
    ("compile", "Compile time against steady-state step time", plot_compile),
)


def draw_plots(group: Group, plots_dir: Path) -> list[tuple[str, Path]]:
    """(description, path) of each plot that this group has data for."""
    written = []
    for name, description, draw in PLOTS:
        figure, axes = new_figure()
        if draw(group, axes):
            path = plots_dir / f"{group.slug}--{name}.png"
            figure.savefig(path, dpi=PLOT_DPI)
            written.append((description, path))
    return written


# ---------------------------------------------------------------------------- documents


def environment_lines(run: Run) -> list[str]:
    environment = run.environment
    gpus = [
        f"{gpu.get('name')} ({gpu.get('memory_mib')} MiB, driver {gpu.get('driver')})"
        for gpu in environment.get("gpus") or []
    ]
    packages = sorted((environment.get("packages") or {}).items())
    return [
        f"command: {environment.get('command', '?')}",
        f"git: {environment.get('git_sha') or '?'}",
        f"python {environment.get('python', '?')} on {environment.get('platform', '?')}",
        f"CPU: {environment.get('cpu', '?')} ({environment.get('cpu_count', '?')} CPUs)",
        f"GPUs: {', '.join(gpus) or 'none'}",
        f"packages: {', '.join(f'{name}={version}' for name, version in packages) or '?'}",
    ]


def markdown_report(runs: list[Run], groups: list[Group], plots: dict, out_dir: Path) -> str:
    lines = ["# Benchmark report", ""]
    lines += [
        f"Runs: {'; '.join(run.description() for run in runs)}. Schema version {SCHEMA_VERSION}."
    ]
    lines += ["", READING_GUIDE, ""]
    task = None
    for group in groups:
        if group.value("task") != task:
            task = group.value("task")
            lines += [f"## {task}", ""]
        lines += [f"### {group.title}", "", group.caption(), "", markdown_table(group)]
        for description, path in plots[group.key]:
            lines += [f"![{description}]({path.relative_to(out_dir).as_posix()})", ""]
    lines += ["## Environments", ""]
    for run in runs:
        lines += [f"### {run.description()}", ""]
        lines += [f"- {line}" for line in environment_lines(run)] + [""]
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed, tr.oom, tr.timeout, tr.diverged { background: #fdecea; }
tr.skipped { background: #f5f5f5; color: #777; }
div.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); }
figure { margin: 0.5em; }
img { width: 100%; height: auto; border: 1px solid #eee; }
ul.environment { font-size: 0.9em; }
"""


def html_table(group: Group) -> str:
    columns = table_columns(group)
    head = "".join(f"<th>{html.escape(column.title)}</th>" for column in columns)
    body = []
    for row in group.rows:
        cells = "".join(
            f'<td class="{"number" if c.numeric else "text"}">{html.escape(c.cell(row))}</td>'
            for c in columns
        )
        body.append(f'<tr class="{html.escape(row["status"])}">{cells}</tr>')
    return (
        f'<table class="comparison" id="table-{group.slug}">'
        f"<caption>{html.escape(group.caption())}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def html_figure(description: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    width, height = (round(size * PLOT_DPI) for size in PLOT_SIZE_INCHES)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(description)}" '
        f'width="{width}" height="{height}"><figcaption>{html.escape(description)}'
        "</figcaption></figure>"
    )


def html_report(runs: list[Run], groups: list[Group], plots: dict) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,"><title>Benchmark report</title>',
        f"<style>{HTML_STYLE}</style></head><body><h1>Benchmark report</h1>",
        f"<p>Runs: {html.escape('; '.join(run.description() for run in runs))}. "
        f"Schema version {SCHEMA_VERSION}.</p><p>{html.escape(READING_GUIDE)}</p>",
    ]
    task = None
    for group in groups:
        if group.value("task") != task:
            task = group.value("task")
            parts.append(f"<h2>{html.escape(task)}</h2>")
        parts.append(f'<section class="group"><h3>{html.escape(group.title)}</h3>')
        parts.append(html_table(group))
        figures = [html_figure(description, path) for description, path in plots[group.key]]
        parts.append(f'<div class="figures">{"".join(figures)}</div></section>')
    parts.append("<h2>Environments</h2>")
    for run in runs:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in environment_lines(run))
        parts.append(
            f'<h3>{html.escape(run.description())}</h3><ul class="environment">{items}</ul>'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def build_report(run_dirs: list[Path], out_dir: Path) -> dict:
    """Merge the runs and write the report; returns {name: path} (plots: a list of paths)."""
    runs = [load_run(path) for path in find_run_dirs(run_dirs)]
    rows = merge_runs(runs)
    if not rows:
        raise ReportError(f"no rows in {', '.join(str(run.path) for run in runs)}")
    groups = group_rows(rows)
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for old in plots_dir.glob("*.png"):  # plots of an earlier report that may be gone now
        old.unlink()
    plots = {group.key: draw_plots(group, plots_dir) for group in groups}
    written = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "comparison_csv": out_dir / "comparison.csv",
        "runs_csv": out_dir / "runs.csv",
    }
    write_text(written["markdown"], markdown_report(runs, groups, plots, out_dir))
    write_text(written["html"], html_report(runs, groups, plots))
    write_pivot_csv(groups, written["comparison_csv"])
    write_runs_csv(groups, written["runs_csv"])
    return written | {"plots": [path for group in groups for _, path in plots[group.key]]}


def default_out_dir(run_dirs: list[Path]) -> Path:
    """RUN_DIR/report for one run directory; <their common parent>/report for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    parent = Path(os.path.commonpath([Path(p).resolve().parent for p in run_dirs]))
    return parent / "report"


# ---------------------------------------------------------------------------- TensorBoard


def import_tensorboardx():
    """tensorboardX, imported without letting it import a framework.

    tensorboardX tries `import torch` when imported (to accept torch tensors, which this module
    never passes); that would cost seconds and break the rule that bench imports no framework.
    A None entry in sys.modules makes such an import fail as if the framework were absent; the
    entries are removed afterwards, so a later import elsewhere works as usual.
    """
    blocked = [name for name in FRAMEWORK_MODULES if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import tensorboardX
    except ImportError as error:
        raise ReportError(
            f"TensorBoard export needs tensorboardX ({error}): pip install tensorboardX"
        ) from None
    finally:
        for name in blocked:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return tensorboardX


def export_tensorboard(run_dir: Path, log_dir: Path, cell_ids: Iterable[str] | None = None) -> int:
    """Each cell's history.csv as event files in log_dir/<run-id>/<cell_id>/; returns the count.

    One point per epoch (step = epoch). Each point's wall time is the run's start plus the
    cumulative training time, so TensorBoard's "Relative" axis shows training seconds.
    Event files of an earlier export to the same folder are replaced. cell_ids: only these
    cells (e.g. the one that just finished); None: every cell with a history.
    """
    run_dir, log_dir = Path(run_dir), Path(log_dir)
    if not run_dir.is_dir():
        raise ReportError(f"no such run directory: {run_dir}")
    tensorboardx = import_tensorboardx()
    written = 0
    wanted = None if cell_ids is None else set(cell_ids)
    for history_path in sorted((run_dir / "cells").glob("*/history.csv")):
        if wanted is not None and history_path.parent.name not in wanted:
            continue
        history = read_history(history_path)
        if not history:
            continue
        cell_log_dir = log_dir / run_dir.name / history_path.parent.name
        for old in cell_log_dir.glob("events.out.tfevents.*"):
            old.unlink()
        start = history_path.stat().st_mtime - (number(history[-1].get("train_time_s")) or 0.0)
        writer = tensorboardx.SummaryWriter(logdir=str(cell_log_dir))
        try:
            for entry in history:
                walltime = start + (number(entry.get("train_time_s")) or 0.0)
                for tag, key in TENSORBOARD_SCALARS:
                    value = number(entry.get(key))
                    if value is not None:
                        writer.add_scalar(tag, value, int(entry["epoch"]), walltime=walltime)
        finally:
            writer.close()
        written += 1
    return written


# ---------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories (results/<run-id>), or a folder holding them (e.g. results/)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: RUN_DIR/report for one run, <common parent>/report for several)",
    )
    parser.add_argument(
        "--tensorboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each cell's per-epoch history as TensorBoard event files under DIR",
    )
    parser.set_defaults(handler=command_report)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`bench report`, for cli.py: report.add_parser(commands)."""
    parser = subparsers.add_parser(
        "report",
        help="comparison tables, plots and an HTML page from run directories",
        description=__doc__.splitlines()[0],
    )
    return configure(parser)


def command_report(args: argparse.Namespace) -> int:
    try:
        run_dirs = find_run_dirs(args.run_dirs)
        written = build_report(run_dirs, args.out or default_out_dir(run_dirs))
        cells = None
        if args.tensorboard:
            cells = sum(export_tensorboard(path, args.tensorboard) for path in run_dirs)
    except ReportError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    for name in ("markdown", "html", "comparison_csv", "runs_csv"):
        print(f"{name}: {written[name]}")
    print(f"plots: {len(written['plots'])} in {written['html'].parent / 'plots'}")
    summary = {
        "report": str(written["html"]),
        "runs": len(run_dirs),
        "plots": len(written["plots"]),
        "tensorboard_cells": cells,
    }
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench report", description=__doc__.splitlines()[0])
    configure(parser)
    return command_report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
