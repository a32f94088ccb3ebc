"""Runs a matrix of RunConfigs, one fresh worker process each, and collects their rows.

Each finished row is appended to results/<run-id>/results.csv at once (one write, fsynced), so
a crash or Ctrl-C keeps every finished row. A worker that crashes, is killed or times out still
gets a row saying so. A progress line shows the matrix position, the run's epoch and step, and
ETAs for the run and the matrix.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backends import compile_cache_environment
from bench.cell import base_row, worker_environment
from bench.config import InvalidCell, RunConfig, UsageError
from bench.progress import ProgressLine, describe
from bench.results import (
    append_row,
    drop_rows,
    fill_device_names,
    latest_per_cell,
    markdown_table,
    read_results,
    read_run,
    records,
    repair_csv,
    several_seeds,
    write_atomic,
    write_environment,
    write_seeds_csv,
)

STDERR_TAIL_CHARS = 1500


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def die_with_parent() -> None:
    """In the worker, before exec: get SIGKILL when the runner dies (Linux), so a killed runner
    leaves no orphaned training behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def kill_group(process: subprocess.Popen) -> None:
    """End the worker and every process it started (it leads its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def stderr_tail(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-STDERR_TAIL_CHARS:].strip()


def exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def run_cell(config: RunConfig, cell_dir: Path, on_progress) -> dict:
    """Run one config in a fresh worker process; always returns a row."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    result_path = cell_dir / "result.json"
    result_path.unlink(missing_ok=True)
    log_path = cell_dir / "worker.log"
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "bench.worker", "--config", config.to_json()]
    command += ["--out", str(cell_dir), "--progress-fd", str(write_end)]
    started = time.monotonic()
    # On-disk compile caches would leak between runs: each run compiles cold, in its own folder.
    compile_cache = tempfile.TemporaryDirectory(prefix="bench-compile-cache-")
    env = worker_environment(config) | compile_cache_environment(compile_cache.name)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            start_new_session=True,
            preexec_fn=die_with_parent,
            cwd=Path(__file__).resolve().parent.parent,
        )
    os.close(write_end)
    timed_out = False
    last_event: dict | None = None  # the worker's last progress event: where a timeout caught it

    def relay(event: dict, elapsed: float) -> None:
        nonlocal last_event
        last_event = event
        on_progress(event, elapsed)

    try:
        timed_out = follow(process, read_end, started, config.timeout_s, relay)
    except BaseException:
        kill_group(process)
        raise
    finally:
        os.close(read_end)
        compile_cache.cleanup()
    return collect_row(config, process.returncode, timed_out, result_path, log_path, last_event)


def follow(process, read_end: int, started: float, timeout_s: float, on_progress) -> bool:
    """Relay progress events until the worker exits; True if it had to be killed for time."""
    selector = selectors.DefaultSelector()
    selector.register(read_end, selectors.EVENT_READ)
    buffer = b""
    open_pipe = True
    while process.poll() is None or open_pipe:
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            kill_group(process)
            return True
        if not open_pipe:
            try:
                process.wait(timeout=min(1.0, max(0.01, timeout_s - elapsed)))
            except subprocess.TimeoutExpired:
                pass
            continue
        if selector.select(timeout=1.0):
            chunk = os.read(read_end, 65536)
            if not chunk:
                open_pipe = False
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines[-1:]:
                try:
                    on_progress(json.loads(line), time.monotonic() - started)
                except ValueError:
                    pass
    return False


def collect_row(
    config: RunConfig,
    returncode: int,
    timed_out: bool,
    result_path: Path,
    log_path: Path,
    last_event: dict | None = None,
) -> dict:
    if result_path.exists() and not timed_out:
        return json.loads(result_path.read_text())
    row = base_row(config)
    if result_path.exists():  # killed for time after it wrote a row: keep what it measured
        row = json.loads(result_path.read_text())
    tail = stderr_tail(log_path)
    if timed_out:
        where = describe(last_event)  # e.g. in its first training dispatch (compilation ...)
        error = f"no result within the {config.timeout_s:g} s limit; it was {where}"
        row.update(status="timeout", error=error)
    else:
        row.update(status="failed", error=f"worker {exit_description(returncode)}")
    if tail:
        row["error"] += f"; stderr tail: {tail}"
    return row


FINAL_STATUSES = ("ok", "skipped")  # a resume never reruns these
RETRYABLE_STATUSES = (
    "failed",
    "timeout",
)  # what --retries retries (oom, diverged are not transient)


