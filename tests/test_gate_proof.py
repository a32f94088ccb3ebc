"""The gate's proof on real training runs (slow: `make test-slow`): five fresh runs of unchanged
code pass the gate; an injected 15% slowdown of the train step and an injected accuracy drop
(a corrupted share of the training labels) are caught; broken baselines exit with code 2.

Every run is a real `bench run` (fresh worker processes, real MNIST from $BENCH_DATA_DIR or the
cache): torch, eager, two batch sizes, one short epoch. The regressions come from the worker's
test-only hooks (BENCH_TEST_SLOWDOWN, BENCH_TEST_CORRUPT_LABELS), inactive unless set; the rows
they make say so in their test_hooks column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import data as datasets
from bench.results import read_rows

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN_ARGS = [
    "--tasks", "mnist_cnn", "--backends", "torch", "--batch-size", "64,128", "--epochs", "1",
    "--train-limit", "6400", "--test-limit", "2000", "--window-steps", "4", "--threads", "1",
]  # fmt: skip
FRESH_RUNS = 5


def bench(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, **(env or {})),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A baseline run and its baseline file, five fresh runs, a slowed and a mislabelled run."""
    try:
        datasets.load("mnist")
    except datasets.DatasetError as error:
        pytest.skip(f"real MNIST is needed: {error}")
    out = tmp_path_factory.mktemp("gate-proof")
    names = ["baseline", *(f"fresh-{i}" for i in range(FRESH_RUNS)), "slowdown", "label-noise"]
    hooks = {
        "slowdown": {"BENCH_TEST_SLOWDOWN": "0.15"},
        "label-noise": {"BENCH_TEST_CORRUPT_LABELS": "0.4"},
    }
    paths = {}
    for name in names:
        result = bench("run", *RUN_ARGS, "--out", out, "--run-id", name, env=hooks.get(name))
        assert result.returncode == 0, result.stderr[-3000:]
        paths[name] = out / name
    result = bench("baseline", paths["baseline"], "--out", out / "baseline.csv")
    assert result.returncode == 0, result.stderr
    paths["baseline.csv"] = out / "baseline.csv"
    return paths


def gate(baseline: Path, current: Path, *args: str) -> subprocess.CompletedProcess:
    return bench("gate", "--baseline", baseline, "--current", current, *args)


def summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_five_fresh_runs_of_unchanged_code_pass(runs):
    results = [gate(runs["baseline.csv"], runs[f"fresh-{i}"]) for i in range(FRESH_RUNS)]
    failures = [r.stdout for r in results if r.returncode != 0]
    assert not failures, "\n\n".join(failures)
    assert all(summary(r) == summary(results[0]) for r in results)
    assert summary(results[0])["compared"] == 2


def test_an_injected_15_percent_slowdown_is_caught(runs):
    rows = read_rows(runs["slowdown"] / "results.csv")
    assert all(row["test_hooks"] == "BENCH_TEST_SLOWDOWN=0.15" for row in rows)
    result = gate(runs["baseline.csv"], runs["slowdown"])
    assert result.returncode == 1, result.stdout
    assert summary(result)["regressions"] == 2 and result.stdout.count("SLOWER") == 2
    assert "made under test-only hooks (BENCH_TEST_SLOWDOWN=0.15)" in result.stdout


def test_an_injected_accuracy_drop_is_caught(runs):
    rows = read_rows(runs["label-noise"] / "results.csv")
    assert all(row["test_hooks"] == "BENCH_TEST_CORRUPT_LABELS=0.4" for row in rows)
    result = gate(runs["baseline.csv"], runs["label-noise"])
    assert result.returncode == 1, result.stdout
    assert "DROP" in result.stdout and "SLOWER" not in result.stdout


def test_the_unchanged_runs_also_pass_as_run_directories(runs):
    result = gate(runs["baseline"], runs["fresh-0"])
    assert result.returncode == 0, result.stdout


def test_broken_real_baselines_exit_2_with_clear_messages(runs, tmp_path):
    lines = runs["baseline.csv"].read_text().splitlines()
    assert len(lines) == 3  # the header and one row per batch size
    cases = {
        "missing-row": ("\n".join(lines[:2]), "1 current rows are not in the baseline"),
        "extra-row": (
            "\n".join([*lines, lines[2].replace(",torch,", ",jax,")]),
            "1 baseline rows have no match in the current run (mnist_cnn/jax/eager/fp32/b128)",
        ),
        "malformed": ("\n".join([*lines[:2], lines[2][:-30]]), "a malformed CSV"),
        "other-schema": (
            "\n".join([lines[0], *("3" + line[1:] for line in lines[1:])]),
            "2 rows have schema_version 3 but this bench reads versions 1, 2",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text + "\n")
        result = gate(path, runs["fresh-0"])
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("bench: error:")]
        assert len(errors) == 1 and message in errors[0], (name, result.stderr)
