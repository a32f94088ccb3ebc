"""The report's tables (one per like-for-like group, and below it the group's rows summed up
over seeds where a configuration ran several) and its CSVs, on the results layer's column specs
and renderers."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.report.derive import caption, order_key
from bench.results import (
    COLUMNS,
    GROUP_COLUMNS,
    SEEDS_GUIDE,
    Column,
    Group,
    format_value,
    html_table,
    markdown,
    several_seeds,
    significant,
    thousands,
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

TABLE_COLUMNS = (
    Column("#", "rank", lambda v: f"{v:.0f}"),
    Column("backend", "backend", numeric=False),
    Column("mode", "mode", numeric=False),
    Column("status", "status", numeric=False),
    Column("samples/s", "samples_per_s", thousands),
    Column("p10–p90 samples/s", "samples_per_s_range"),
    Column("vs fastest", "speed_vs_fastest", lambda v: f"{v:.2f}×"),
    Column("step ms", "step_time_median_ms", significant),
    Column("compile s", "compile_s", significant),
    Column("alloc MiB", "peak_alloc_mb", thousands),
    Column("data MiB", "data_resident_mb", thousands),
    Column("NVML MiB", "peak_nvml_mb", thousands),
    Column("RSS MiB", "peak_rss_mb", thousands),
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


def markdown_table(group: Group) -> str:
    return markdown(table_columns(group), group.rows)


def group_html_table(group: Group) -> str:
    return html_table(
        table_columns(group), group.rows, caption=caption(group), table_id=f"table-{group.slug}"
    )


def seeds_markdown_table(group: Group) -> str:
    """The group's "over seeds" table (bench.results.seeds); "" unless a configuration in it
    has several seeds."""
    if not several_seeds(group.rows):
        return ""
    from bench.results.seeds import seed_markdown

    return seed_markdown(group.rows)


def seeds_html_table(group: Group) -> str:
    """The same table in HTML; "" unless a configuration has several seeds."""
    if not several_seeds(group.rows):
        return ""
    from bench.results.seeds import SEED_TABLE_COLUMNS, seed_records

    return html_table(
        SEED_TABLE_COLUMNS,
        seed_records(group.rows),
        caption=f"Over seeds: {SEEDS_GUIDE}",
        table_id=f"seeds-{group.slug}",
        row_class=lambda row: "",
    )


def pivot_labels(groups: list[Group]) -> list[str]:
    rows = sorted((row for group in groups for row in group.rows), key=order_key)
    return list(dict.fromkeys(row["label"] for row in rows))


def write_pivot_csv(groups: list[Group], path: Path) -> None:
    """One line per (table, metric), one column per backend/mode: backends side by side."""
    labels = pivot_labels(groups)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*GROUP_COLUMNS, "metric", *labels])
        for group in groups:
            by_label = {row["label"]: row for row in group.rows}
            for metric in PIVOT_METRICS:
                cells = [
                    by_label[label].get(metric) if label in by_label else None for label in labels
                ]
                writer.writerow([*group.key, metric, *(format_value(c) for c in cells)])


def write_runs_csv(groups: list[Group], path: Path) -> None:
    """Every merged row: the schema's columns, then DERIVED_COLUMNS."""
    names = [*COLUMNS, *DERIVED_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for group in groups:
            for row in group.rows:
                writer.writerow([format_value(row.get(name)) for name in names])
