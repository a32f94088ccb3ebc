"""Reading one side of a comparison (the baseline or the current run) from one or more sources:

    RUN_DIR              a run directory: results.csv, read by the results layer
                         (bench.results: checked, typed, each cell's final row), and each
                         cell's steady windows from cells/<cell_id>/windows.csv
    a folder of runs     the newest run directory directly in it (by when its results.csv was
                         last written): `--current results` is the latest scratch run
    BASE.csv             a baseline file: the results columns plus `steady_step_ms`,
                         `steady_cpu_step_ms` and `steady_probe_ms`: the wall and the process CPU
                         time per step of every steady window and the machine-speed probe's time
                         around it (bench.calibration.Probe), in ms, separated by spaces
    BENCH.json           pytest-benchmark's JSON (--benchmark-json, saved with
                         --benchmark-save-data): one row per benchmark, its rounds as windows

Rows of a side with the same identity are pooled (bench/gate/sides.py). A row is a dict: typed
values (bench.results.records) from a run directory, text from a baseline file or JSON; the gate
reads both with bench.results.text and bench.results.number.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import results
from bench.gate.sides import (
    CALIBRATION_KEYS,
    IDENTITY,
    GateDataError,
    Measurement,
    Side,
    Times,
    WindowTimes,
)
from bench.results import COLUMNS, READABLE_SCHEMA_VERSIONS, read_rows, text
from bench.results.files import first_line, read_text, split_lines

STEP_TIMES_COLUMN = "steady_step_ms"  # the columns a baseline file adds to the results'
CPU_TIMES_COLUMN = "steady_cpu_step_ms"  # empty where the windows have no CPU time (schema 1)
PROBE_COLUMN = "steady_probe_ms"  # empty where the windows have no probe (older runs)
BASELINE_COLUMNS = (*COLUMNS, STEP_TIMES_COLUMN, CPU_TIMES_COLUMN, PROBE_COLUMN)
REQUIRED_COLUMNS = ("schema_version", "cell_id", *IDENTITY, "status")
NUMERIC_COLUMNS = ("batch_size", "final_test_accuracy", "target_accuracy", "calib_matmul_ms")
NUMERIC_COLUMNS += ("calib_dispatch_ms",)

if TYPE_CHECKING:  # pandas loads with the results layer's reader, when a run is read
    import pandas as pd


def load_side(name: str, paths: list[str | Path]) -> Side:
    """Every source of one side, pooled by identity. Says on stderr which run a folder meant."""
    measurements: dict[tuple[str, ...], Measurement] = {}
    sources = []
    for path in map(Path, paths):
        path = resolve_source(name, path)
        sources.append(str(path))
        for row, times in read_source(path):
            identity = tuple(text(row.get(column)) for column in IDENTITY)
            entry = measurements.setdefault(identity, Measurement(identity))
            entry.rows.append(row)
            entry.step_ms.extend(times.wall)
            entry.cpu_step_ms.extend(times.cpu)
            entry.rows_without_cpu += bool(times.wall) and not times.cpu
            entry.probe_ms.extend(times.probe)
            entry.rows_without_probe += bool(times.wall) and not times.probe
    if not measurements:
        raise GateDataError(f"the {name} ({', '.join(sources)}) holds no rows")
    return Side(name, sources, measurements)


def resolve_source(name: str, path: Path) -> Path:
    if not path.exists():
        raise GateDataError(f"{name}: no such file or directory: {path}")
    if path.is_file() or (path / "results.csv").is_file():
        return path
    runs = [csv_path.parent for csv_path in path.glob("*/results.csv")]
    if not runs:
        raise GateDataError(f"{name}: {path} is not a run directory and holds none")
    newest = max(runs, key=lambda run: (run / "results.csv").stat().st_mtime)
    print(
        f"{name}: {newest} (the newest of {len(runs)} run directories in {path})", file=sys.stderr
    )
    return newest


def read_source(path: Path) -> list[Times]:
    """A source's rows and their windows. A CSV file inside a run directory that is not a
    baseline file (results.csv, attempts.csv) stands for its run directory."""
    if path.is_dir():
        return read_run_dir(path)
    if path.suffix == ".json":
        return read_pytest_benchmark(path)
    if (path.parent / "cells").is_dir() and STEP_TIMES_COLUMN not in csv_header(path):
        if path != path.parent / "results.csv":
            read_run_csv(path)  # checked, as any source is
        return read_run_dir(path.parent)
    rows, fields = read_baseline_csv(path)
    if STEP_TIMES_COLUMN in fields:
        return [(row, read_baseline_row(path, row)) for row in rows]
    raise GateDataError(
        f"{path} has no per-window step times: give its run directory, or make a baseline "
        f"file with `bench baseline RUN_DIR --out {path.name}`"
    )


def csv_header(path: Path) -> list[str]:
    """The column names on a CSV file's first line; [] where it cannot be read as CSV text."""
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def read_baseline_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of a baseline file (or of any CSV given that is not a run's), as text: split into
    lines by the results layer (bench.results.files), checked here with the messages that say
    how to remake a baseline: shape, schema version, the numbers the gate reads."""
    content = read_text(path)
    if not content.strip():
        raise GateDataError(f"{path} is empty")
    if "schema_version" not in first_line(path, content):
        raise GateDataError(
            f"{path} is not a bench results or baseline CSV: it has no schema_version column"
        )
    fields, lines = split_lines(path, content, REQUIRED_COLUMNS)
    rows = [dict(zip(fields, line)) for line in lines]
    check_versions(path, rows)
    for row in rows:
        check_numbers(path, row)
    return rows, fields


def check_versions(path: Path, rows: list[dict[str, str]]) -> None:
    readable = [str(version) for version in READABLE_SCHEMA_VERSIONS]
    others = sorted({row["schema_version"] for row in rows} - set(readable))
    if others:
        count = sum(row["schema_version"] in others for row in rows)
        raise GateDataError(
            f"{path}: {count} rows have schema_version {', '.join(others)} but this bench reads "
            f"versions {', '.join(readable)} (results/SCHEMA.md); make the baseline anew with "
            "`bench baseline RUN_DIR --out FILE`, or gate with the bench version that wrote it"
        )


def check_numbers(path: Path, row: dict[str, str]) -> None:
    for column in NUMERIC_COLUMNS:
        value = row.get(column) or ""
        if value and not is_number(value):
            raise GateDataError(
                f"{path}, row {row['cell_id'] or '?'}: {column} is {value!r}, not a number"
            )


def is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_baseline_row(path: Path, row: dict[str, str]) -> WindowTimes:
    times = WindowTimes(
        parse_step_times(path, row, STEP_TIMES_COLUMN),
        parse_step_times(path, row, CPU_TIMES_COLUMN),
        parse_step_times(path, row, PROBE_COLUMN),
    )
    for column, values in ((CPU_TIMES_COLUMN, times.cpu), (PROBE_COLUMN, times.probe)):
        if values and len(values) != len(times.wall):
            raise GateDataError(
                f"{path}, row {row['cell_id']}: {column} has {len(values)} values but "
                f"{STEP_TIMES_COLUMN} {len(times.wall)}: one per steady window in each"
            )
    return times


def parse_step_times(path: Path, row: dict[str, str], column: str) -> list[float]:
    try:
        values = [float(item) for item in (row.get(column) or "").split()]
    except ValueError:
        values = [-1.0]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise GateDataError(
            f"{path}, row {row['cell_id']}: {column} must hold positive numbers separated by spaces"
        )
    if row["status"] == "ok" and not values and column == STEP_TIMES_COLUMN:
        raise GateDataError(f"{path}, row {row['cell_id']}: an ok row without {column}")
    return values


def read_run_csv(path: Path) -> pd.DataFrame:
    """A run's results CSV through the results layer: a typed DataFrame of every row, checked
    (ResultsError, which is GateDataError, names the file and the problem)."""
    frame = results.read_results(path, REQUIRED_COLUMNS)
    if frame.empty and not path.read_text().strip():  # the layer reads an empty file as no rows
        raise GateDataError(f"{path} is empty")
    return frame


def read_run_dir(run_dir: Path) -> list[Times]:
    """Each cell's final row (bench.results.latest_per_cell) as typed values, and its windows.
    A baseline file, which pools runs, keeps every row instead (read_baseline_csv)."""
    frame = results.latest_per_cell(read_run_csv(run_dir / "results.csv"))
    return [(row, steady_times(run_dir, row)) for row in results.records(frame)]


def steady_times(run_dir: Path, row: dict[str, object]) -> WindowTimes:
    """The cell's steady windows (none for a row that is not ok; no CPU times from windows
    written before schema 2, no probe times from windows written before the probe)."""
    if text(row.get("status")) != "ok":
        return WindowTimes([])
    path = run_dir / "cells" / text(row.get("cell_id")) / "windows.csv"
    try:
        steady = [w for w in read_rows(path) if w["phase"] == "steady"]
        wall = [float(w["seconds"]) * 1e3 / int(w["steps"]) for w in steady]
        cpu = [
            float(w["cpu_seconds"]) * 1e3 / int(w["steps"]) for w in steady if w.get("cpu_seconds")
        ]
        probe = [float(w["probe_ms"]) for w in steady if w.get("probe_ms")]
        return WindowTimes(
            wall, cpu if len(cpu) == len(wall) else [], probe if len(probe) == len(wall) else []
        )
    except FileNotFoundError:
        raise GateDataError(f"{path} is missing: the run directory is incomplete") from None
    except (KeyError, ValueError, ZeroDivisionError, csv.Error):
        raise GateDataError(f"{path} is malformed (columns seconds, steps, phase)") from None


def read_pytest_benchmark(path: Path) -> list[Times]:
    """pytest-benchmark JSON -> rows. Our benchmarks (tests/benchmarks) put the row identity and
    steps_per_round in extra_info and the calibration in machine_info; any other benchmark is
    one row named by its fullname. Each round is one window: its time / steps_per_round."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise GateDataError(f"{path} is not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise GateDataError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' list)")
    machine = document.get("machine_info") or {}
    cpu = (machine.get("cpu") or {}).get("brand_raw") or machine.get("processor") or ""
    calibration = machine.get("bench_calibration") or {}
    rows = []
    for benchmark in document["benchmarks"]:
        extra = benchmark.get("extra_info") or {}
        data = (benchmark.get("stats") or {}).get("data")
        name = benchmark.get("fullname") or benchmark.get("name") or "?"
        if not data:
            raise GateDataError(
                f"{path}: benchmark {name} has no raw timings (stats.data): run pytest with "
                "--benchmark-save-data (make bench-pytest does)"
            )
        steps = int(extra.get("steps_per_round") or 1)
        row = {column: "" for column in COLUMNS} | {
            "schema_version": str(READABLE_SCHEMA_VERSIONS[-1]),
            "cell_id": name,
            "task": str(extra.get("task") or name),
            "backend": str(extra.get("backend") or ""),
            "device": str(extra.get("device") or "cpu"),
            "device_name": str(extra.get("device_name") or cpu),
            "precision": str(extra.get("precision") or ""),
            "mode": str(extra.get("mode") or ""),
            "batch_size": str(extra.get("batch_size") or ""),
            "data": str(extra.get("data") or ""),
            "status": "ok",
            "test_hooks": str(extra.get("test_hooks") or ""),
        }
        row |= {key: str(calibration[key]) for key in CALIBRATION_KEYS if key in calibration}
        try:
            step_ms = [float(seconds) * 1e3 / steps for seconds in data]
        except (TypeError, ValueError):
            raise GateDataError(f"{path}: benchmark {name} has non-numeric timings") from None
        probe = extra.get("probe_ms") or []  # our benchmarks: the probe before each round
        try:
            probe = [float(value) for value in probe] if len(probe) == len(step_ms) else []
        except (TypeError, ValueError):
            raise GateDataError(f"{path}: benchmark {name} has non-numeric probe_ms") from None
        rows.append((row, WindowTimes(step_ms, [], probe)))  # wall clock only: no CPU times
    return rows
