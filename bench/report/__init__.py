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

The package, in the order a report is made: `loading` (run directories, through the results
layer, bench.results), `derive` (groups, ranks, MFU, labels), `tables` (the tables and the two
CSVs), `plots` (matplotlib), `page` (report.md and report.html; build_report), `tensorboard`
and `command` (the command line).
"""

from __future__ import annotations

from bench.report.command import add_parser, command_report, configure, main
from bench.report.derive import (
    DEVICE_PEAK_FLOPS,
    MODE_ORDER,
    ReportError,
    add_measures,
    assign_labels,
    backend_order,
    caption,
    device_peak_flops,
    group_rows,
    order_key,
    rank_group,
    short_reason,
)
from bench.report.loading import find_run_dirs, merge_runs, read_history
from bench.report.page import (
    READING_GUIDE,
    build_report,
    default_out_dir,
    html_report,
    markdown_report,
)
from bench.report.plots import PLOT_DPI, PLOT_SIZE_INCHES, PLOTS, draw_plots
from bench.report.tables import (
    DERIVED_COLUMNS,
    PIVOT_METRICS,
    TABLE_COLUMNS,
    markdown_table,
    table_columns,
    write_pivot_csv,
    write_runs_csv,
)
from bench.report.tensorboard import export_tensorboard, import_tensorboardx
from bench.results import GROUP_COLUMNS, Group, group_key

__all__ = [
    "DERIVED_COLUMNS",
    "DEVICE_PEAK_FLOPS",
    "GROUP_COLUMNS",
    "MODE_ORDER",
    "PIVOT_METRICS",
    "PLOTS",
    "PLOT_DPI",
    "PLOT_SIZE_INCHES",
    "READING_GUIDE",
    "TABLE_COLUMNS",
    "Group",
    "ReportError",
    "add_measures",
    "add_parser",
    "assign_labels",
    "backend_order",
    "build_report",
    "caption",
    "command_report",
    "configure",
    "default_out_dir",
    "device_peak_flops",
    "draw_plots",
    "export_tensorboard",
    "find_run_dirs",
    "group_key",
    "group_rows",
    "html_report",
    "import_tensorboardx",
    "main",
    "markdown_report",
    "markdown_table",
    "merge_runs",
    "order_key",
    "rank_group",
    "read_history",
    "short_reason",
    "table_columns",
    "write_pivot_csv",
    "write_runs_csv",
]
