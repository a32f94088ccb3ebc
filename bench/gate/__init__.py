"""`bench gate`: fail CI when a run is slower or less accurate than a baseline, and only then.

    bench gate --baseline results/baselines/cpu-quick.csv --current results/20261124-193000
    bench gate --baseline base.json --current .benchmarks/pytest/*.json   (pytest-benchmark)
    make gate                     the newest run under results/ vs the committed CPU baseline

Rows are matched on their identity (task, backend, device, device name, precision, mode, batch
size; bench/gate/sources.py reads every kind of source). For each matched row:

  step time  the Hodges-Lehmann ratio current/baseline of the steady per-step window times, with
             its distribution-free confidence interval (bench.stats.ratio_interval). The row
             fails only when the whole interval lies above the allowed ratio 1 + max_slowdown:
             noise widens the interval instead of failing the build. On a CPU only the windows
             that ran in the machine's fast state are compared (a shared VM alternates between a
             fast and a slow state; the worker's probe around each window says which), so that
             the state a run happened to meet does not pass for a regression; where a side has
             too few of them, every window is, against a wider allowance (DEFAULT_TOLERANCES).
  suite      (every matched row of one machine pair, 5 at least) the geometric mean of the rows'
             step-time ratios, with a Student-t interval across the rows, fails when the whole
             interval lies above 1 + suite_slowdown: rows drift apart more than together, so a
             slowdown of every train step shows here before any single row can tell it from
             drift (measured: results/baselines/README.md).
  accuracy   fails when the final test accuracy is below the baseline's by more than the
             tolerance, or below the task's target where the baseline reached that target (the
             quick suite's short schedule does not, and is then judged against its baseline).
             Rows of several seeds (--seeds) on both sides: their seed means, each with its
             Student-t interval across its seeds in the notes (bench.results.seeds).
  status     fails when a row that was ok in the baseline is not ok now (failed, skipped, ...).

Machines: when baseline and current ran on different CPU models, current step times are divided
by the calibration's speed factor (bench/calibration.py, recorded in every row) before the
comparison; on one model they are compared raw (a calibration is a snapshot of the machine's
state at the start of a run, and measured, it does not predict a run's step times on one model:
the probe's state matching does that job). The output says which comparison it made and why.
GPUs are never normalized by a host calibration: rows on different GPU models get no step-time
verdict (accuracy and status are still judged).

Output: a table of every row with its verdict (rows found on one side only are listed too), a
markdown summary (--summary FILE, and appended to $GITHUB_STEP_SUMMARY when that is set), and one
JSON line. Exit code: 0 pass, 1 regression, 2 usage or data error (a missing, malformed or
other-schema source, or rows on one side only unless --allow-partial; 2 outranks 1).

The package, in the order a gate runs:

    sides.py       Measurement and Side: what one side holds for one row identity
    sources.py     reading a side: run directories (through bench.results), baseline CSVs,
                   pytest-benchmark JSON
    machines.py    matching rows, and how each pair of machines is compared
    tolerances.py  the allowances per device class
    rows.py        the verdicts of one row: status, step time, accuracy
    suite.py       the suite verdict, and `judge`: every verdict of a gate
    output.py      the table, the markdown summary, the JSON line
    command.py     `bench gate` on the command line
    baseline.py    `bench baseline`: writing a baseline file
"""

from bench.gate.baseline import write_baseline
from bench.gate.command import TOLERANCE_OPTIONS, add_parser, command_gate, main
from bench.gate.machines import MachineComparison, compare_machines, match
from bench.gate.rows import RowResult
from bench.gate.sides import IDENTITY, GateDataError, Measurement, Side, WindowTimes
from bench.gate.sources import (
    BASELINE_COLUMNS,
    CPU_TIMES_COLUMN,
    PROBE_COLUMN,
    STEP_TIMES_COLUMN,
    load_side,
    read_source,
)
from bench.gate.suite import GateResult, SuiteResult, judge
from bench.gate.tolerances import CONFIDENCE, DEFAULT_TOLERANCES, Tolerances

__all__ = [
    "BASELINE_COLUMNS",
    "CONFIDENCE",
    "CPU_TIMES_COLUMN",
    "DEFAULT_TOLERANCES",
    "IDENTITY",
    "PROBE_COLUMN",
    "STEP_TIMES_COLUMN",
    "TOLERANCE_OPTIONS",
    "GateDataError",
    "GateResult",
    "MachineComparison",
    "Measurement",
    "RowResult",
    "Side",
    "SuiteResult",
    "Tolerances",
    "WindowTimes",
    "add_parser",
    "command_gate",
    "compare_machines",
    "judge",
    "load_side",
    "main",
    "match",
    "read_source",
    "write_baseline",
]
