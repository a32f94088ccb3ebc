"""Rows that differ only in seed, summed up: the Student-t interval against a hand computation,
the reached count and AlgoPerf's median time to target, results.md, seeds.csv, the report, and
the gate's verdict on seed means; single-seed runs as they were. No training: rows are made up."""

from __future__ import annotations

import csv
import math

import pytest

from bench import report
from bench.gate.rows import RowResult, judge_accuracy
from bench.gate.sides import IDENTITY, Measurement
from bench.gate.tolerances import DEFAULT_TOLERANCES
from bench.results import (
    SEED_COLUMNS,
    aggregate_seeds,
    append_row,
    empty_row,
    markdown_table,
    read_rows,
    records,
)
from bench.runner import write_summary
from bench.stats import mean_interval, median_time_to_target

# Five seeds' final accuracies and times to target (None: never reached), worked by hand:
# mean 0.84; deviations -0.04 -0.02 0 0.02 0.04, squares sum to 0.004, s = sqrt(0.004 / 4) =
# 0.0316228, s / sqrt(5) = 0.0141421; t(0.975, 4 df) = 2.776445 (any t table), half width
# 2.776445 * 0.0141421 = 0.0392646: the interval [0.8007354, 0.8792646].
ACCURACIES = (0.80, 0.82, 0.84, 0.86, 0.88)
TIMES = (12.0, 10.0, None, 11.0, None)  # three reached: sorted 10, 11, 12, inf, inf -> 12
HALF_WIDTH = 2.776445 * math.sqrt(0.004 / 4) / math.sqrt(5)


def row(seed: int, backend: str = "torch", **values) -> dict:
    base = {"task": "sst2_lstm", "backend": backend, "device": "cpu", "device_name": "EPYC"}
    base |= {"threads": 1, "precision": "fp32", "mode": "eager", "batch_size": 64, "epochs": 3}
    base |= {"train_samples": 67349, "data": "real", "status": "ok", "seed": seed}
    base |= {"cell_id": f"sst2_lstm-{backend}-cpu-fp32-default-s{seed}", "target_accuracy": 0.8}
    return empty_row() | base | values


def five_seeds(backend: str = "torch") -> list[dict]:
    return [
        row(seed, backend, final_test_accuracy=accuracy, time_to_target_s=time, samples_per_s=500)
        for seed, (accuracy, time) in enumerate(zip(ACCURACIES, TIMES))
    ]


# ---------------------------------------------------------------------------- statistics


def test_the_interval_is_the_hand_computed_student_t_one():
    summary = mean_interval(ACCURACIES)
    assert summary.n == 5 and summary.mean == pytest.approx(0.84)
    assert summary.low == pytest.approx(0.84 - HALF_WIDTH, abs=1e-6)
    assert summary.high == pytest.approx(0.84 + HALF_WIDTH, abs=1e-6)
    assert summary.low == pytest.approx(0.8007354, abs=1e-6)
    assert summary.std == pytest.approx(0.0316228, abs=1e-6)
    assert (summary.minimum, summary.maximum) == (0.80, 0.88)


def test_one_value_has_no_interval_and_none_has_no_summary():
    one = mean_interval([0.9])
    assert (one.n, one.mean, one.low, one.high, one.std) == (1, 0.9, None, None, None)
    assert mean_interval([]) is None


def test_median_time_to_target_counts_a_miss_as_infinite():
    assert median_time_to_target(TIMES) == 12.0  # not 11 (the median of the three that reached)
    assert median_time_to_target([10.0, None, None, 11.0]) is None  # half reached: infinite
    assert median_time_to_target([10.0, None, 11.0]) == 11.0
    assert median_time_to_target([]) is None


# ---------------------------------------------------------------------------- aggregation


def test_rows_that_differ_only_in_seed_become_one_row():
    rows = [*five_seeds(), row(0, "jax", final_test_accuracy=0.83, time_to_target_s=9.0)]
    frame = aggregate_seeds(rows)
    assert list(frame.columns) == list(SEED_COLUMNS) and len(frame) == 2
    torch, jax = records(frame)
    assert (torch["backend"], torch["seeds"], torch["seed_list"], torch["runs"]) == (
        "torch", 5, "0 1 2 3 4", 5,
    )  # fmt: skip
    assert torch["accuracy_mean"] == pytest.approx(0.84)
    assert torch["accuracy_ci_low"] == pytest.approx(0.84 - HALF_WIDTH, abs=1e-6)
    assert torch["accuracy_ci_high"] == pytest.approx(0.84 + HALF_WIDTH, abs=1e-6)
    assert (torch["accuracy_min"], torch["accuracy_max"]) == (0.80, 0.88)
    assert torch["reached_target"] == 3 and torch["time_to_target_median_s"] == 12.0
    assert torch["samples_per_s_median"] == 500
    assert jax["seeds"] == 1 and jax["accuracy_mean"] == 0.83 and jax["accuracy_ci_low"] is None
    assert jax["reached_target"] == 1 and jax["time_to_target_median_s"] == 9.0


