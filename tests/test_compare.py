"""bench compare: arms, block orders, the statistics, and the serving worker it drives.

The statistics are checked on synthetic windows with known ratios; the serving worker and the
coordinator on the torch backend with a tiny synthetic MNIST (seconds). A speed is never
asserted: the end-to-end check injects a 2x slowdown into one arm (the test hook) and asserts
that it reached that arm alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.compare import analysis
from bench.compare.arms import (
    ROOT,
    Arm,
    Checkout,
    arm_names,
    checkout,
    compile_bytecode,
    dependency_hash,
    parse_arm,
)
from bench.compare.schedule import Plan, RowRecord, block_order, cpu_sets, window_steps_for
from bench.compare.session import ArmFailed, ArmProcess, config_fields
from bench.config import RunConfig, UsageError
from bench.hooks import SLOWDOWN_BACKEND_VARIABLE, SLOWDOWN_VARIABLE


def test_parse_arm_keys_and_errors():
    arm = parse_arm("rev=HEAD~1,backend=jax,threads=2,slowdown=0.05")
    assert arm.rev == "HEAD~1"
    assert arm.settings == {"backend": "jax", "threads": 2}
    assert arm.env == {SLOWDOWN_VARIABLE: "0.05"}
    assert parse_arm(".") == Arm(spec="")
    arm = parse_arm("slowdown=0.05,slowdown_backend=torch")
    assert arm.env == {SLOWDOWN_VARIABLE: "0.05", SLOWDOWN_BACKEND_VARIABLE: "torch"}
    for bad in ("colour=red", "threads=two", "backend", "slowdown=-1"):
        with pytest.raises(UsageError):
            parse_arm(bad)


def test_arm_names_say_what_differs():
    assert arm_names([parse_arm("backend=torch"), parse_arm("backend=jax")]) == ["torch", "jax"]
    assert arm_names([parse_arm("rev=abc"), parse_arm(".")]) == ["abc", "this checkout"]
    assert arm_names([parse_arm("."), parse_arm(".")]) == ["this checkout #1", "this checkout #2"]
    names = arm_names([parse_arm("."), parse_arm("slowdown=0.1")])
    assert names == ["no slowdown", "slowdown 0.1"]
    names = arm_names([parse_arm("."), parse_arm("slowdown=0.1,slowdown_backend=jax")])
    assert names == ["no slowdown on every backend", "slowdown 0.1 on jax"]


def test_blocks_are_balanced_and_both_orders_occur():
    rng = np.random.default_rng(0)
    orders = [tuple(block_order(rng, 2)) for _ in range(200)]
    assert set(orders) == {(0, 1, 1, 0), (1, 0, 0, 1)}
    assert 60 < orders.count((0, 1, 1, 0)) < 140
    three = block_order(rng, 3)
    assert sorted(three[:3]) == [0, 1, 2] and three[3:] == three[:3][::-1]


def test_window_length_is_a_common_multiple_within_an_epoch():
    ready = [
        {"chunk_steps": 25, "steps_per_epoch": 937},
        {"chunk_steps": 10, "steps_per_epoch": 500},
    ]
    steps = window_steps_for(ready, [0.004, 0.006], 0.5)  # ~100 steps at 5 ms
    assert steps % 50 == 0 and steps == 100
    assert window_steps_for(ready, [1e-5, 1e-5], 0.5) == 500  # capped at the shorter epoch
    assert window_steps_for(ready, [10.0, 10.0], 0.5) == 50  # at least one common chunk


def test_cores_same_for_interleaved_one_each_for_duet():
    assert cpu_sets(Plan(), 2, [0, 1]) == [[1], [1]]
    assert cpu_sets(Plan(schedule="duet"), 2, [0, 1]) == [[0], [1]]
    assert cpu_sets(Plan(cpus=[0, 1]), 2, [0, 1, 2]) == [[0, 1], [0, 1]]


def synthetic_record(ratios_per_pair: list[float], noise: float, seed: int = 0, blocks: int = 8):
    """Interleaved ABBA/BAAB windows: arm 1 takes `ratio` times arm 0's time in each pair."""
    rng = np.random.default_rng(seed)
    record = RowRecord("row", RunConfig(task="mnist_cnn", backend="torch"))
    for pair, ratio in enumerate(ratios_per_pair):
        for block in range(blocks):
            drift = math.exp(rng.normal(0, 0.1))  # the machine's phase: both arms alike
            for position, arm in enumerate(block_order(rng, 2)):
                seconds = drift * (ratio if arm else 1.0) * math.exp(rng.normal(0, noise))
                record.windows.append(
                    {"pair": pair, "block": block, "position": position, "arm": arm,
                     "phase": "steady", "steps": 50, "wall_s": seconds, "cpu_s": seconds}
                )  # fmt: skip
    return record


