"""`bench gate` and `bench baseline` on small, made-up run directories (fast, deterministic):
the ratio statistics, matching, verdicts, machine normalization, the sources it reads (run
directories, baseline files, pytest-benchmark JSON), its output and exit codes, and the
test-only hooks of the worker. The proof on real training runs is tests/test_gate_proof.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import gate
from bench.calibration import calibrate, speed_factor
from bench.gate import (
    CPU_TIMES_COLUMN,
    PROBE_COLUMN,
    STEP_TIMES_COLUMN,
    GateDataError,
    load_side,
    write_baseline,
)
from bench.results import COLUMNS, SCHEMA_VERSION, append_row, empty_row, read_rows
from bench.stats import rank_sum_null, ratio_interval

ROOT = Path(__file__).resolve().parent.parent
CPU = "AMD EPYC 7B13 64-Core Processor"
OTHER_CPU = "Intel(R) Xeon(R) Platinum 8480+"
CALIBRATION = {"calib_matmul_ms": 0.5, "calib_dispatch_ms": 3.0}
CELLS = (  # task, backend, median step ms, final test accuracy (None: synthetic data)
    ("mnist_cnn", "torch", 4.0, 0.95),
    ("mnist_cnn", "jax", 2.5, 0.951),
    ("sst2_lstm", "torch", 30.0, 0.81),
)


# ---------------------------------------------------------------------------- made-up runs


def make_run(
    path: Path,
    cells=CELLS,
    *,
    scale: float = 1.0,
    accuracy_change: float = 0.0,
    seed: int = 0,
    windows: int = 30,
    spread: float = 0.03,
    device: str = "cpu",
    device_name: str = CPU,
    calibration: dict | None = CALIBRATION,
    status: dict | None = None,
    hooks: str | None = None,
    cpu: bool = True,
    wall_scale: float = 1.0,
    probe: bool = True,
    slow_windows: int = 0,
    slow_factor: float = 1.4,
) -> Path:
    """A run directory as the runner writes it: results.csv and each cell's windows.csv, with
    lognormal steady windows around the cell's median times `scale`; their CPU time is 95% of
    that (`cpu`), and the wall time a further `wall_scale` (other processes on the cores). The
    last `slow_windows` ran in the machine's slow state: `slow_factor` longer, and the probe
    around them twice as long as around the others (`probe`: windows have probe times)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for task, backend, median_ms, accuracy in cells:
        row = empty_row() | {
            "run_id": path.name, "task": task, "backend": backend, "device": device,
            "device_name": device_name, "precision": "fp32", "mode": "eager", "batch_size": 64,
            "seed": 0, "data": "real", "status": "ok", "test_hooks": hooks,
            "target_accuracy": 0.98 if task == "mnist_cnn" else 0.8,
        }  # fmt: skip
        row["cell_id"] = f"{task}-{backend}-{device}-fp32-default-s0"
        if accuracy is not None:
            row["final_test_accuracy"] = accuracy + accuracy_change
        row |= calibration or {}
        if status and backend in status:
            row |= {"status": status[backend], "error": f"RuntimeError: {status[backend]} here"}
        append_row(path / "results.csv", row)
        cell = path / "cells" / row["cell_id"]
        cell.mkdir(parents=True)
        times = median_ms * scale * rng.lognormal(0, spread, windows) * 25 / 1e3
        slow = np.arange(windows) >= windows - slow_windows
        times = np.where(slow, times * slow_factor, times)
        probes = 0.4 * rng.lognormal(0, 0.03, windows) * np.where(slow, 2.0, 1.0)
        columns = ["epoch", "first_step", "steps", "seconds", "phase", "loss"]
        columns += ["cpu_seconds"] * cpu + ["probe_ms"] * probe
        with open(cell / "windows.csv", "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(columns)
            out.writerow([0, 0, 1, 0.5, "compile", 2.3] + [0.5] * cpu + [0.5] * probe)
            for index, (seconds, probe_ms) in enumerate(zip(times, probes)):
                line = [0, 1 + 25 * index, 25, seconds * wall_scale, "steady", 0.5]
                out.writerow(line + [0.95 * seconds] * cpu + [probe_ms] * probe)
    return path


# A quiet, dedicated machine's tolerances (the CPU defaults are wide: results/baselines/README.md)
QUIET = ("--max-slowdown", "0.1", "--suite-slowdown", "0.08")


def table_column(out: str, name: str) -> list[str]:
    """One column of the gate's text table (cells hold no spaces in the columns asked for)."""
    lines = out.splitlines()
    index = lines[0].split().index(name)
    rows = lines[2 : lines.index("")]
    return [row.split()[index] for row in rows]


def gate_main(*args: str) -> int:
    return gate.main([str(a) for a in args])


def run_gate(baseline, current, *extra, capsys) -> tuple[int, str, str]:
    code = gate_main("--baseline", baseline, "--current", current, *extra)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def base_run(tmp_path) -> Path:
    return make_run(tmp_path / "base", seed=1)


# ---------------------------------------------------------------------------- statistics


def test_rank_sum_null_distribution_is_the_textbook_one():
    assert np.allclose(rank_sum_null(3, 3) * 20, [1, 1, 2, 3, 3, 3, 3, 2, 1, 1])
    for m, n in ((1, 1), (4, 7), (12, 9)):
        p = rank_sum_null(m, n)
        assert len(p) == m * n + 1 and math.isclose(p.sum(), 1.0)
        assert np.allclose(p, p[::-1])  # symmetric under the null


def test_rank_sum_null_is_the_distribution_behind_scipys_exact_mann_whitney_test():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    for m, n in ((4, 7), (12, 9), (30, 40)):
        x, y = rng.normal(size=m), rng.normal(size=n)
        test = mannwhitneyu(x, y, alternative="less", method="exact")  # P(U <= observed U)
        assert math.isclose(np.cumsum(rank_sum_null(m, n))[int(test.statistic)], test.pvalue)


@pytest.mark.parametrize(
    "m, n, rank",  # Wilcoxon-Mann-Whitney tables, two-sided 0.05: k = critical U + 1
    [(3, 3, 0), (4, 4, 1), (3, 6, 2), (5, 5, 3), (10, 10, 24), (20, 20, 128)],
)
def test_interval_rank_matches_the_tables(m, n, rank):
    from bench.stats import _interval_rank

    assert _interval_rank(m, n, 0.95) == rank


def test_exact_and_normal_ranks_agree_where_they_meet():
    from bench.stats import _interval_rank

    z = 1.959963984540054
    for m, n in ((50, 50), (40, 60)):
        normal = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
        assert abs(_interval_rank(m, n, 0.95) - normal) <= 1


def test_ratio_interval_estimates_a_known_factor():
    rng = np.random.default_rng(0)
    baseline = rng.lognormal(0, 0.05, 40)
    result = ratio_interval(baseline, 1.2 * rng.lognormal(0, 0.05, 40))
    assert 1.15 < result.ratio < 1.25 and result.low < 1.2 < result.high
    same = ratio_interval(baseline, baseline)
    assert same.ratio == 1.0 and same.low < 1 < same.high


def test_ratio_interval_covers_the_true_ratio_95_percent_of_the_time():
    rng = np.random.default_rng(42)
    trials, covered = 600, 0
    for _ in range(trials):
        baseline = rng.lognormal(0, 0.1, 8)
        current = 1.3 * rng.lognormal(0, 0.1, 12)
        result = ratio_interval(baseline, current)
        covered += result.low <= 1.3 <= result.high
    assert 0.93 <= covered / trials <= 0.985


def test_ratio_interval_needs_four_samples_a_side_and_positive_times():
    assert ratio_interval([1, 2, 3], [1, 2, 3]).low is None
    assert ratio_interval([1, 2, 3, 4], [1, 2, 3, 4]).low is not None
    with pytest.raises(ValueError, match="positive"):
        ratio_interval([1.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        ratio_interval([], [1.0])


def test_large_samples_are_thinned_not_narrowed():
    rng = np.random.default_rng(3)
    big = ratio_interval(rng.lognormal(0, 0.1, 5000), rng.lognormal(0, 0.1, 5000))
    assert big.baseline_samples == 5000 and big.low < 1 < big.high


# ---------------------------------------------------------------------------- calibration


def test_calibration_is_quick_and_positive():
    import time

    started = time.perf_counter()
    result = calibrate()
    assert time.perf_counter() - started < 2.0  # about 0.1-0.3 s; generous for a busy machine
    assert set(result) == {"calib_matmul_ms", "calib_dispatch_ms"}
    assert all(value > 0 for value in result.values())


def test_the_probe_is_short_and_positive():
    import time

    from bench.calibration import Probe

    probe = Probe()
    started = time.perf_counter()
    times = [probe() for _ in range(20)]
    assert time.perf_counter() - started < 1.0  # about 1 ms a call
    assert all(0 < t < 50 for t in times)


def test_workers_fix_the_malloc_thresholds_for_every_backend():
    from bench.cell import worker_environment
    from bench.config import RunConfig

    for backend in ("torch", "jax", "keras-tensorflow"):
        env = worker_environment(RunConfig(task="mnist_cnn", backend=backend), base={})
        assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 << 20)
        assert env["MALLOC_TRIM_THRESHOLD_"] == str(64 << 20)
    # make bench-pytest sets them itself (glibc reads them at process start): the same values
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert f"MALLOC_MMAP_THRESHOLD_={env['MALLOC_MMAP_THRESHOLD_']} " in makefile
    assert f"MALLOC_TRIM_THRESHOLD_={env['MALLOC_TRIM_THRESHOLD_']} " in makefile


def test_speed_factor_is_the_geometric_mean_of_the_ratios():
    slower = {"calib_matmul_ms": 2.0, "calib_dispatch_ms": 3.0 * 8}
    assert math.isclose(speed_factor(slower, CALIBRATION), math.sqrt(4 * 8))
    assert speed_factor(CALIBRATION, CALIBRATION) == 1.0


def test_gate_modules_import_no_framework():
    code = (
        "import sys, bench.gate, bench.gate.baseline, bench.calibration\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'jax', 'tensorflow', 'keras', 'flax')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# ---------------------------------------------------------------------------- verdicts


def test_unchanged_code_passes(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, scale=1.03)  # within the allowance
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 0, out
    assert "PASS: 3 rows compared, 0 regressions" in out
    assert json.loads(out.strip().splitlines()[-1])["gate"] == "pass"
    assert "raw step times" in out


def test_a_slowdown_fails_with_its_row_named(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, scale=1.3)
    assert run_gate(base_run, current, capsys=capsys)[0] == 0  # within the CPU default x1.5
    code, out, _ = run_gate(base_run, current, *QUIET, capsys=capsys)
    assert code == 1
    assert out.count("SLOWER") == 3 and "FAIL: 3 rows compared, 3 regressions" in out
    assert "entirely above the allowed x1.10" in out


def test_the_allowance_and_confidence_are_options(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, scale=1.3)
    assert run_gate(base_run, current, "--max-slowdown", "0.5", capsys=capsys)[0] == 0
    code, out, _ = run_gate(base_run, current, "--max-slowdown", "0.2", capsys=capsys)
    assert code == 1 and "allowed x1.20" in out
    # noisy windows and few of them: the interval is too wide to call a 30% slowdown
    noisy_base = make_run(tmp_path / "nb", seed=3, windows=4, spread=0.4)
    noisy = make_run(tmp_path / "nc", seed=4, windows=4, spread=0.4, scale=1.3)
    assert run_gate(noisy_base, noisy, capsys=capsys)[0] == 0


def test_ab_gate_falls_back_to_the_baseline_when_the_base_cannot_run(base_run, tmp_path, capsys):
    slower = make_run(tmp_path / "cur", seed=2, scale=1.3)
    code, out, _ = run_gate(base_run, slower, *QUIET, "--ab", "no-such-revision", capsys=capsys)
    assert code == 1 and "cannot be checked out here" in out and "SLOWER" in out
    root = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    if root:  # a clone with its history: the first commit has no serving worker
        code, out, _ = run_gate(base_run, slower, *QUIET, "--ab", root[0], capsys=capsys)
        assert code == 1 and "predates the serving worker" in out
    code = gate_main("--ab", "no-such-revision")
    assert code == 2 and "needs --baseline and --current" in capsys.readouterr().err


def test_ab_gate_judges_only_accuracy_and_status_against_the_baseline(base_run, tmp_path, capsys):
    import argparse

    from bench.gate.command import add_parser, judge_run

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    twice = make_run(tmp_path / "slow", seed=2, scale=2.0)
    args = parser.parse_args(["gate", "--baseline", str(base_run), "--current", str(twice), *QUIET])
    assert judge_run(args, step_time=False) == 0  # step time is the A/B's to judge
    assert judge_run(args, step_time=True) == 1
    worse = make_run(tmp_path / "worse", seed=2, accuracy_change=-0.05)
    args = parser.parse_args(["gate", "--baseline", str(base_run), "--current", str(worse)])
    assert judge_run(args, step_time=False) == 1
    assert "accuracy and status against the baseline" in capsys.readouterr().out


def test_too_few_windows_is_reported_not_failed(tmp_path, capsys):
    base = make_run(tmp_path / "b", windows=3)
    current = make_run(tmp_path / "c", windows=3, scale=2.0)
    code, out, _ = run_gate(base, current, capsys=capsys)
    assert code == 0 and out.count("too few windows") >= 3


def test_an_accuracy_drop_fails(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, accuracy_change=-0.02)
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 1 and out.count("DROP") == 3
    assert "test accuracy 0.9300 < baseline 0.9500 - tolerance 0.01" in out
    small = make_run(tmp_path / "small", seed=2, accuracy_change=-0.005)
    assert run_gate(base_run, small, capsys=capsys)[0] == 0
    code, out, _ = run_gate(base_run, current, "--accuracy-tolerance", "0.05", capsys=capsys)
    assert code == 1 and "1 regressions" in out  # sst2 0.79: within 0.05, but below its target
    assert "test accuracy 0.7900 is below the task's target 0.8" in out


def test_the_target_counts_only_where_the_baseline_reached_it(tmp_path, capsys):
    reached = (("mnist_cnn", "torch", 4.0, 0.985),)
    base = make_run(tmp_path / "b", reached)
    below = make_run(tmp_path / "c", reached, accuracy_change=-0.008)  # within tolerance
    code, out, _ = run_gate(base, below, capsys=capsys)
    assert code == 1 and "BELOW TARGET" in out and "below the task's target 0.98" in out
    # the quick suite's short schedule stays below the target: judged against the baseline
    short = (("mnist_cnn", "torch", 4.0, 0.95),)
    base = make_run(tmp_path / "b2", short)
    assert run_gate(base, make_run(tmp_path / "c2", short), capsys=capsys)[0] == 0


def test_synthetic_rows_have_no_accuracy_verdict(tmp_path, capsys):
    cells = (("mnist_cnn", "torch", 4.0, None),)
    code, out, _ = run_gate(
        make_run(tmp_path / "b", cells), make_run(tmp_path / "c", cells), capsys=capsys
    )
    assert code == 0 and "DROP" not in out


def test_a_row_failing_now_is_a_regression(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, status={"jax": "failed"})
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 1 and "failed now, ok in the baseline: RuntimeError: failed here" in out


def test_skipped_on_both_sides_passes(tmp_path, capsys):
    base = make_run(tmp_path / "b", status={"jax": "skipped"})
    current = make_run(tmp_path / "c", seed=2, status={"jax": "skipped"})
    code, out, _ = run_gate(base, current, capsys=capsys)
    assert code == 0 and "skipped in both" in out


def test_rows_on_one_side_only_are_listed_and_exit_2(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", CELLS[:2] + (("imdb_lstm", "torch", 50.0, 0.86),))
    code, out, err = run_gate(base_run, current, capsys=capsys)
    assert code == 2
    assert "only in baseline" in out and "only in current" in out
    assert err.count("\n") == 1 and err.startswith("bench: error: ")
    assert (
        "1 baseline rows have no match in the current run (sst2_lstm/torch/eager/fp32/b64)" in err
    )
    assert "1 current rows are not in the baseline (imdb_lstm/torch/eager/fp32/b64)" in err
    code, out, _ = run_gate(base_run, current, "--allow-partial", capsys=capsys)
    assert code == 0 and "INCOMPLETE" in out


def test_rows_made_under_test_hooks_are_marked(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, hooks="BENCH_TEST_SLOWDOWN=0.15")
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert "made under test-only hooks (BENCH_TEST_SLOWDOWN=0.15)" in out
    assert "pass*" in out


# ---------------------------------------------------------------------------- machines


def test_another_cpu_is_compared_normalized(base_run, tmp_path, capsys):
    slower_machine = {"calib_matmul_ms": 0.75, "calib_dispatch_ms": 4.5}  # 1.5x slower
    current = make_run(
        tmp_path / "cur", seed=2, scale=1.5, device_name=OTHER_CPU, calibration=slower_machine
    )
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 0, out
    assert "different CPUs" in out and "normalized, calibration x1.500" in out
    assert json.loads(out.strip().splitlines()[-1])["step_time_comparison"] == "normalized"
    # a numpy calibration is a rough measure of two CPU models: only gross slowdowns fail
    assert "only a slowdown beyond x2.00 fails" in out
    regressed = make_run(
        tmp_path / "reg", seed=2, scale=1.5 * 1.7, device_name=OTHER_CPU,
        calibration=slower_machine,
    )  # fmt: skip
    assert run_gate(base_run, regressed, capsys=capsys)[0] == 0
    assert run_gate(base_run, regressed, "--other-model-slowdown", "0.3", capsys=capsys)[0] == 1
    regressed = make_run(
        tmp_path / "reg2", seed=2, scale=1.5 * 2.5, device_name=OTHER_CPU,
        calibration=slower_machine,
    )  # fmt: skip
    assert run_gate(base_run, regressed, capsys=capsys)[0] == 1


def test_one_cpu_model_is_compared_raw_whatever_its_calibration_says(base_run, tmp_path, capsys):
    # a calibration is a snapshot of the machine's state at a run's start; measured on the CI
    # machine class it does not predict the run's step times, so one model is compared raw
    busy = {"calib_matmul_ms": 0.8, "calib_dispatch_ms": 4.8}  # x1.6
    current = make_run(tmp_path / "cur", seed=2, scale=1.6, calibration=busy)
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 1 and f"same CPU ({CPU}): raw step times" in out
    code, out, _ = run_gate(base_run, current, "--normalize", "always", capsys=capsys)
    assert code == 0 and "step times normalized, calibration x1.600" in out


def test_only_windows_in_the_fast_state_are_compared(base_run, tmp_path, capsys):
    # unchanged code, but two thirds of the current run met the machine's slow state: its median
    # is 1.4x the baseline's, and comparing every window would call that a regression
    current = make_run(tmp_path / "cur", seed=2, slow_windows=20)
    code, out, _ = run_gate(base_run, current, *QUIET, capsys=capsys)
    assert code == 0, out
    assert table_column(out, "state") == ["fast"] * 3 and "30/30 10/30" in out
    assert "windows in the fast state compared" in out
    slower = make_run(tmp_path / "slower", seed=2, slow_windows=20, scale=1.2)
    code, out, _ = run_gate(base_run, slower, *QUIET, capsys=capsys)
    assert code == 1 and out.count("SLOWER") == 3 and "(fast windows)" in out


def test_unmatched_states_compare_every_window_against_the_wider_allowance(
    base_run, tmp_path, capsys
):
    slow_run = make_run(tmp_path / "cur", seed=2, slow_windows=28)  # 2 fast windows: too few
    code, out, _ = run_gate(base_run, slow_run, capsys=capsys)
    assert code == 0, out
    assert "fast state for 30/30 baseline and 2/30 current windows (6 each needed)" in out
    assert "only a slowdown beyond x1.50 fails" in out
    assert table_column(out, "state") == ["all"] * 3
    much_slower = make_run(tmp_path / "much", seed=2, slow_windows=28, scale=1.3)  # x1.82
    assert run_gate(base_run, much_slower, capsys=capsys)[0] == 1
    assert run_gate(base_run, much_slower, "--unmatched-slowdown", "1", capsys=capsys)[0] == 0
    # no probes (an older run): every window, the wider allowance
    old = make_run(tmp_path / "old", seed=2, probe=False, scale=1.3)
    code, out, _ = run_gate(base_run, old, capsys=capsys)
    assert code == 0 and "a side has no probe times" in out


def test_a_run_that_never_met_the_fast_state_does_not_call_its_slow_state_fast(
    base_run, tmp_path, capsys
):
    current = make_run(tmp_path / "cur", seed=2, slow_windows=30)  # every window slow
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 0 and "30/30 baseline and 0/30 current" in out


def test_another_cpu_without_calibration_gets_no_step_verdict(tmp_path, capsys):
    base = make_run(tmp_path / "b", calibration=None)
    current = make_run(tmp_path / "c", scale=3.0, device_name=OTHER_CPU, calibration=None)
    code, out, _ = run_gate(base, current, capsys=capsys)
    assert code == 0 and "no calibration to normalize by" in out and "not compared" in out


def test_different_gpus_are_not_compared_on_step_time(tmp_path, capsys):
    base = make_run(tmp_path / "b", device="cuda", device_name="NVIDIA A100-SXM4-80GB")
    current = make_run(
        tmp_path / "c", device="cuda", device_name="NVIDIA H100 80GB HBM3", scale=0.5,
        accuracy_change=-0.05,
    )  # fmt: skip
    code, out, _ = run_gate(base, current, capsys=capsys)
    assert code == 1 and out.count("DROP") == 3  # accuracy is still judged
    assert "different GPUs" in out and "SLOWER" not in out


# ---------------------------------------------------------------------------- sources


def test_baseline_file_round_trip_and_pooling(base_run, tmp_path, capsys):
    second = make_run(tmp_path / "base2", seed=5)
    out_file = tmp_path / "baselines" / "cpu.csv"
    rows = write_baseline([base_run, second], out_file)
    assert len(rows) == 6
    with open(out_file, newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [*COLUMNS, STEP_TIMES_COLUMN, CPU_TIMES_COLUMN, PROBE_COLUMN]
    side = load_side("baseline", [out_file])
    assert len(side.measurements) == 3
    assert all(len(m.step_ms) == 60 and len(m.rows) == 2 for m in side.measurements.values())
    code, out, _ = run_gate(out_file, make_run(tmp_path / "cur", seed=2), capsys=capsys)
    assert code == 0 and "60/60 30/30" in out


def test_bench_baseline_refuses_failed_and_hooked_rows(tmp_path, capsys):
    failed = make_run(tmp_path / "f", status={"jax": "failed"})
    with pytest.raises(GateDataError, match="is failed; a baseline is made from clean runs"):
        write_baseline([failed], tmp_path / "x.csv")
    hooked = make_run(tmp_path / "h", hooks="BENCH_TEST_CORRUPT_LABELS=0.4")
    with pytest.raises(GateDataError, match="ran under test-only hooks"):
        write_baseline([hooked], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_a_folder_of_runs_means_its_newest(base_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    older = make_run(runs / "20260101-000000", scale=2.0)
    newer = make_run(runs / "20260102-000000", seed=2)
    os.utime(older / "results.csv", (1, 1))
    code, out, err = run_gate(base_run, runs, capsys=capsys)
    assert code == 0 and f"current: {newer} (the newest of 2 run directories" in err


def bench_json(path: Path, scale: float = 1.0, data: bool = True, probe: bool = True) -> Path:
    rng = np.random.default_rng(int(scale * 100))
    benchmarks = []
    for task, backend, median_ms, _ in CELLS:
        rounds = list(median_ms * scale * 5 / 1e3 * rng.lognormal(0, 0.03, 15))
        stats = {"min": min(rounds), "max": max(rounds), "mean": sum(rounds) / 15, "rounds": 15}
        if data:
            stats["data"] = rounds
        benchmarks.append(
            {
                "name": f"test_train_steps[{task}]",
                "fullname": f"tests/benchmarks/test_step_time.py::test_train_steps[{task}]",
                "extra_info": {
                    "task": task,
                    "backend": backend,
                    "device": "cpu",
                    "device_name": CPU,
                    "precision": "fp32",
                    "mode": "eager",
                    "batch_size": 16,
                    "steps_per_round": 5,
                }  # fmt: skip
                | ({"probe_ms": list(0.4 * rng.lognormal(0, 0.03, 15))} if probe else {}),
                "stats": stats,
            }
        )
    document = {
        "machine_info": {"cpu": {"brand_raw": CPU}, "bench_calibration": CALIBRATION},
        "benchmarks": benchmarks,
        "version": "5.3.1",
    }
    path.write_text(json.dumps(document))
    return path


def test_pytest_benchmark_json_is_read(tmp_path, capsys):
    base, same = bench_json(tmp_path / "a.json"), bench_json(tmp_path / "b.json", 1.01)
    code, out, _ = run_gate(base, same, capsys=capsys)
    assert code == 0 and "15/15 15/15" in out and table_column(out, "state") == ["fast"] * 3
    code, out, _ = run_gate(base, bench_json(tmp_path / "c.json", 1.4), *QUIET, capsys=capsys)
    assert code == 1 and out.count("SLOWER") == 3
    # JSON from other benchmarks has no probes: every round, the wider allowance
    unprobed = bench_json(tmp_path / "d.json", 1.4, probe=False)
    code, out, _ = run_gate(base, unprobed, *QUIET, capsys=capsys)
    assert code == 0 and table_column(out, "state") == ["all"] * 3
    side = load_side("current", [base])
    (measurement,) = [m for m in side.measurements.values() if m.identity[1] == "jax"]
    assert 2.3 < np.median(measurement.step_ms) < 2.7  # round seconds / steps_per_round, in ms


def test_pytest_benchmark_json_without_data_is_an_error(tmp_path, capsys):
    base = bench_json(tmp_path / "a.json", data=False)
    code, _, err = run_gate(base, base, capsys=capsys)
    assert code == 2 and "--benchmark-save-data" in err


# ---------------------------------------------------------------------------- bad input


def cli_gate(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "gate", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def broken_baselines(base_run: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a broken baseline file, the message the gate must give for it)."""
    good = folder / "good.csv"
    write_baseline([base_run], good)
    lines = good.read_text().splitlines()
    cases = {}

    def case(name: str, text: str, message: str) -> None:
        (folder / f"{name}.csv").write_text(text)
        cases[name] = (folder / f"{name}.csv", message)

    case("missing-row", "\n".join(lines[:-1]) + "\n", "1 current rows are not in the baseline")
    extra = lines[-1].replace("sst2_lstm", "imdb_lstm")
    case("extra-row", "\n".join([*lines, extra]) + "\n", "1 baseline rows have no match")
    case("torn-line", "\n".join(lines[:-1] + [lines[-1][:40]]) + "\n", "a malformed CSV")
    case("extra-field", "\n".join(lines[:-1] + [lines[-1] + ",surplus"]) + "\n", "a malformed CSV")
    case("not-a-csv", "just some words\nand more\n", "has no schema_version column")
    case("empty", "", "is empty")
    case("binary", "", "not a text CSV file")
    (folder / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    case("bad-number", "\n".join([lines[0], lines[1].replace(",0.95,", ",zero,")]) + "\n",
         "final_test_accuracy is 'zero', not a number")  # fmt: skip
    other = [lines[0]] + ["7" + line[1:] for line in lines[1:]]
    case("other-schema", "\n".join(other) + "\n", "3 rows have schema_version 7 but this bench")
    return cases


@pytest.mark.parametrize(
    "name",
    ["missing-row", "extra-row", "torn-line", "extra-field", "not-a-csv", "empty", "binary", "bad-number",
     "other-schema"],
)  # fmt: skip
def test_broken_baselines_exit_2_with_one_clear_line(name, base_run, tmp_path):
    broken, message = broken_baselines(base_run, tmp_path)[name]
    result = cli_gate("--baseline", broken, "--current", base_run)
    assert result.returncode == 2, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("bench: error:")]
    assert len(error) == 1 and message in error[0], result.stderr


def test_an_extra_current_row_and_a_missing_file_exit_2(base_run, tmp_path):
    extra = make_run(tmp_path / "extra", CELLS + (("imdb_lstm", "jax", 40.0, 0.85),))
    result = cli_gate("--baseline", base_run, "--current", extra)
    assert result.returncode == 2 and "current rows are not in the baseline" in result.stderr
    result = cli_gate("--baseline", tmp_path / "nowhere.csv", "--current", base_run)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"bench: error: baseline: no such file or directory: {tmp_path / 'nowhere.csv'}"
    )


@pytest.mark.parametrize(
    "edit, message",  # a run directory's results.csv, read by the results layer
    [(lambda lines: [], "results.csv is empty"),
     (lambda lines: lines[:-1] + [lines[-1][:40]], "a malformed CSV"),
     (lambda lines: [lines[0], lines[1].replace(",0.95,", ",zero,")],
      "final_test_accuracy is 'zero', not a number"),
     (lambda lines: [lines[0]] + ["7" + line[1:] for line in lines[1:]],
      "3 rows have schema_version 7 but this bench")],
)  # fmt: skip
def test_broken_run_directories_exit_2_with_one_clear_line(edit, message, base_run, tmp_path):
    current = make_run(tmp_path / "cur", seed=2)
    lines = (current / "results.csv").read_text().splitlines()
    (current / "results.csv").write_text("".join(line + "\n" for line in edit(lines)))
    for source in (current, current / "results.csv"):
        with pytest.raises(GateDataError, match=message):
            load_side("current", [source])
    result = cli_gate("--baseline", base_run, "--current", current)
    error = [line for line in result.stderr.splitlines() if line.startswith("bench: error:")]
    assert result.returncode == 2 and len(error) == 1 and message in error[0], result.stderr


def test_a_retried_cell_counts_with_its_final_row(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2)
    lines = (current / "results.csv").read_text().splitlines()
    first = lines[1].replace(",ok,", ",failed,", 1)  # an earlier, failed attempt of the cell
    (current / "results.csv").write_text("\n".join([lines[0], first, *lines[1:]]) + "\n")
    side = load_side("current", [current])
    assert len(side.measurements) == 3 and {m.status for m in side.measurements.values()} == {"ok"}
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 0 and "PASS: 3 rows compared, 0 regressions" in out


def test_a_results_csv_alone_has_no_windows(base_run, tmp_path):
    lone = tmp_path / "lone.csv"
    lone.write_text((base_run / "results.csv").read_text())
    result = cli_gate("--baseline", lone, "--current", base_run)
    assert result.returncode == 2 and "has no per-window step times" in result.stderr


def test_bad_options_exit_2(base_run):
    result = cli_gate("--baseline", base_run, "--current", base_run, "--max-slowdown", "-1")
    assert result.returncode == 2


def test_markdown_summary_goes_to_github_step_summary(base_run, tmp_path, monkeypatch, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    current = make_run(tmp_path / "cur", seed=2, scale=1.3)
    code, _, _ = run_gate(
        base_run, current, *QUIET, "--summary", tmp_path / "own.md", capsys=capsys
    )
    text = summary.read_text()
    assert code == 1 and text.startswith("earlier step\n### bench gate: FAIL")
    assert "| mnist_cnn | torch | eager |" in text and "**FAIL**" in text
    assert (tmp_path / "own.md").read_text() == text[len("earlier step\n") :]


def test_schema_versions_2_and_3_add_their_columns_at_the_end():
    assert SCHEMA_VERSION == 3
    added = ["cpu_time_median_ms", "calib_matmul_ms", "calib_dispatch_ms", "test_hooks"]
    assert list(COLUMNS)[-6:-2] == added  # version 2
    assert list(COLUMNS)[-2:] == ["data_resident_mb", "nvml_source"]  # version 3


def test_resuming_a_run_of_another_schema_is_refused(tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "matrix.json").write_text(json.dumps([{"task": "mnist_cnn", "backend": "torch"}]))
    (run_dir / "results.csv").write_text(",".join(list(COLUMNS)[:-4]) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--resume", str(run_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "another schema version" in result.stderr
    assert read_rows(run_dir / "results.csv") == []


def test_the_run_table_flags_rows_made_under_test_hooks():
    from bench.results import markdown_table

    row = empty_row() | {"cell_id": "c", "task": "mnist_cnn", "status": "ok"}
    assert "TEST HOOKS" not in markdown_table([row])
    table = markdown_table([row | {"test_hooks": "BENCH_TEST_SLOWDOWN=0.15"}])
    assert "- `c`: TEST HOOKS BENCH_TEST_SLOWDOWN=0.15: not real" in table


def test_runs_with_other_thread_counts_get_no_step_verdict(tmp_path, capsys):
    base = make_run(tmp_path / "b")
    current = make_run(tmp_path / "c", scale=2.0)
    rows = read_rows(current / "results.csv")
    (current / "results.csv").unlink()
    for row in rows:
        append_row(current / "results.csv", row | {"threads": "1"})
    for row in read_rows(base / "results.csv"):
        assert row["threads"] == ""
    rows = read_rows(base / "results.csv")
    (base / "results.csv").unlink()
    for row in rows:
        append_row(base / "results.csv", row | {"threads": "2"})
    code, out, _ = run_gate(base, current, capsys=capsys)
    assert code == 0 and "the baseline ran with 2 threads, the current run with 1" in out


def test_the_quick_suite_fixes_threads_and_windows_and_options_override_it():
    from bench.cli import build_parser, expand_matrix

    args = build_parser().parse_args(["run", "--suite", "quick", "--backends", "torch"])
    configs = expand_matrix(args)
    assert [c.task for c in configs] == ["mnist_cnn", "sst2_lstm"]
    assert all(
        (c.threads, c.window_steps, c.epochs, c.train_limit) == (1, 5, 3, 6400) for c in configs
    )
    args = build_parser().parse_args(
        ["run", "--suite", "quick", "--backends", "torch", "--threads", "2", "--window-steps", "3"]
    )
    assert all((c.threads, c.window_steps) == (2, 3) for c in expand_matrix(args))
    args = build_parser().parse_args(["run", "--tasks", "mnist_cnn", "--backends", "torch"])
    (config,) = expand_matrix(args)
    assert (config.threads, config.window_steps, config.warmup_windows) == (None, 25, 2)


def test_cpu_rows_are_judged_on_cpu_time_so_other_tenants_do_not_fail_them(
    base_run, tmp_path, capsys
):
    crowded = make_run(tmp_path / "crowded", seed=2, wall_scale=1.5)  # same work, shared cores
    code, out, _ = run_gate(base_run, crowded, capsys=capsys)
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["metric"] == "cpu"
    assert " cpu " in out and "1.5" in out  # the wall ratio is shown, for information
    assert run_gate(base_run, crowded, *QUIET, "--metric", "wall", capsys=capsys)[0] == 1
    heavier = make_run(tmp_path / "heavier", seed=2, scale=1.3)  # more work: both times grow
    assert run_gate(base_run, heavier, *QUIET, capsys=capsys)[0] == 1


def test_without_cpu_times_the_wall_clock_is_judged(base_run, tmp_path, capsys):
    old = make_run(tmp_path / "old", seed=2, cpu=False)
    code, out, _ = run_gate(base_run, old, capsys=capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["metric"] == "wall"
    code, out, _ = run_gate(base_run, old, "--metric", "cpu", capsys=capsys)
    assert code == 0 and "a side has no CPU times per window" in out


def test_step_time_stats_reports_the_cpu_time_median():
    from bench.metrics import Window, step_time_stats

    windows = [Window(0, i, 10, 0.1, "steady", 1.0, 0.08) for i in range(5)]
    stats = step_time_stats(windows, 64)
    assert math.isclose(stats["cpu_time_median_ms"], 8.0)
    assert step_time_stats([Window(0, 0, 10, 0.1, "steady", 1.0)], 64)["cpu_time_median_ms"] is None


# ---------------------------------------------------------------------------- the suite verdict


def test_student_t_quantiles_match_the_tables():
    from bench.stats import student_t_quantile

    for probability, df, table in ((0.975, 1, 12.706), (0.975, 4, 2.776), (0.975, 9, 2.262),
                                   (0.95, 5, 2.015), (0.995, 20, 2.845), (0.975, 120, 1.980)):  # fmt: skip
        assert abs(student_t_quantile(probability, df) - table) < 2e-3, (probability, df)


def test_geometric_mean_interval_covers_a_known_factor():
    from bench.stats import geometric_mean_interval

    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        step = geometric_mean_interval(1.2 * rng.lognormal(0, 0.08, 10))
        covered += step.low < 1.2 < step.high
    assert 180 <= covered <= 199  # 95% nominal
    assert geometric_mean_interval([1.1, 1.2]).low is None  # 3 rows at least


SUITE_CELLS = tuple(
    (task, backend, median_ms, accuracy)
    for task, accuracy in (("mnist_cnn", 0.95), ("sst2_lstm", 0.8))
    for backend, median_ms in (("torch", 7.0), ("jax", 30.0), ("keras-jax", 26.0))
)


def drifting_run(path: Path, scale: float, seed: int) -> Path:
    """Six rows, each moved by its own drift (x0.88-x1.12, in both directions) times `scale`,
    every window in the slow state: no row is state-matched, each gets the x1.5 allowance."""
    path.mkdir(parents=True)
    drifts = np.random.default_rng(seed).uniform(0.88, 1.12, len(SUITE_CELLS))
    for index, (cell, drift) in enumerate(zip(SUITE_CELLS, drifts)):
        make_run(
            path / f"part{index}", (cell,), scale=scale * drift, seed=seed + index,
            slow_windows=30, slow_factor=1.0,
        )  # fmt: skip
    return path


def test_the_suite_catches_a_slowdown_of_every_row_that_no_row_can(tmp_path, capsys):
    base = make_run(tmp_path / "base", SUITE_CELLS, seed=1)
    for seed in range(3):  # unchanged code, rows drifting both ways: the suite passes
        current = drifting_run(tmp_path / f"same{seed}", 1.0, 10 * seed)
        parts = sorted(current.iterdir())
        code, out, _ = run_gate(base, *parts, *QUIET, capsys=capsys)
        assert code == 0, out
        (suite,) = json.loads(out.strip().splitlines()[-1])["suite"]
        assert suite["verdict"] == "ok" and suite["rows"] == 6
    slowed = drifting_run(tmp_path / "slow", 1.2, 7)
    code, out, _ = run_gate(base, *sorted(slowed.iterdir()), *QUIET, capsys=capsys)
    assert code == 1, out
    assert "SLOWER" not in "".join(table_column(out, "step"))  # no row alone calls it
    assert "suite step time slower" in out and ": SLOWER" in out
    (suite,) = json.loads(out.strip().splitlines()[-1])["suite"]
    assert suite["verdict"] == "SLOWER" and 1.1 < suite["ratio"] < 1.3
    code, out, _ = run_gate(base, *sorted(slowed.iterdir()), capsys=capsys)
    assert code == 0  # the CPU default, x1.2, is wider than this 20%


def test_the_suite_needs_five_rows(base_run, tmp_path, capsys):
    current = make_run(tmp_path / "cur", seed=2, scale=1.3, slow_windows=30, slow_factor=1.0)
    code, out, _ = run_gate(base_run, current, capsys=capsys)
    assert code == 0 and "too few rows (5 needed)" in out
