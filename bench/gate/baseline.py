"""`bench baseline`: a baseline file for `bench gate` from one or more run directories.

    bench baseline results/20261124-193000 --out results/baselines/cpu-quick.csv
    bench baseline RUN_A RUN_B RUN_C --out BASE.csv     several runs: the gate pools them

A baseline file is the runs' results rows plus each row's steady window times (the columns
bench/gate/sources.py names and reads back).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from bench.gate.sides import GateDataError
from bench.gate.sources import (
    BASELINE_COLUMNS,
    CPU_TIMES_COLUMN,
    PROBE_COLUMN,
    STEP_TIMES_COLUMN,
    read_run_dir,
)
from bench.results import COLUMNS, format_value, text


def write_baseline(run_dirs: list[Path], out: Path) -> list[dict[str, str]]:
    """One baseline file from run directories: their rows plus each row's steady window times.

    Refuses rows that a baseline must not hold: failed (and the like; skipped rows are kept, so
    the gate knows the configuration was expected to skip) and rows made under test hooks."""
    rows = []
    for run_dir in run_dirs:
        if not (run_dir / "results.csv").is_file():
            raise GateDataError(f"{run_dir} is not a run directory (it has no results.csv)")
        for row, times in read_run_dir(run_dir):
            cell, status, hooks = (text(row.get(c)) for c in ("cell_id", "status", "test_hooks"))
            if status not in ("ok", "skipped"):
                raise GateDataError(
                    f"{run_dir}: cell {cell} is {status}; a baseline is made "
                    "from clean runs only (rerun it: bench run --resume RUN_DIR --retry-failed)"
                )
            if hooks:
                raise GateDataError(
                    f"{run_dir}: cell {cell} ran under test-only hooks "
                    f"({hooks}); its numbers are not real"
                )
            rows.append(  # the results columns as results.csv holds them (format_value)
                {column: format_value(row.get(column)) for column in COLUMNS}
                | {STEP_TIMES_COLUMN: " ".join(f"{value:.6g}" for value in times.wall)}
                | {CPU_TIMES_COLUMN: " ".join(f"{value:.6g}" for value in times.cpu)}
                | {PROBE_COLUMN: " ".join(f"{value:.6g}" for value in times.probe)}
            )
    if not rows:
        raise GateDataError("the run directories hold no rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BASELINE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(buffer.getvalue())
    temporary.replace(out)
    return rows


def command_baseline(args: argparse.Namespace) -> int:
    try:
        rows = write_baseline([Path(p) for p in args.run_dirs], Path(args.out))
    except GateDataError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        windows = len(row[STEP_TIMES_COLUMN].split())
        accuracy = (
            format_value(float(row["final_test_accuracy"])) if row["final_test_accuracy"] else "-"
        )
        print(
            f"{row['cell_id']:<48} {row['status']:<8} {windows:>4} steady windows  acc {accuracy}"
        )
    print(json.dumps({"baseline": args.out, "rows": len(rows), "runs": len(args.run_dirs)}))
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "baseline",
        help="write a baseline file for `bench gate` from run directories",
        description="Write a baseline file for `bench gate`: the rows of the run directories "
        "and each row's steady per-step window times (several runs are pooled by the gate).",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to pool")
    parser.add_argument(
        "--out", required=True, help="baseline CSV to write, e.g. results/baselines/cpu-quick.csv"
    )
    parser.set_defaults(handler=command_baseline)
