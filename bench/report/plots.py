"""The report's plots, drawn with matplotlib's Agg canvas (imported only when drawing): per
table, throughput, peak memory, test accuracy against training time and compile time against
step time, each 800 x 450 px."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from bench.report.derive import backend_order, order_key
from bench.report.loading import read_history
from bench.results import Group, number

PLOT_SIZE_INCHES = (8.0, 4.5)
PLOT_DPI = 100  # 8 x 4.5 in at 100 dpi: every PNG is 800 x 450 px


def new_figure():
    """A fixed-size figure drawn with Agg; no pyplot, so no global state and no display."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI, layout="constrained")
    return figure, figure.subplots()


def backend_color(backend: str) -> str:
    order = backend_order()
    index = order.index(backend) if backend in order else len(order)
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
            axes.bar(x, median, width, color=f"C{mode_index}", label=mode)
            whiskers = whisker_lengths(median, [r for r in same if r in measured])
            if whiskers is not None:
                axes.errorbar(x, median, yerr=whiskers, color="black", capsize=3, linewidth=1)
    axes.set_xticks(range(len(backends)), backends)
    axes.set_xlim(-0.5, len(backends) - 0.5)
    axes.set_ylabel("training samples/s (steady state)")
    thousands_axis(axes.yaxis)
    set_title(axes, group, "throughput")
    unique_legend(axes, title="mode (whiskers: p10–p90)")
    axes.grid(axis="y", alpha=0.3)
    return True


def whisker_lengths(median: float, rows: list[dict]) -> list[list[float]] | None:
    """errorbar's yerr for a bar at `median` spanning the rows' p10-p90 samples/s range, each
    side clipped at zero: a single steady window has p10 = median = p90, and the rounding of the
    CSV's numbers can put the range a hair inside the median. None where no row has a range."""
    lows = [number(r.get("samples_per_s_low")) for r in rows]
    highs = [number(r.get("samples_per_s_high")) for r in rows]
    lows, highs = [v for v in lows if v is not None], [v for v in highs if v is not None]
    if not lows or not highs:
        return None
    return [[max(0.0, median - min(lows))], [max(0.0, max(highs) - median)]]


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
