"""The results layer: the row schema, writing and reading run directories, and tables of rows.

One CSV row per run. The schema (`bench.results.schema`): COLUMNS (name -> meaning, in CSV
order; results/SCHEMA.md documents the same list), their types (TEXT_COLUMNS, INTEGER_COLUMNS,
FLOAT_COLUMNS), SCHEMA_VERSION, READABLE_SCHEMA_VERSIONS, STATUSES, REQUIRED_COLUMNS and the one
error type, ResultsError.

Writing (`bench.results.files`; what the runner and the worker use):
    append_row(path, row)       one row, one write (header first if new), fsynced
    repair_csv(path)            cut a torn last line
    drop_rows(path, cell_ids)   rewrite results.csv without those cells' rows, atomically
    check_appendable(path)      ResultsError unless this schema's rows may be appended
    write_atomic(path, text)    replace a file in one rename
    environment(command), write_environment(run_dir, command)   env.json
    empty_row(), format_value(value), csv_line(row), read_rows(path) (any CSV, unchecked text)

Reading (`bench.results.store`, on pandas):
    read_results(path) -> DataFrame      checked (ResultsError) and typed: text as "string",
                                         integers as "Int64", numbers as float64, empty = NA
    read_run(run_dir) -> Run             .path, .environment (env.json), .rows (one per cell),
                                         .host, .description()
    latest_per_cell(frame) -> DataFrame  each cell's last row: the one "final row" rule
    records(frame) -> list[dict]         Python values, None for NA
    find_run_dirs(paths), fill_device_names(frame, environment), environment_device_name(...)

Tables (`bench.results.tables`):
    Column(title, key, format, numeric)  one column spec; Column.cell(row) -> str
    markdown(columns, rows), html_table(columns, rows, ...), text_table(columns, rows)
    GROUP_COLUMNS, group_key(row), Group, like_for_like(rows)   like-for-like groups
    markdown_table(rows)                 results.md: one table per group
    SEED_KEY, seed_key(row), several_seeds(rows)   configurations that differ only in seed

Seeds (`bench.results.seeds`, on pandas and scipy.stats): rows that differ only in seed summed up
    aggregate_seeds(rows) -> DataFrame   one row per configuration: SEED_COLUMNS (seeds.csv)
    seed_records(rows), seed_markdown(rows), write_seeds_csv(rows, path), SEED_TABLE_COLUMNS
    formatters: thousands, significant, compact, readable; values: number(value), text(value)

Importing this package does not import pandas (the worker writes rows through it, and pandas
would add to its start-up time and its peak RSS); the reading names below load
`bench.results.store`, and pandas with it, when first used.
"""

from __future__ import annotations

import importlib

from bench.results.files import (
    append_row,
    check_appendable,
    csv_line,
    drop_rows,
    environment,
    git_sha,
    package_versions,
    read_rows,
    repair_csv,
    write_atomic,
    write_environment,
)
from bench.results.schema import (
    COLUMNS,
    FLOAT_COLUMNS,
    INTEGER_COLUMNS,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    TEXT_COLUMNS,
    ResultsError,
    empty_row,
    format_value,
    number,
    text,
)
from bench.results.tables import (
    GROUP_COLUMNS,
    RUN_COLUMNS,
    SEED_KEY,
    SEEDS_GUIDE,
    Column,
    Group,
    compact,
    group_key,
    html_table,
    like_for_like,
    markdown,
    markdown_table,
    readable,
    seed_key,
    several_seeds,
    significant,
    text_table,
    thousands,
)

# name -> the submodule that defines it; loaded on first use (each imports pandas).
LAZY = {
    name: "bench.results.store"
    for name in (
        "Run",
        "environment_device_name",
        "fill_device_names",
        "find_run_dirs",
        "latest_per_cell",
        "read_results",
        "read_run",
        "records",
    )
} | {
    name: "bench.results.seeds"
    for name in (
        "SEED_COLUMNS",
        "SEED_TABLE_COLUMNS",
        "aggregate_seeds",
        "seed_markdown",
        "seed_records",
        "write_seeds_csv",
    )
}


def __getattr__(name: str):
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *LAZY])


__all__ = [
    "COLUMNS",
    "FLOAT_COLUMNS",
    "GROUP_COLUMNS",
    "INTEGER_COLUMNS",
    "READABLE_SCHEMA_VERSIONS",
    "REQUIRED_COLUMNS",
    "RUN_COLUMNS",
    "SEED_KEY",
    "SEEDS_GUIDE",
    "SCHEMA_VERSION",
    "STATUSES",
    "TEXT_COLUMNS",
    "Column",
    "Group",
    "ResultsError",
    "append_row",
    "check_appendable",
    "compact",
    "csv_line",
    "drop_rows",
    "empty_row",
    "environment",
    "format_value",
    "git_sha",
    "group_key",
    "html_table",
    "like_for_like",
    "markdown",
    "markdown_table",
    "number",
    "package_versions",
    "read_rows",
    "readable",
    "repair_csv",
    "seed_key",
    "several_seeds",
    "significant",
    "text",
    "text_table",
    "thousands",
    "write_atomic",
    "write_environment",
    *LAZY,
]