def test_paired_ratio_cancels_drift_shared_by_both_arms():
    record = synthetic_record([1.10, 1.11, 1.09, 1.10, 1.10], noise=0.01)
    (comparison,) = analysis.compare_row(record, 2, "wall")
    assert comparison.ratio == pytest.approx(1.10, rel=0.01)
    assert comparison.low < 1.10 < comparison.high
    assert len(comparison.pair_logs) == 5 and comparison.samples == 5 * 8 * 2
    analysis.judge([comparison], alpha=0.05, floor=0.02)
    assert comparison.verdict == "slower"


def test_a_significant_but_tiny_difference_is_not_a_regression():
    record = synthetic_record([1.005] * 6, noise=0.001)
    (comparison,) = analysis.compare_row(record, 2, "wall")
    analysis.judge([comparison], alpha=0.05, floor=0.02)
    assert comparison.p_holm < 0.05 and comparison.verdict == "same"


def test_the_process_pair_is_the_unit_so_a_pair_offset_is_not_a_regression():
    # two pairs with offsets of -3% and +4%: the windows within each agree closely, so a test
    # over pooled windows would call it; across two pairs it is noise
    record = synthetic_record([0.97, 1.04], noise=0.002)
    (comparison,) = analysis.compare_row(record, 2, "wall")
    analysis.judge([comparison], alpha=0.05, floor=0.02)
    assert comparison.verdict == "same"


def test_faster_rows_are_reported_and_single_pairs_have_no_test():
    faster = analysis.compare_row(synthetic_record([0.8] * 4, noise=0.01), 2, "wall")
    one = analysis.compare_row(synthetic_record([1.3], noise=0.01), 2, "wall")
    analysis.judge(faster + one, alpha=0.05, floor=0.02)
    assert faster[0].verdict == "faster"
    assert one[0].verdict == "too few pairs" and one[0].p_holm is None