class RunLock:
    """An exclusive lock on a run directory: a second runner refuses instead of interleaving.

    flock is released by the kernel when the holder dies, so a killed runner never leaves a
    stale lock behind."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.descriptor: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            raise UsageError(
                f"{self.path.parent} is in use by another bench run (pid {holder}); wait for it "
                "to finish, or pick another --out / --run-id"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing releases the flock


def write_matrix(run_dir: Path, configs: list[RunConfig | InvalidCell]) -> None:
    entries = [json.loads(c.to_json()) if isinstance(c, RunConfig) else c.raw for c in configs]
    write_atomic(run_dir / "matrix.json", json.dumps(entries, indent=1) + "\n")


def read_matrix(run_dir: Path) -> list[RunConfig | InvalidCell]:
    path = run_dir / "matrix.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} holds no matrix.json: it is not a bench run directory")
    return parse_matrix(json.loads(path.read_text()))


def parse_matrix(entries: list[dict]) -> list[RunConfig | InvalidCell]:
    """Config dicts -> RunConfigs; an invalid entry becomes an InvalidCell (a failed row)."""
    cells: list[RunConfig | InvalidCell] = []
    for entry in entries:
        try:
            cells.append(RunConfig(**entry))
        except (TypeError, ValueError) as error:
            cells.append(InvalidCell(entry, str(error)))
    return cells


def final_rows(path: Path) -> dict[str, dict]:
    """cell_id -> its final row in results.csv (typed; after repairing a torn last line)."""
    repair_csv(path)
    if not path.exists():
        return {}
    return {row["cell_id"]: row for row in records(latest_per_cell(read_results(path)))}


def previous_attempts(path: Path) -> dict[str, int]:
    """cell_id -> how many attempts attempts.csv holds for it."""
    repair_csv(path)
    if not path.exists():
        return {}
    return {str(k): int(n) for k, n in read_results(path)["cell_id"].value_counts().items()}


def write_summary(run_dir: Path) -> None:
    """results.md: the final rows' tables, with env.json's device name for rows that failed
    before the backend named it (as the report does); seeds.csv too where a configuration ran
    several seeds (the rows summed up over seeds)."""
    run = read_run(run_dir)
    rows = records(fill_device_names(run.rows, run.environment))
    write_atomic(run_dir / "results.md", markdown_table(rows))
    if several_seeds(rows):
        write_seeds_csv(rows, run_dir / "seeds.csv")


def run_matrix(
    cells: list[RunConfig | InvalidCell],
    run_dir: Path,
    command: list[str],
    *,
    resume: bool = False,
    retry_failed: bool = False,
    retries: int = 0,
) -> list[dict]:
    """Run every cell that has no final row yet; returns the final rows of the whole matrix.

    Each attempt's row is appended to attempts.csv, each cell's final row to results.csv, at
    once (one write, fsynced). On resume, cells with an ok or skipped row are kept; with
    retry_failed, cells whose row is failed, oom, timeout or diverged are run again (their old
    row is replaced, so every cell keeps exactly one final row)."""
    results = run_dir / "results.csv"
    check_unique(cells)
    with RunLock(run_dir):
        if not resume:
            write_matrix(run_dir, cells)
        write_environment(run_dir, command)
        todo = cells_to_run(cells, results, retry_failed)
        attempts = previous_attempts(run_dir / "attempts.csv")
        progress = ProgressLine(len(todo))
        finished = 0
        try:
            for index, cell in enumerate(todo):
                started = time.monotonic()
                row = run_with_retries(cell, run_dir, index, progress, attempts, retries)
                append_row(results, row)
                finished += 1
                progress.finish(index, cell, row, time.monotonic() - started)
        except KeyboardInterrupt:
            sys.stderr.write(
                f"\ninterrupted: {finished} of {len(todo)} runs finished and kept; "
                f"resume with: bench run --resume {run_dir}\n"
            )
            raise
        finally:
            rows = list(final_rows(results).values())
            write_summary(run_dir)
    return rows


def check_unique(cells: list[RunConfig | InvalidCell]) -> None:
    ids = [cell.cell_id for cell in cells]
    duplicates = sorted({cell_id for cell_id in ids if ids.count(cell_id) > 1})
    if duplicates:
        raise UsageError(f"the matrix holds two runs with the same id: {', '.join(duplicates)}")


def cells_to_run(cells: list, results: Path, retry_failed: bool) -> list:
    """The cells without a final row; with retry_failed also those whose row is not final
    (their old row leaves results.csv)."""
    done = final_rows(results)
    redo = {
        cell_id
        for cell_id, row in done.items()
        if retry_failed and row["status"] not in FINAL_STATUSES
    }
    if redo:
        drop_rows(results, redo)
    return [c for c in cells if c.cell_id not in done or c.cell_id in redo]


def run_with_retries(cell, run_dir: Path, index: int, progress, attempts: dict, retries: int):
    """One cell, retried up to `retries` times after a retryable status; every attempt's row
    goes to attempts.csv, numbered; the last one is returned."""
    for attempt in range(retries + 1):
        row = run_once(cell, run_dir, index, progress)
        row["attempt"] = attempts.get(cell.cell_id, 0) + 1
        attempts[cell.cell_id] = row["attempt"]
        append_row(run_dir / "attempts.csv", row)
        if row["status"] not in RETRYABLE_STATUSES or attempt == retries:
            return row
        progress.note(f"{cell.cell_id}: {row['status']}, retrying ({attempt + 1}/{retries})")
    return row


def run_once(cell: RunConfig | InvalidCell, run_dir: Path, index: int, progress) -> dict:
    if isinstance(cell, InvalidCell):
        return cell.row()

    def on_progress(event: dict, elapsed: float) -> None:
        progress.show(index, cell, event, elapsed)

    row = run_cell(cell, run_dir / "cells" / cell.cell_id, on_progress)
    row["run_id"] = run_dir.name
    return row
