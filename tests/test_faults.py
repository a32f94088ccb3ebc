"""Runs that survive faults: every cell of a faulty matrix ends with exactly one honest row.

Faults are injected through test-only hooks (BENCH_TEST_FAULTS, read by bench/worker.py and
inactive otherwise), a corrupt dataset folder and an invalid matrix entry; the runner itself is
killed midway and the matrix resumed.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results import COLUMNS, append_row, empty_row, read_rows
from bench.runner import final_rows

ROOT = Path(__file__).resolve().parent.parent
TINY = {"data": "synthetic", "train_limit": 192, "test_limit": 32, "epochs": 1,
        "window_steps": 1, "warmup_windows": 1, "threads": 1, "timeout_s": 300}  # fmt: skip


def cell(task: str, seed: int, **changes) -> dict:
    return {"task": task, "backend": "torch", "seed": seed, **TINY, **changes}


def cell_id(entry: dict) -> str:
    parts = [entry["task"], "torch", "cpu", "fp32", entry.get("mode", "default")]
    return "-".join(parts + [f"s{entry['seed']}"])


def bench(*args, env=None, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def corrupt_sst2(folder: Path) -> Path:
    (folder / "sst2").mkdir(parents=True)
    (folder / "sst2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    (folder / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    return folder


@pytest.mark.slow
def test_thirty_cell_matrix_with_faults_killed_and_resumed(tmp_path):
    corrupt = corrupt_sst2(tmp_path / "corrupt-data")
    entries = [cell(task, seed) for seed in range(15) for task in ("mnist_cnn", "sst2_lstm")]
    faults = {  # index in the matrix -> (change, expected status, reason)
        16: ({}, "diverged", "training loss is nan"),
        19: ({}, "oom", "out of memory at batch size 64"),
        22: ({"timeout_s": 8}, "timeout", "no result within the 8 s limit"),
        25: ({}, "failed", "killed by signal SIGKILL"),
        27: ({"data": "real", "data_dir": str(corrupt), "seed": 99}, "failed", "train.tsv, line 3"),
        29: ({"mode": "turbo"}, "failed", "invalid run: unknown mode 'turbo'"),
    }
    injected = {16: "nan", 19: "oom", 22: "hang", 25: "kill"}
    for index, (change, _, _) in faults.items():
        entries[index].update(change)
    fault_map = {cell_id(entries[i]): fault for i, fault in injected.items()}
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps(entries))
    env = {"BENCH_TEST_FAULTS": json.dumps(fault_map)}
    run_dir = tmp_path / "runs" / "faulty"
    args = ["run", "--matrix", str(matrix), "--out", str(tmp_path / "runs"), "--run-id", "faulty"]

    # Phase 1: run until 8 rows exist, check a second runner is refused, then kill the runner.
    first = bench(*args, env=env)
    results = run_dir / "results.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not results.exists() or len(read_rows(results)) < 8):
        time.sleep(0.5)
    second = bench("run", "--resume", str(run_dir), env=env)
    _, second_err = second.communicate(timeout=60)
    assert second.returncode == 2 and "in use by another bench run" in second_err
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    killed_rows = read_rows(results)
    assert 8 <= len(killed_rows) < 30

    # Phase 2: resume with one retry for failures; every cell ends with exactly one row.
    resumed = bench("run", "--resume", str(run_dir), "--retries", "1", env=env)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 1, err  # some cells failed
    assert json.loads(out.strip().splitlines()[-1])["runs"] == 30

    with open(results, newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(COLUMNS) and all(len(line) == len(COLUMNS) for line in lines)
    rows = read_rows(results)
    assert sorted(r["cell_id"] for r in rows) == sorted(
        cell_id(e) if e.get("mode") != "turbo" else cell_id(e) + "-invalid" for e in entries
    )
    by_id = {r["cell_id"]: r for r in rows}
    for index, entry in enumerate(entries):
        row = by_id[cell_id(entry) + ("-invalid" if entry.get("mode") == "turbo" else "")]
        if index in faults:
            _, status, reason = faults[index]
            assert row["status"] == status and reason in row["error"], (index, row["error"])
        else:
            assert row["status"] == "ok", (index, row["error"])
    for row in killed_rows:  # rows finished before the kill were kept, not redone
        assert by_id[row["cell_id"]]["attempt"] == row["attempt"] == "1"
    attempts = read_rows(run_dir / "attempts.csv")
    retried = [r for r in attempts if r["cell_id"] == cell_id(entries[25])]
    assert [r["attempt"] for r in retried] == ["1", "2"]  # failed, retried once, failed again
    assert by_id[cell_id(entries[25])]["attempt"] == "2"
    diverged = by_id[cell_id(entries[16])]
    assert diverged["compile_s"] != "", "what was measured before divergence is kept"
    table = (run_dir / "results.md").read_text()  # one table per like-for-like group
    # every run's row, in its group's table (whose first column is the task; the seeds' summary
    # tables under them start with the backend)
    tasks = {entry["task"] for entry in entries}
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert sum(line.split("|")[1].strip() in tasks for line in lines) == 30


def test_retry_failed_redoes_only_failed_cells(tmp_path):
    entries = [cell("mnist_cnn", 0), cell("mnist_cnn", 1), cell("mnist_cnn", 2, mode="fused")]
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps(entries))
    env = {"BENCH_TEST_FAULTS": json.dumps({cell_id(entries[1]): "raise"})}
    args = ["run", "--matrix", str(matrix), "--out", str(tmp_path), "--run-id", "r"]
    first = bench(*args, env=env)
    first.communicate(timeout=300)
    assert first.returncode == 1
    again = bench("run", "--resume", str(tmp_path / "r"), "--retry-failed")  # fault gone now
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    rows = {r["cell_id"]: r for r in read_rows(tmp_path / "r" / "results.csv")}
    assert len(rows) == 3
    assert rows[cell_id(entries[0])]["attempt"] == "1"  # ok: not redone
    assert (
        rows[cell_id(entries[1])]["status"] == "ok" and rows[cell_id(entries[1])]["attempt"] == "2"
    )
    assert rows[cell_id(entries[2])]["status"] == "skipped"  # skipped is final: not redone
    assert len(read_rows(tmp_path / "r" / "attempts.csv")) == 4


def test_a_torn_last_line_is_cut_on_resume(tmp_path):
    path = tmp_path / "results.csv"
    for index in range(2):
        append_row(path, empty_row() | {"cell_id": f"c{index}", "status": "ok"})
    with open(path, "a") as handle:
        handle.write("1,run,c2,mnist_cnn,mni")  # a writer killed mid-line
    assert list(final_rows(path)) == ["c0", "c1"]
    assert path.read_text().endswith("\n")


def test_an_interrupted_matrix_keeps_finished_rows(tmp_path):
    """Ctrl-C (SIGINT) keeps every finished row and says how to resume."""
    entries = [cell("mnist_cnn", seed) for seed in range(3)]
    entries[1]["timeout_s"] = 600
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps(entries))
    env = {"BENCH_TEST_FAULTS": json.dumps({cell_id(entries[1]): "hang"})}
    # The runner gets SIGINT's default action whatever this process has: a shell without job
    # control starts `pytest ... &` with SIGINT ignored, the runner would inherit that, and
    # Python installs no KeyboardInterrupt handler for an ignored signal.
    runner = bench(
        "run", "--matrix", str(matrix), "--out", str(tmp_path), "--run-id", "i", env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    results = tmp_path / "i" / "results.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not results.exists():
        time.sleep(0.3)
    time.sleep(1)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 130
    assert "resume with: bench run --resume" in err
    assert [r["status"] for r in read_rows(results)] == ["ok"]


def test_an_entry_with_a_non_number_where_a_number_goes_gets_its_failed_row(tmp_path):
    """The invalid entry's row keeps its text fields and leaves a "big" batch size empty, so the
    typed results reader can read it back: the matrix ends with exit 1, not a data error."""
    entries = [cell("mnist_cnn", 0), cell("mnist_cnn", 1, batch_size="big")]
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps(entries))
    runner = bench("run", "--matrix", str(matrix), "--out", str(tmp_path), "--run-id", "m")
    out, err = runner.communicate(timeout=300)
    assert runner.returncode == 1, err
    rows = read_rows(tmp_path / "m" / "results.csv")
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(rows) == 2 and len(failed) == 1
    assert failed[0]["batch_size"] == "" and failed[0]["task"] == "mnist_cnn"
    assert failed[0]["error"].startswith("invalid run:")
    assert "invalid run" in (tmp_path / "m" / "results.md").read_text()
