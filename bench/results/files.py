"""Writing a run directory: rows appended to results.csv, files replaced atomically, env.json.

The runner's rule: each finished row is appended with one write (header first if the file is
new), then fsynced, so a crash keeps every finished row and can tear at most the last line,
which repair_csv cuts. Imports nothing heavy (no pandas): the worker writes through this module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.metrics import cpu_count, cpu_name, nvml_devices
from bench.results.schema import COLUMNS, SCHEMA_VERSION, ResultsError, format_value


def csv_line(row: dict[str, object]) -> str:
    """One row as a CSV line in COLUMNS order (missing columns empty)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([format_value(row.get(c)) for c in COLUMNS])
    return buffer.getvalue()


def append_row(path: Path, row: dict[str, object]) -> None:
    """Append one row with a single write (header first if the file is new), then fsync."""
    line = csv_line(row)
    if not path.exists() or path.stat().st_size == 0:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(list(COLUMNS))
        line = header.getvalue() + line
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def repair_csv(path: Path) -> None:
    """Cut a torn last line (a writer killed mid-write leaves no final newline)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data[: data.rfind(b"\n") + 1]
    temporary = path.with_name(f".{path.name}.repair")
    temporary.write_bytes(keep)
    os.replace(temporary, path)


def drop_rows(path: Path, cell_ids: set[str]) -> None:
    """Rewrite results.csv atomically without the rows of `cell_ids` (they are being redone);
    every other row is kept as its text was written."""
    kept = [row for row in read_rows(path) if row["cell_id"] not in cell_ids]
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    for row in kept:
        append_row(temporary, row)
    if not kept:
        temporary.write_text("")
    os.replace(temporary, path)


def check_appendable(path: Path) -> None:
    """Raise ResultsError unless rows of this schema can be appended to `path` (absent, empty,
    or a header of exactly COLUMNS): a resumed run must not mix two schemas in one file."""
    if path.is_file() and path.stat().st_size:
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != list(COLUMNS):
            raise ResultsError(
                f"{path} was written with other columns (another schema version); finish that "
                "run with the bench version that started it, or start a new run"
            )


def read_rows(path: Path) -> list[dict[str, str]]:
    """Any CSV's lines as text dicts, unchecked (windows.csv, history.csv; the runner's own
    rewrite of results.csv). Results are read checked and typed with `read_results`."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one rename: a reader sees the old or the new file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter, read from metadata (nothing imported)."""
    from backends import FRAMEWORK_PACKAGES  # the registry: only when env.json is written

    names = (*FRAMEWORK_PACKAGES, "numpy", "pandas", "nvidia-ml-py")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}{'-dirty' if dirty else ''}" if sha else None


def environment(command: list[str]) -> dict[str, object]:
    """What env.json holds: the command, Python, platform, CPU, GPUs, packages, git SHA."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": " ".join(command),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": cpu_count(),
        "gpus": nvml_devices(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "bench_data_dir": os.environ.get("BENCH_DATA_DIR"),
    }


def write_environment(run_dir: Path, command: list[str]) -> None:
    write_atomic(run_dir / "env.json", json.dumps(environment(command), indent=2) + "\n")


# ---------------------------------------------------------------------------- reading CSV text


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ResultsError(f"{path} is not a text CSV file") from None
    except OSError as error:
        raise ResultsError(f"cannot read {path}: {error.strerror or error}") from None


def first_line(path: Path, content: str) -> list[str]:
    """The header's fields (a CSV text's first line)."""
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        return next(reader, [])
    except csv.Error as error:
        raise ResultsError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from None


def split_lines(
    path: Path, content: str, required: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """A CSV text's header (which must hold the `required` columns) and its lines, each as
    long as the header; blank lines are skipped, as csv.DictReader skips them."""
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        header = next(reader)
        missing = [name for name in required if name not in header]
        if missing:
            raise ResultsError(f"{path} lacks the columns {', '.join(missing)}")
        lines = []
        for line in reader:
            if not line:
                continue
            if len(line) != len(header):
                raise ResultsError(
                    f"{path}, line {reader.line_num}: {len(line)} fields where the header has "
                    f"{len(header)}: a malformed CSV"
                )
            lines.append(line)
    except csv.Error as error:
        raise ResultsError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from None
    return header, lines