def test_a_failed_seed_counts_as_not_reached_and_has_no_accuracy():
    rows = five_seeds()
    rows[0] |= {"status": "failed", "final_test_accuracy": None, "time_to_target_s": None}
    (summary,) = records(aggregate_seeds(rows))
    assert (summary["runs"], summary["ok_runs"], summary["accuracy_n"]) == (5, 4, 4)
    assert summary["accuracy_mean"] == pytest.approx(0.85)
    assert summary["reached_target"] == 2 and summary["time_to_target_median_s"] is None


def test_other_settings_are_other_configurations():
    """Epochs, mode, threads (on the cpu) are not seeds: their rows are never averaged."""
    rows = [*five_seeds(), row(5, epochs=1, final_test_accuracy=0.5)]
    rows += [row(6, mode="compiled", final_test_accuracy=0.6), row(7, threads=2)]
    assert len(aggregate_seeds(rows)) == 4


def test_seeds_that_all_failed_reached_nothing():
    rows = [row(seed, status="failed") for seed in range(3)]
    (summary,) = records(aggregate_seeds(rows))
    assert (summary["ok_runs"], summary["accuracy_n"], summary["accuracy_mean"]) == (0, 0, None)
    assert summary["reached_target"] == 0 and summary["time_to_target_median_s"] is None


def test_synthetic_rows_have_no_accuracy_and_no_target_columns():
    rows = [row(seed, data="synthetic", samples_per_s=100.0 + seed) for seed in range(3)]
    (summary,) = records(aggregate_seeds(rows))
    assert summary["accuracy_n"] == 0 and summary["accuracy_mean"] is None
    assert summary["reached_target"] is None and summary["time_to_target_median_s"] is None
    assert summary["samples_per_s_median"] == 101.0


# ---------------------------------------------------------------------------- results.md, seeds.csv


def write_run(path, rows):
    path.mkdir()
    for values in rows:
        append_row(path / "results.csv", values)
    return path


def test_results_md_and_seeds_csv_sum_up_several_seeds(tmp_path):
    run_dir = write_run(tmp_path / "run", five_seeds())
    write_summary(run_dir)
    text = (run_dir / "results.md").read_text()
    assert "Over seeds" in text
    seeds_line = next(line for line in text.splitlines() if line.startswith("| torch | eager | 3"))
    low, high = 0.84 - HALF_WIDTH, 0.84 + HALF_WIDTH
    assert f"| 0.8400 | {low:.4f}–{high:.4f} | 0.8000 | 0.8800 | 3/5 | 12.0 |" in seeds_line
    (line,) = read_rows(run_dir / "seeds.csv")
    assert list(line) == list(SEED_COLUMNS)
    assert float(line["accuracy_ci_low"]) == pytest.approx(low, abs=1e-6)
    assert (line["seeds"], line["reached_target"], line["time_to_target_median_s"]) == (
        "5", "3", "12",
    )  # fmt: skip


def test_a_single_seed_run_writes_what_it_wrote_before(tmp_path):
    rows = [five_seeds()[0], row(0, "jax", final_test_accuracy=0.83)]
    run_dir = write_run(tmp_path / "run", rows)
    write_summary(run_dir)
    assert not (run_dir / "seeds.csv").exists()
    text = (run_dir / "results.md").read_text()
    assert "Over seeds" not in text
    assert text == markdown_table(rows)  # the per-row tables alone
    assert text.count("\n| torch |") + text.count("\n| sst2_lstm | torch |") == 1


# ---------------------------------------------------------------------------- the report


def test_the_report_sums_up_seeds_across_merged_runs(tmp_path):
    """Two run directories, seeds 0-2 and 3-4, merged: one configuration of five seeds."""
    rows = five_seeds()
    first = write_run(tmp_path / "a", rows[:3])
    second = write_run(tmp_path / "b", rows[3:])
    built = report.build_report([first, second], tmp_path / "report")
    (line,) = read_rows(built["seeds_csv"])
    assert (line["seeds"], line["runs"], line["reached_target"]) == ("5", "5", "3")
    assert float(line["accuracy_mean"]) == pytest.approx(0.84)
    assert float(line["accuracy_ci_high"]) == pytest.approx(0.84 + HALF_WIDTH, abs=1e-6)
    markdown = built["markdown"].read_text()
    assert "Over seeds" in markdown and "| 0.8400 |" in markdown and "3/5" in markdown
    assert 'id="seeds-' in built["html"].read_text()


