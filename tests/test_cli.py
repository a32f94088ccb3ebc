"""End to end through the command line: the matrix, the worker, rows, errors and faults."""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from reference import THREADS

from bench.cell import run_cpus
from bench.cli import installed_backends
from bench.config import RunConfig
from bench.metrics import cpu_count, nvml_devices
from bench.progress import ProgressLine, describe
from bench.results import COLUMNS, SCHEMA_VERSION, STATUSES, read_rows

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "synthetic", "--train-limit", "256", "--test-limit", "64", "--epochs", "2"]
TINY += ["--window-steps", "1", "--warmup-windows", "1", "--threads", str(THREADS)]


def bench(*args, env=None, timeout=600):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )


def test_run_cpus_confines_a_cpu_run_to_its_threads_on_the_idlest_cores():
    config = RunConfig(task="mnist_cnn", backend="jax", threads=1)
    assert run_cpus(config, [0, 1], idle={0: 3, 1: 20}) == [1]
    assert run_cpus(config, [0, 1], idle={0: 20, 1: 3}) == [0]
    assert run_cpus(config, [0, 1], idle={0: 20, 1: 20}) == [1]  # a tie: the later core
    assert run_cpus(config, [0, 1], idle={}) == [1]  # no /proc/stat
    two = dataclasses.replace(config, threads=2)
    assert run_cpus(two, [3, 0, 2, 1], idle={0: 9, 1: 1, 2: 9, 3: 5}) == [0, 2]
    assert run_cpus(two, [0, 1], idle={}) is None  # all of them: nothing to confine
    assert run_cpus(dataclasses.replace(config, threads=None), [0, 1], idle={}) is None
    assert run_cpus(dataclasses.replace(config, device="cuda"), [0, 1], idle={}) is None