def test_holm_adjustment_matches_the_step_down_definition():
    adjusted = analysis.holm([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4*0.01, max(.04, 3*.03), max(.09, 2*.04), max(.09, .2)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_suite_geometric_mean_with_a_bootstrap_over_pairs():
    rows = []
    for index, ratio in enumerate([1.04, 1.06, 1.05]):
        record = synthetic_record([ratio] * 4, noise=0.01, seed=index)
        record.row = f"row{index}"
        rows += analysis.compare_row(record, 2, "wall")
    suite = analysis.suite(rows, 1, suite_floor=0.01)
    assert suite.ratio == pytest.approx(1.05, rel=0.01)
    assert suite.low < suite.ratio < suite.high and suite.verdict == "slower"
    same = analysis.suite(
        analysis.compare_row(synthetic_record([1.0, 1.01, 0.99], 0.01), 2, "wall") * 2, 1, 0.01
    )
    assert same.verdict == "same"


def test_rounds_set_up_ahead_on_the_free_core_at_most_plan_ahead_early(monkeypatch, tmp_path):
    from bench.compare import schedule

    events = []  # ("launch", round) as workers start, ("measure", round) at each round's turn

    class FakeWorker:
        def __init__(self, arm, config, code, log, setup_cpus):
            self.round = sum(kind == "launch" for kind, _ in events) // 2
            assert setup_cpus == [0]  # the core the arms (on core 1) leave free
            events.append(("launch", self.round))

        def wait_ready(self):
            return {"chunk_steps": 1, "steps_per_epoch": 10}

        def pin(self, cpus):
            if ("measure", self.round) not in events:
                events.append(("measure", self.round))

        def window(self, steps):
            return {"steps": steps, "wall_s": 0.01, "cpu_s": 0.01}

        def stop(self):
            pass

    monkeypatch.setattr(schedule, "ArmProcess", FakeWorker)
    config = RunConfig(task="mnist_cnn", backend="torch")
    rows = [("a", config), ("b", config)]
    code = [checkout(None, tmp_path)] * 2
    plan = Plan(pairs=3, round_s=0.0, min_blocks=1, ahead=2)
    records = schedule.measure_rows(
        rows, [parse_arm("."), parse_arm(".")], code, plan, tmp_path, [0, 1]
    )
    assert not any(record.error for record in records)
    assert len(records[0].windows) == 3 * (2 + 4)  # per round: two warm-ups, one ABBA block
    for turn in range(6):  # rounds 0..5 (two rows of three): when round k measures, k+1 and
        # k+2 are setting up, and no later one
        launched = {r for kind, r in events[: events.index(("measure", turn))] if kind == "launch"}
        assert launched == set(range(min(turn + 3, 6)))
    assert max(r for _, r in events) == 5


def test_a_worker_of_another_revision_is_told_only_what_was_set():
    config = RunConfig(task="mnist_cnn", backend="torch", threads=1, data="synthetic")
    assert config_fields(config) == {
        "task": "mnist_cnn", "backend": "torch", "threads": 1, "data": "synthetic"
    }  # fmt: skip


def test_a_revision_needs_its_own_venv_when_its_frameworks_differ_not_its_test_tools(tmp_path):
    def pyproject(name: str, torch: str, dev: str) -> Path:
        path = tmp_path / name
        path.write_text(
            f'[project]\nname = "x"\ndependencies = ["numpy"]\n[project.optional-dependencies]\n'
            f'torch = ["torch=={torch}"]\ndev = ["{dev}"]\n'
        )
        return path

    base = dependency_hash(pyproject("a.toml", "2.13.0", "pytest"))
    assert dependency_hash(pyproject("b.toml", "2.13.0", "pytest-xdist")) == base
    assert dependency_hash(pyproject("c.toml", "2.12.0", "pytest")) != base


def test_every_arms_workers_load_the_same_bytecode_wherever_the_checkout_lies(
    tmp_path, monkeypatch
):
    """compile_bytecode writes each worker package's bytecode ahead (also with
    PYTHONDONTWRITEBYTECODE set), so no worker compiles a module at import (the compiler's
    allocations follow the source text, comments included), and the same code gives the same
    bytecode files in checkouts at paths of any length (a file's size, which would follow its
    path, moves the heap's layout): docs/MEASUREMENTS.md, "The keras-torch false alarm"."""
    import importlib.util

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bytecode = {}
    for name in ("a", "a-much-longer-checkout-path"):
        root = tmp_path / name
        for package in ("bench", "backends"):
            (root / package).mkdir(parents=True)
            (root / package / "module.py").write_text("# a comment\nVALUE = 1\n")
        (root / "other.py").write_text("VALUE = 2\n")  # not a worker package: left alone
        compile_bytecode(Checkout(root, sys.executable, None))
        for package in ("bench", "backends"):
            source = root / package / "module.py"
            bytecode[name, package] = Path(importlib.util.cache_from_source(str(source)))
        assert not (root / "__pycache__").exists()
    for package in ("bench", "backends"):
        short, long = (
            bytecode[name, package].read_bytes() for name in ("a", "a-much-longer-checkout-path")
        )
        assert short[16:] == long[16:]  # after the header (its source mtime and size)
    loaded = subprocess.run(
        [sys.executable, "-c", "import bench.module as m; print(m.__file__, m.__cached__)"],
        cwd=tmp_path / "a",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert loaded == [str(tmp_path / "a" / "bench" / "module.py"), str(bytecode["a", "bench"])]


def test_a_revision_without_the_serving_worker_gets_no_venv(tmp_path):
    """Such a base is never run (the gate falls back to the baseline), so it must not cost a
    venv: the first commit's dependency list differs from today's, and building one is minutes
    of pip."""
    root = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    if not root:
        pytest.skip("a clone without history")
    code = checkout(root[0], tmp_path)
    if code.serves:
        pytest.skip("a shallow clone: its first commit already has the serving worker")
    assert code.python == sys.executable and code.commit == root[0]
    assert not (tmp_path / "compare" / "venv").exists()
    subprocess.run(["git", "worktree", "remove", "--force", str(code.path)], cwd=ROOT, check=False)


def test_this_checkout_runs_as_it_is():
    code = checkout(None, Path("/nonexistent"))
    assert code.path == ROOT and code.commit is None and code.serves


def write_comparison(folder: Path, rows: list[tuple[str, float]]) -> Path:
    import pandas as pd

    folder.mkdir(parents=True)
    records = [
        {"row": row, "arm": "jax", "reference": "torch", "ratio": ratio, "low": ratio * 0.97,
         "high": ratio * 1.03, "p_holm": 0.001, "pairs": 5, "verdict": "slower"}
        for row, ratio in rows
    ]  # fmt: skip
    records.append({"row": "suite", "arm": "jax", "reference": "torch", "ratio": 2.0})
    pd.DataFrame(records).to_csv(folder / "compare.csv", index=False)
    return folder


def test_report_shows_interleaved_ratios_beside_the_tables(tmp_path):
    import importlib.util

    from bench import report

    fixture = ROOT / "tests" / "fixtures" / "report_runs" / "make_fixture.py"
    spec = importlib.util.spec_from_file_location("make_fixture", fixture)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_dirs = module.build(tmp_path / "runs")
    write_comparison(run_dirs[0] / "compare", [("mnist_cnn", 4.07)])  # inside a run
    alone = write_comparison(tmp_path / "cmp", [("cifar10_cnn jax default", 1.5)])
    written = report.build_report(run_dirs, tmp_path / "report", [alone])
    markdown = written["markdown"].read_text()
    mnist = markdown.index("## mnist_cnn")
    ratio = markdown.index("| jax / torch | x4.070 [3.948, 4.192]")
    assert mnist < ratio < markdown.index("\n## ", mnist + 3)  # in the task's own section
    assert "x1.500 [1.455, 1.545]" in markdown and "suite (geometric mean)" in markdown
    assert "x4.070 [3.948, 4.192]" in written["html"].read_text()
    only = report.build_report([], tmp_path / "report2", [alone])  # a comparison alone
    assert "x1.500" in only["markdown"].read_text()


# --- the serving worker, on torch ------------------------------------------------------------

pytest.importorskip("torch")
TINY = RunConfig(
    task="mnist_cnn", backend="torch", data="synthetic", train_limit=640, threads=1,
    window_steps=5, warmup_windows=1,
)  # fmt: skip


def test_serving_worker_steps_on_command_across_epochs(tmp_path):
    process = ArmProcess(Arm(spec=""), TINY, checkout(None, tmp_path), tmp_path / "log")
    try:
        ready = process.wait_ready()
        assert ready["chunk_steps"] == 5 and ready["steps_per_epoch"] == 10
        assert ready["mode"] == "eager" and ready["compile_s"] > 0
        assert process.pin([0])["threads"] >= 1
        for _ in range(4):  # 10 steps each: every window after the first begins an epoch
            window = process.window(10)
            assert window["steps"] == 10 and window["wall_s"] > 0 and window["cpu_s"] > 0
            assert math.isfinite(window["loss"])
        with pytest.raises(ArmFailed, match="multiple of 5"):
            process.window(7)
    finally:
        process.stop()
    assert process.process.returncode is not None


def test_a_worker_that_dies_is_reported_not_waited_for(tmp_path):
    process = ArmProcess(Arm(spec=""), TINY, checkout(None, tmp_path), tmp_path / "log")
    try:
        process.wait_ready()
        process.process.kill()
        with pytest.raises(ArmFailed, match="exited"):
            process.window(5)
    finally:
        process.stop()


@pytest.mark.slow
def test_compare_end_to_end_injected_slowdown_reaches_its_arm_only(tmp_path):
    out = tmp_path / "cmp"
    command = [
        sys.executable, "-m", "bench", "compare", "--tasks", "mnist_cnn", "--backends", "torch",
        "--arms", ".", "slowdown=1.0", "--pairs", "2", "--round-seconds", "0.5",
        "--window-seconds", "0.1", "--train-limit", "1280", "--window-steps", "5",
        "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    (row,) = summary["rows"]
    assert row["arm"] == "slowdown 1.0" and row["pairs"] == 2
    assert 1.5 < row["ratio"] < 3.0  # busy-work doubling each window of that arm only
    for name in ("windows.csv", "compare.csv", "arms.csv", "compare.md", "compare.json"):
        assert (out / name).is_file()
    assert "slowdown 1.0/no slowdown step time x" in result.stdout
