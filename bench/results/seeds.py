"""Rows that differ only in seed, aggregated: what `bench run --seeds 0,1,2,3,4` is for.

A seed changes the initial weights and the batch order, identically in every backend; one seed
cannot tell a regression from luck (single IMDB LSTM runs swing by points from one epoch to the
next), so rows of one configuration (SEED_KEY: everything a seed does not change) are summed up
over their seeds, one row each (SEED_COLUMNS, seeds.csv, the "over seeds" tables):

- accuracy (final_test_accuracy of the ok rows): the mean with its 95% Student-t interval
  across the seeds (bench.stats.mean_interval, scipy.stats.t), the standard deviation, min and
  max;
- time to target: how many seeds reached the target, and the median over every seed, a seed
  that never reached it (or did not finish) counting as infinitely slow: AlgoPerf's
  per-workload score (algoperf docs/DOCUMENTATION.md, "Scoring"), so the median is empty unless
  more than half reached the target;
- samples/s: the median over the ok rows.

Every row counts once (several rows of one seed, from runs merged by the report or pooled by a
baseline, are several samples). A configuration with one row is summed up too (n = 1, no
interval); results.md and the report show the tables only where some configuration has several
seeds, so a single-seed run's files are what they were. Imports pandas (and scipy when an
interval is computed): the worker never imports this module.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from bench.results.files import write_atomic
from bench.results.schema import format_value, number, text
from bench.results.store import records
from bench.results.tables import SEED_KEY, Column, Row, markdown, readable, seed_key
from bench.stats import mean_interval, median_time_to_target

# name -> meaning, in seeds.csv's column order (results/SCHEMA.md, "Seeds", lists the same).
SEED_COLUMNS: dict[str, str] = {
    **{name: "as in results.csv (the configuration)" for name in SEED_KEY},
    "seeds": "distinct seeds among the configuration's rows",
    "seed_list": "those seeds, space-separated, ascending",
    "runs": "rows summed up (any status)",
    "ok_runs": "of them, rows with status ok",
    "accuracy_n": "ok rows with a final test accuracy: the n of the interval",
    "accuracy_mean": "mean final test accuracy over those rows",
    "accuracy_ci_low": "95% Student-t interval of that mean, low end (n - 1 degrees of freedom; empty for n = 1)",
    "accuracy_ci_high": "the same interval's high end",
    "accuracy_std": "sample standard deviation of the final test accuracy (empty for n = 1)",
    "accuracy_min": "lowest final test accuracy",
    "accuracy_max": "highest final test accuracy",
    "target_accuracy": "the task's target test accuracy (empty without one, or on synthetic data)",
    "reached_target": "rows that reached the target (a time to target); empty without a target",
    "time_to_target_median_s": "median time to target over every row, one that never reached it counting as infinite: empty unless more than half reached it",
    "samples_per_s_median": "median samples/s over the ok rows",
}  # fmt: skip


def summarize(rows: Sequence[Row]) -> dict[str, object]:
    """One configuration's rows (they share seed_key) -> its SEED_COLUMNS."""
    first = rows[0]
    key = dict(zip(SEED_KEY, seed_key(first)))
    seeds = sorted({int(s) for s in (number(row.get("seed")) for row in rows) if s is not None})
    ok = [row for row in rows if text(row.get("status")) == "ok"]
    accuracies = [number(row.get("final_test_accuracy")) for row in ok]
    accuracy = mean_interval([value for value in accuracies if value is not None])
    target = next(
        (number(r.get("target_accuracy")) for r in rows if r.get("target_accuracy")), None
    )
    real = target is not None and key["data"] == "real"  # synthetic rows have no accuracy
    times = [number(row.get("time_to_target_s")) for row in rows]
    speeds = [value for value in (number(row.get("samples_per_s")) for row in ok) if value]
    return key | {
        "seeds": len(seeds),
        "seed_list": " ".join(map(str, seeds)),
        "runs": len(rows),
        "ok_runs": len(ok),
        "accuracy_n": accuracy.n if accuracy else 0,
        "accuracy_mean": accuracy.mean if accuracy else None,
        "accuracy_ci_low": accuracy.low if accuracy else None,
        "accuracy_ci_high": accuracy.high if accuracy else None,
        "accuracy_std": accuracy.std if accuracy else None,
        "accuracy_min": accuracy.minimum if accuracy else None,
        "accuracy_max": accuracy.maximum if accuracy else None,
        "target_accuracy": target if real else None,
        "reached_target": sum(t is not None for t in times) if real else None,
        "time_to_target_median_s": median_time_to_target(times) if real else None,
        "samples_per_s_median": float(pd.Series(speeds).median()) if speeds else None,
    }


def aggregate_seeds(rows: Iterable[Row] | pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (SEED_COLUMNS), in the rows' first-seen order. `rows`: dicts
    (typed or CSV text) or a results frame."""
    if isinstance(rows, pd.DataFrame):
        rows = records(rows)
    configurations: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        configurations.setdefault(seed_key(row), []).append(row)
    summaries = [summarize(same) for same in configurations.values()]
    return pd.DataFrame(summaries, columns=list(SEED_COLUMNS))


def interval_text(row: Row) -> str:
    """e.g. "0.8512–0.8712"; "" without an interval."""
    low, high = number(row.get("accuracy_ci_low")), number(row.get("accuracy_ci_high"))
    return "" if low is None or high is None else f"{low:.4f}–{high:.4f}"


def reached_text(row: Row) -> str:
    """e.g. "4/5": seeds (rows) that reached the target of all; "" without a target."""
    reached = number(row.get("reached_target"))
    return "" if reached is None else f"{reached:.0f}/{text(row.get('runs'))}"


def four_digits(value: float) -> str:
    return f"{value:.4f}"


SEED_TABLE_COLUMNS = (
    Column("backend", "backend", numeric=False),
    Column("mode", "mode", numeric=False),
    Column("epochs", "epochs", numeric=False),
    Column("seeds", "seed_list", numeric=False),
    Column("ok", "ok_runs", lambda v: f"{v:.0f}"),
    Column("mean acc", "accuracy_mean", four_digits),
    Column("95% CI", "accuracy_interval"),
    Column("min acc", "accuracy_min", four_digits),
    Column("max acc", "accuracy_max", four_digits),
    Column("reached", "reached"),
    Column("median to target s", "time_to_target_median_s", readable),
    Column("median samples/s", "samples_per_s_median", readable),
)


def seed_records(rows: Iterable[Row]) -> list[dict]:
    """aggregate_seeds as dicts, with the table's two text cells (interval, reached)."""
    summaries = records(aggregate_seeds(rows))
    for summary in summaries:
        summary.update(accuracy_interval=interval_text(summary), reached=reached_text(summary))
    return summaries


def seed_markdown(rows: Iterable[Row]) -> str:
    """The "over seeds" table of one like-for-like group's rows (results.md, report.md)."""
    return markdown(SEED_TABLE_COLUMNS, seed_records(rows), "-")


def write_seeds_csv(rows: Iterable[Row], path: Path) -> None:
    """seeds.csv: aggregate_seeds of the rows, as results.csv writes cells (empty for NA, 6
    significant digits), in one rename."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SEED_COLUMNS)
    for summary in records(aggregate_seeds(rows)):
        writer.writerow([format_value(summary[name]) for name in SEED_COLUMNS])
    write_atomic(Path(path), buffer.getvalue())