@pytest.mark.skipif(cpu_count() < 2, reason="one core: a 1-thread run has nothing to leave out")
def test_a_one_thread_cpu_run_is_confined_to_one_core(tmp_path):
    """XLA's CPU pool ignores the thread settings (a 1-thread JAX run used 1.87 cores' CPU time
    per wall second, measured): the worker confines itself, every thread, to one core."""
    backends = [b for b in ("jax", "torch") if b in installed_backends()]
    result = bench(
        "run", "--tasks", "mnist_cnn", "--backends", ",".join(backends), *TINY,
        "--threads", "1", "--out", str(tmp_path), "--run-id", "one",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for row in read_rows(tmp_path / "one" / "results.csv"):
        cell = tmp_path / "one" / "cells" / row["cell_id"]
        confined = re.search(
            r"worker: confined to CPU (\d+) \(threads 1\)", (cell / "worker.log").read_text()
        )
        assert confined and int(confined[1]) in os.sched_getaffinity(0)
        for window in read_rows(cell / "windows.csv"):  # CPU time: one core's at most
            assert float(window["cpu_seconds"]) <= 1.05 * float(window["seconds"]) + 0.005


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "resnet"], "unknown task 'resnet'; valid tasks: mnist_cnn"),
        (["--backends", "mxnet"], "unknown backend 'mxnet'; valid backends: torch"),
        (["--device", "tpu"], "unknown device 'tpu'; valid devices: cpu, cuda"),
        (["--precision", "fp8"], "unknown precision 'fp8'; valid precisions: fp32, tf32, bf16"),
        (["--mode", "turbo"], "unknown mode 'turbo'; valid modes: default, eager, compiled"),
        (["--suite", "huge"], "unknown suite 'huge'; valid suites: full, quick"),
        (["--data", "fake"], "unknown data kind 'fake'"),
        (["--batch-size", "big"], "batch size must be a comma-separated list of integers"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path):
    result = bench("run", *args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may run on bad input"


@pytest.mark.skipif(bool(nvml_devices()), reason="this machine has an NVIDIA GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run(tmp_path):
    result = bench("run", "--tasks", "mnist_cnn", "--device", "cuda", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "device cuda was requested" in result.stderr
    assert not any(tmp_path.iterdir())


def test_list_prints_every_task():
    result = bench("list")
    assert result.returncode == 0
    for name in ("mnist_cnn", "fashion_mnist_cnn", "cifar10_cnn", "sst2_lstm", "imdb_lstm"):
        assert name in result.stdout
    assert "347,146" in result.stdout
    sources = result.stdout.split("targets and where they come from")[1]
    assert "kuangliu/pytorch-cifar" in sources and "CosineEpochs(epochs=200)" in sources
    assert "AlgoPerf" in " ".join(sources.split())  # mnist_mlp's, however it wraps


def test_tiny_matrix_writes_rows_windows_history_and_table(tmp_path):
    result = bench(
        "run", "--tasks", "mnist_cnn,sst2_lstm", "--backends", "torch", *TINY,
        "--out", str(tmp_path), "--run-id", "tiny",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "tiny"
    rows = read_rows(run_dir / "results.csv")
    assert [r["task"] for r in rows] == ["mnist_cnn", "sst2_lstm"]
    assert list(rows[0]) == list(COLUMNS)
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["schema_version"] == str(SCHEMA_VERSION) and row["run_id"] == "tiny"
        assert row["mode"] == "eager" and row["data"] == "synthetic"
        assert row["steps_per_epoch"] == str(256 // int(row["batch_size"]))
        assert float(row["samples_per_s"]) > 0 and float(row["compile_s"]) > 0
        p10, median, p90 = (float(row[f"step_time_{k}_ms"]) for k in ("p10", "median", "p90"))
        assert p10 <= median <= p90
        assert row["final_test_accuracy"] == "" and row["target_accuracy"] == ""
        assert float(row["peak_rss_mb"]) > 50
        cell = run_dir / "cells" / row["cell_id"]
        windows = read_rows(cell / "windows.csv")
        assert windows[0]["phase"] == "compile" and windows[1]["phase"] == "warmup"
        assert all(float(w["probe_ms"]) > 0 and float(w["cpu_seconds"]) > 0 for w in windows)
        steps = sum(int(w["steps"]) for w in windows)
        assert steps == 2 * int(row["steps_per_epoch"])
        assert len(read_rows(cell / "history.csv")) == 2
    assert rows[0]["params"] == "347146"
    table = (run_dir / "results.md").read_text()
    assert "| mnist_cnn | torch |" in table and "| sst2_lstm | torch |" in table
    headings = [line for line in table.splitlines() if line.startswith("### ")]
    assert [h.split(" · ")[0] for h in headings] == ["### mnist_cnn", "### sst2_lstm"]
    assert table in result.stdout  # bench run prints results.md
    env = json.loads((run_dir / "env.json").read_text())
    assert {"command", "packages", "git_sha", "cpu", "gpus", "python"} <= set(env)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "run_dir": str(run_dir), "runs": 2, "failed": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "fault, status, reason",
    [
        ("kill", "failed", "killed by signal SIGKILL"),
        ("raise", "failed", "RuntimeError: injected failure"),
        ("oom", "oom", "out of memory"),
    ],
)
def test_a_failing_worker_still_writes_its_row_and_the_matrix_goes_on(
    fault, status, reason, tmp_path
):
    result = bench(
        "run", "--tasks", "mnist_cnn", "--backends", "torch", "--seeds", "0,1", *TINY,
        "--out", str(tmp_path), "--run-id", "faults", env={"BENCH_TEST_FAULT": fault},
    )  # fmt: skip
    assert result.returncode == 1
    rows = read_rows(tmp_path / "faults" / "results.csv")
    assert len(rows) == 2, "the second run must run after the first failed"
    for row in rows:
        assert row["status"] == status and reason in row["error"]
        assert row["status"] in STATUSES


def test_a_hanging_worker_is_killed_at_the_timeout(tmp_path):
    result = bench(
        "run", "--tasks", "mnist_cnn", "--backends", "torch", *TINY, "--timeout", "15",
        "--out", str(tmp_path), "--run-id", "hang", env={"BENCH_TEST_FAULT": "hang"},
    )  # fmt: skip
    assert result.returncode == 1
    (row,) = read_rows(tmp_path / "hang" / "results.csv")
    assert row["status"] == "timeout" and "no result within the 15 s limit" in row["error"]
    assert "it was setting up" in row["error"]  # the hook hangs at the end of setup


def test_a_timeout_says_where_the_worker_was_and_the_line_shows_the_phase():
    """The worker's phase events (loading, setup, training) and window events, in words: a run
    killed for time names the last one (JAX's fused ResNet-18 on a CPU never ended its first
    dispatch in 25 minutes: docs/MEASUREMENTS.md, "ResNet-18 on a CPU")."""
    assert describe(None).startswith("not yet reporting")
    assert describe({"phase": "loading"}).startswith("loading (framework import")
    assert describe({"phase": "training"}).startswith("in its first training dispatch")
    window = {"epoch": 2, "epochs": 3, "done": 150, "total": 300}
    assert describe(window) == "at step 150 of 300, epoch 2/3"
    stream = io.StringIO()
    line = ProgressLine(2, stream=stream)
    config = RunConfig(task="mnist_cnn", backend="torch")
    line.show(0, config, {"phase": "training"}, 65.0)
    assert "in its first training dispatch (compilation and the first window) for 1m05s" in (
        stream.getvalue()
    )
    assert line.run_start is None  # the step rate starts at the first window, past the compile


def test_unsupported_mode_is_a_skipped_row(tmp_path):
    result = bench(
        "run", "--tasks", "mnist_cnn", "--backends", "torch", "--mode", "fused", *TINY,
        "--out", str(tmp_path), "--run-id", "skip",
    )  # fmt: skip
    assert result.returncode == 0
    (row,) = read_rows(tmp_path / "skip" / "results.csv")
    assert row["status"] == "skipped" and "no CUDA graphs on cpu" in row["error"]


def test_a_schedule_without_a_steady_window_fails_with_the_reason(tmp_path):
    # 4 steps in windows of 2: the first dispatch, then warm-up windows only; never `ok` with an
    # empty step time
    result = bench(
        "run", "--tasks", "mnist_cnn", "--backends", "torch", "--data", "synthetic",
        "--train-limit", "256", "--test-limit", "64", "--epochs", "1", "--window-steps", "2",
        "--warmup-windows", "2", "--threads", "1", "--out", str(tmp_path), "--run-id", "few",
    )  # fmt: skip
    assert result.returncode == 1
    (row,) = read_rows(tmp_path / "few" / "results.csv")
    assert row["status"] == "failed" and row["error"].startswith("no steady window: 1 epoch(s)")
    assert "--window-steps" in row["error"] and row["step_time_median_ms"] == ""


def test_schema_md_documents_every_column_and_status():
    schema = (ROOT / "results" / "SCHEMA.md").read_text()
    for column in COLUMNS:
        assert f"`{column}`" in schema, f"results/SCHEMA.md lacks {column}"
    for status in STATUSES:
        assert f"`{status}`" in schema
    assert f"Schema version: {SCHEMA_VERSION}" in schema


def test_default_backends_are_the_installed_ones(monkeypatch, capsys):
    """With no --backends, a backend whose framework is missing is left out, and named."""
    from bench import cli

    missing = {"keras-tensorflow": ["tensorflow"]}
    monkeypatch.setattr(cli, "missing_modules", lambda name: missing.get(name, []))
    args = cli.build_parser().parse_args(["run", "--tasks", "mnist_cnn"])
    backends = [config.backend for config in cli.expand_matrix(args)]
    assert "keras-tensorflow" not in backends and "torch" in backends
    assert "leaving out keras-tensorflow: tensorflow not installed" in capsys.readouterr().err
    args = cli.build_parser().parse_args(
        ["run", "--tasks", "mnist_cnn", "--backends", "keras-tensorflow"]
    )
    assert [config.backend for config in cli.expand_matrix(args)] == ["keras-tensorflow"]


@pytest.mark.slow
def test_resnet18_smoke_run_on_every_installed_backend(tmp_path):
    """cifar10_resnet18 through the whole harness (worker, windows, evaluation, rows) on its
    synthetic twin, every installed backend in its default mode, three steps of 16 (ResNet-18
    costs seconds per step on a CPU; tests/test_parity.py's heavy tests run every mode on a
    reduced ResNet and the full one's five steps against torch)."""
    result = bench(
        "run", "--tasks", "cifar10_resnet18", "--data", "synthetic", "--batch-size", "16",
        "--train-limit", "48", "--test-limit", "16", "--epochs", "1", "--window-steps", "1",
        "--warmup-windows", "1", "--threads", str(THREADS), "--out", str(tmp_path), "--run-id", "resnet",
        timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "resnet" / "results.csv")
    assert rows and all(row["status"] == "ok" for row in rows), [r["error"] for r in rows]
    assert {row["params"] for row in rows} == {"11173962"}
    assert all(row["final_test_accuracy"] == "" for row in rows)  # empty for synthetic data