def test_a_single_seed_report_has_no_seed_table(tmp_path):
    run_dir = write_run(tmp_path / "a", [five_seeds()[0]])
    built = report.build_report([run_dir], tmp_path / "report")
    assert "seeds_csv" not in built and not (tmp_path / "report" / "seeds.csv").exists()
    assert "Over seeds" not in built["markdown"].read_text()
    assert 'id="seeds-' not in built["html"].read_text()


# ---------------------------------------------------------------------------- the gate


def measurement(rows: list[dict]) -> Measurement:
    identity = tuple(str(rows[0][column]) for column in IDENTITY)
    return Measurement(identity, rows=rows)


def judged(base_rows: list[dict], current_rows: list[dict]) -> RowResult:
    base, current = measurement(base_rows), measurement(current_rows)
    result = RowResult(base.identity, base, current)
    judge_accuracy(result, base, current, DEFAULT_TOLERANCES["cpu"].accuracy_drop)
    return result


def shifted(rows: list[dict], change: float) -> list[dict]:
    return [r | {"final_test_accuracy": r["final_test_accuracy"] + change} for r in rows]


def test_the_gate_judges_seed_means_with_their_intervals():
    base = shifted(five_seeds(), 0.05)  # mean 0.89, above the 0.8 target
    # seeds below the baseline's mean by more than the tolerance, their mean within it: passes
    current = shifted(five_seeds(), 0.045)
    assert min(r["final_test_accuracy"] for r in current) < 0.89 - 0.01
    result = judged(base, current)
    assert result.verdict == "pass" and result.accuracy_verdict == "ok"
    (note,) = result.notes
    assert note.startswith("seed means: current 0.8850 (95% interval ")
    assert f"{0.885 - HALF_WIDTH:.4f}-{0.885 + HALF_WIDTH:.4f}" in note and "5 seeds" in note
    # every seed a little lower, the mean beyond the tolerance: fails, named as the seed mean
    result = judged(base, shifted(five_seeds(), 0.035))
    assert result.verdict == "FAIL" and result.accuracy_verdict == "DROP"
    assert "seed mean test accuracy 0.8750 < baseline 0.8900 - tolerance 0.01" in result.notes
    # the target rule on the means: the baseline's mean reached 0.8, the current one does not
    result = judged(shifted(five_seeds(), -0.035), shifted(five_seeds(), -0.045))
    assert result.accuracy_verdict == "BELOW TARGET"
    assert "seed mean test accuracy 0.7950 is below the task's target 0.8" in result.notes


def test_the_gate_on_single_seed_rows_is_unchanged():
    result = judged([row(0, final_test_accuracy=0.95)], [row(0, final_test_accuracy=0.93)])
    assert result.verdict == "FAIL" and result.accuracy_verdict == "DROP"
    assert result.notes == ["test accuracy 0.9300 < baseline 0.9500 - tolerance 0.01"]
    # several seeds on one side only: the mean of its seeds against the single run, no interval
    result = judged(five_seeds(), [row(0, final_test_accuracy=0.84)])
    assert result.verdict == "pass" and result.notes == []


def test_the_gate_table_says_over_how_many_seeds_the_accuracy_is(tmp_path, capsys):
    from bench.gate.output import table_cells

    result = judged(five_seeds(), [row(0, final_test_accuracy=0.84)])
    cells = dict(zip(("base acc", "cur acc"), table_cells(result)[14:16]))
    assert cells == {"base acc": "0.8400 (5 seeds)", "cur acc": "0.8400"}


def test_seeds_csv_is_plain_csv(tmp_path):
    run_dir = write_run(tmp_path / "run", five_seeds())
    write_summary(run_dir)
    with open(run_dir / "seeds.csv", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(SEED_COLUMNS) and len(lines) == 2 and len(lines[1]) == len(lines[0])


def test_schema_md_documents_every_seeds_column():
    from pathlib import Path

    schema = (Path(__file__).resolve().parent.parent / "results" / "SCHEMA.md").read_text()
    section = schema[schema.index("## Seeds") :]
    for name in SEED_COLUMNS:
        assert f"`{name}`" in section, f"results/SCHEMA.md's Seeds section lacks {name}"
