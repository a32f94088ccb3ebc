"""Loading runs for the report, through the results layer: every run's final rows, merged."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.results import Run, fill_device_names, find_run_dirs, records

__all__ = ["find_run_dirs", "merge_runs", "read_history"]


def merge_runs(runs: list[Run]) -> list[dict]:
    """Every row of every run as a dict of typed values (None: empty), with its host, run
    directory and run, and the device name env.json gives where the row has none."""
    rows = []
    for run in runs:
        for row in records(fill_device_names(run.rows, run.environment)):
            row["run_id"] = row["run_id"] or run.path.name
            run_name = f"{run.host}/{run.path.name}"
            row.update(host=run.host, run_dir=str(run.path), run_name=run_name, _run=run)
            rows.append(row)
    return rows


def read_history(path: Path) -> list[dict[str, str]]:
    """A cell's history.csv as text rows (one per epoch); [] when it has none."""
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []
