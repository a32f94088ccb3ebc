"""Reading results on pandas: checked, typed frames of rows, and run directories.

    frame = read_results(path)          results.csv, attempts.csv or a baseline file
    run = read_run(run_dir)             results.csv (one row per cell) and env.json
    latest_per_cell(frame)              the one rule for "a cell's final row"
    records(frame)                      the rows as dicts of Python values (None for NA)

Every problem raises ResultsError with one line naming the file (exit code 2 at the command
line). Columns are typed by the schema: text as pandas "string", integers as "Int64", the rest
as float64; an empty cell is NA in all three.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.files import first_line, read_text, split_lines
from bench.results.schema import (
    COLUMNS,
    INTEGER_COLUMNS,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_COLUMNS,
    TEXT_COLUMNS,
    ResultsError,
    text,
)


def read_results(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """The rows of a results CSV (results.csv, attempts.csv, a baseline file), checked and typed.

    Checked in this order: the file is readable text; it has a schema_version column and the
    `required` ones; every line has as many fields as the header; every row's schema_version is
    in READABLE_SCHEMA_VERSIONS; every number column holds numbers (whole ones in
    INTEGER_COLUMNS). The frame has the schema's COLUMNS in order (a column the file lacks,
    added to the schema after it was written, reads as NA), then any columns the file has
    beyond them (a baseline's), as text. Every row is kept, in file order: a cell retried in a
    run has several (see latest_per_cell). A file with no header at all (an empty results.csv)
    gives an empty frame. Raises ResultsError.
    """
    path = Path(path)
    header, lines = read_lines(path, required)
    raw = pd.DataFrame(lines, columns=header, dtype=object)
    check_versions(path, raw["schema_version"])
    cell_ids = [cell or "?" for cell in raw["cell_id"]] if "cell_id" in raw else ["?"] * len(raw)
    extra = [name for name in header if name not in COLUMNS]
    typed = {}
    for name in (*COLUMNS, *extra):
        values = list(raw[name]) if name in raw else [""] * len(raw)
        typed[name] = typed_column(path, name, values, cell_ids)
    return pd.DataFrame(typed, index=pd.RangeIndex(len(raw)))


def read_lines(path: Path, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The header and the lines of a CSV file, each line as long as the header."""
    content = read_text(path)
    if not content.strip():
        return list(COLUMNS), []
    header = first_line(path, content)
    if "schema_version" not in header:
        raise ResultsError(f"{path} has no schema_version column: not a bench results file")
    return split_lines(path, content, required)


def check_versions(path: Path, versions: pd.Series) -> None:
    readable = [str(version) for version in READABLE_SCHEMA_VERSIONS]
    others = versions[~versions.isin(readable)]
    if len(others):
        raise ResultsError(
            f"{path}: {len(others)} rows have schema_version {', '.join(sorted(set(others)))}"
            f" but this bench reads versions {', '.join(readable)} (results/SCHEMA.md); read "
            "them with the bench version that wrote them"
        )


def typed_column(path: Path, name: str, values: list[str], cell_ids: list[str]):
    """One column's text cells as the schema's type: string, Int64 or float64 (NA if empty)."""
    if name in TEXT_COLUMNS or name not in COLUMNS:
        return pd.array([value or None for value in values], dtype="string")
    numbers = []
    for value, cell_id in zip(values, cell_ids):
        try:
            numbers.append(float(value) if value.strip() else math.nan)
        except ValueError:
            raise ResultsError(
                f"{path}, row {cell_id}: {name} is {value!r}, not a number"
            ) from None
    if name not in INTEGER_COLUMNS:
        return np.array(numbers, dtype=float)
    for number, value, cell_id in zip(numbers, values, cell_ids):
        if value.strip() and not (math.isfinite(number) and number.is_integer()):
            raise ResultsError(f"{path}, row {cell_id}: {name} is {value!r}, not a whole number")
    return pd.array([None if math.isnan(n) else int(n) for n in numbers], dtype="Int64")


def latest_per_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a run: each cell_id's last row (a retried or resumed cell's final
    row), in the order the cells first appear; rows without a cell_id are kept, each alone.

    For a run's results.csv or attempts.csv. A baseline file pools several runs, which repeat
    cell ids: every row of it counts, so do not reduce it with this.
    """
    last: dict[object, int] = {}
    for position, cell_id in enumerate(frame["cell_id"]):
        last[cell_id if isinstance(cell_id, str) else ("no cell_id", position)] = position
    return frame.iloc[list(last.values())].reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows as dicts of Python values: str, int, float, and None for NA."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@dataclass(frozen=True, eq=False)
class Run:
    """One run directory: its rows (results.csv, one per cell) and environment (env.json)."""

    path: Path
    environment: dict
    rows: pd.DataFrame

    @property
    def host(self) -> str:
        return str(self.environment.get("hostname") or "unknown host")

    def description(self) -> str:
        """e.g. "gpu-node-07 (run 20260310-091500, git 0cf3353a1b2c, driver 550.90.07)"."""
        parts = [f"run {self.path.name}"]
        if self.environment.get("git_sha"):
            parts.append(f"git {str(self.environment['git_sha'])[:12]}")
        drivers = sorted({gpu.get("driver", "") for gpu in self.environment.get("gpus") or []})
        if any(drivers):
            parts.append(f"driver {', '.join(drivers)}")
        return f"{self.host} ({', '.join(parts)})"


def read_run(run_dir: Path) -> Run:
    """A run directory: results.csv read with read_results and reduced with latest_per_cell,
    and env.json ({} when it is missing or unreadable). Raises ResultsError."""
    run_dir = Path(run_dir)
    rows = latest_per_cell(read_results(run_dir / "results.csv"))
    try:
        environment = json.loads((run_dir / "env.json").read_text())
    except (OSError, ValueError):
        environment = {}
    return Run(run_dir, environment if isinstance(environment, dict) else {}, rows)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories (each holds results.csv); any other folder stands for every run
    directory under it. Each directory once, in the order given. Raises ResultsError."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "results.csv").is_file():
            found.append(path)
        elif path.is_dir():
            children = sorted(csv_path.parent for csv_path in path.rglob("results.csv"))
            if not children:
                raise ResultsError(f"{path} holds no results.csv, nor does any folder in it")
            found.extend(children)
        else:
            raise ResultsError(f"no such run directory: {path}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def environment_device_name(environment: dict, device: str) -> str:
    """What env.json says the device is (its first GPU, or its CPU)."""
    gpus = environment.get("gpus") or []
    if device == "cuda" and gpus:
        return str(gpus[0].get("name", "unknown GPU"))
    if device == "cpu" and environment.get("cpu"):
        return str(environment["cpu"])
    return f"unknown {device}"


def fill_device_names(frame: pd.DataFrame, environment: dict) -> pd.DataFrame:
    """The rows with an empty device_name (a run that failed before the backend named the
    device) given the name env.json has for their device; a new frame."""
    missing = frame["device_name"].isna()
    if not missing.any():
        return frame
    frame = frame.copy()
    names = [environment_device_name(environment, text(d)) for d in frame["device"][missing]]
    frame.loc[missing, "device_name"] = names
    return frame
