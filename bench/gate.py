"""`bench gate`: fail CI when a run is slower or less accurate than a baseline, and only then.

    bench gate --baseline results/baselines/cpu-quick.csv --current results/20261124-193000
    bench gate --baseline base.json --current .benchmarks/pytest/*.json   (pytest-benchmark)
    make gate                     the newest run under results/ vs the committed CPU baseline

Rows are matched on their identity (task, backend, device, device name, precision, mode, batch
size; bench/baseline.py reads every kind of source). For each matched row:

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from dataclasses import dataclass, field

from bench.baseline import IDENTITY, GateDataError, Measurement, Side, load_side
from bench.calibration import speed_factor
from bench.stats import RatioInterval, geometric_mean_interval, ratio_interval


@dataclass(frozen=True)
class Tolerances:
    max_slowdown: float  # allowed step-time ratio is 1 + this (machine states matched)
    accuracy_drop: float  # absolute test accuracy below the baseline's that still passes
    unmatched_slowdown: float  # the allowance where the machine's states could not be matched
    suite_slowdown: float  # allowed growth of the geometric mean step-time ratio of all rows
    other_model_slowdown: float  # the allowance for calibration-normalized times (other models)


# Defaults per device class, from the measurements in results/baselines/README.md (2-core shared
# CI VM, quick suite, 10 fresh runs of unchanged code and 3 with an injected 15% slowdown). A
# shared VM runs in fast and slow phases (the same numpy loop 1.8x slower for seconds to minutes,
# with nothing else on the VM), and whole runs can be slower still: unchanged rows came out up to
# x1.48 of the baseline (interval lower bound 1.42) even in windows the probe called fast, and
# one run's suite mean at x1.22 (lower bound 1.13), above two of the three 15%-slower runs (lower
# bounds 1.12, 1.14, 1.15). So on a CPU the defaults are set not to cry wolf: x1.5 per row, x1.2
# for the suite; they catch gross regressions only, and a 15% one is not told apart from this
# machine class's drift (measured). On a quiet, dedicated machine pass tighter ones (e.g.
# --max-slowdown 0.1 --suite-slowdown 0.08). Fast-state matching stays: where each side has
# enough such windows it narrows the interval (state-matched rows of unchanged code mostly agreed
# to x0.89-x1.08). cuda: a dedicated device does not have those phases: 5% (not yet measured on
# a GPU). Across CPU models (calibration-normalized times): x2, gross regressions only, because a
# numpy calibration cannot see how differently each framework uses two models (XLA's code for
# AVX-512 or AVX2, oneDNN's kernels). Accuracy: the quick suite on a CPU is deterministic per
# backend to 1e-4; 0.01 leaves room for nondeterministic GPU kernels.
DEFAULT_TOLERANCES = {
    "cpu": Tolerances(
        0.5, 0.01, unmatched_slowdown=0.5, suite_slowdown=0.2, other_model_slowdown=1.0
    ),
    "cuda": Tolerances(
        0.05, 0.01, unmatched_slowdown=0.05, suite_slowdown=0.05, other_model_slowdown=1.0
    ),
}
# The suite verdict: the rows' step-time ratios drift apart more than together (measured: in one
# run of unchanged code, rows at x0.79 and x1.08), so their geometric mean, with a Student-t
# interval across the rows, moves far less than any row: it catches a slowdown of every train
# step that single rows cannot tell from drift. It needs SUITE_MIN_ROWS rows with a ratio.
SUITE_MIN_ROWS = 5
FAST_STATE = 1.25  # a window ran in the fast state when its probe took at most this x the fastest
MIN_STATE_WINDOWS = 6  # fast-state windows each side needs for a state-matched comparison
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MachineComparison:
    """How step times of one (baseline machine, current machine) pair are compared."""

    method: str  # "raw", "normalized" or "none"
    factor: float  # current times are divided by this (1 for raw)
    reason: str
    # probe ms at or under which a window ran in the machine's fast state, per side (baseline,
    # current); None where a side has no probes
    fast_limits: tuple[float, float] | None = None


@dataclass
class RowResult:
    identity: tuple[str, ...]
    baseline: Measurement | None
    current: Measurement | None
    verdict: str = "pass"  # pass | FAIL | only in baseline | only in current
    step: RatioInterval | None = None
    allowed_ratio: float | None = None
    step_verdict: str = "-"
    accuracy_verdict: str = "-"
    comparison: MachineComparison | None = None
    metric: str = "wall"  # the step time judged: "cpu" or "wall" per step ("none": not judged)
    state: str = "-"  # "fast": fast-state windows compared; "all": every window
    used: tuple[list[float], list[float]] = ([], [])  # the times compared, baseline and current
    wall_ratio: float | None = None  # the wall-time ratio, shown when the metric is cpu
    notes: list[str] = field(default_factory=list)

    def times(self, measurement: Measurement) -> list[float]:
        return measurement.cpu_step_ms if self.metric == "cpu" else measurement.step_ms

    @property
    def label(self) -> str:
        return (self.baseline or self.current).label  # type: ignore[union-attr]

    def fail(self, note: str) -> None:
        self.verdict = "FAIL"
        self.notes.append(note)


@dataclass
class SuiteResult:
    """All compared rows of one machine pair at once: their geometric mean step-time ratio."""

    device: str
    machines: str
    step: RatioInterval
    allowed_ratio: float
    verdict: str  # ok | SLOWER | faster | too few rows

    @property
    def line(self) -> str:
        step = self.step
        interval = (
            f", {step.confidence:.0%} interval [{step.low:.3f}, {step.high:.3f}]"
            if step.low is not None
            else ""
        )
        return (
            f"suite step time ({self.device}, {self.machines}): {step.baseline_samples} rows, "
            f"geometric mean ratio x{step.ratio:.3f}{interval}, allowed x{self.allowed_ratio:.2f}:"
            f" {self.verdict}"
        )


@dataclass
class GateResult:
    rows: list[RowResult]
    comparisons: dict[tuple[str, str, str], MachineComparison]
    baseline: Side
    current: Side
    suites: list[SuiteResult] = field(default_factory=list)

    @property
    def regressions(self) -> list[RowResult]:
        return [r for r in self.rows if r.verdict == "FAIL"]

    @property
    def slower_suites(self) -> list[SuiteResult]:
        return [s for s in self.suites if s.verdict == "SLOWER"]

    @property
    def unmatched(self) -> list[RowResult]:
        return [r for r in self.rows if r.verdict.startswith("only")]

    def exit_code(self, allow_partial: bool) -> int:
        if self.unmatched and not allow_partial:
            return 2
        return 1 if self.regressions or self.slower_suites else 0


# ---------------------------------------------------------------------------- matching


def match(baseline: Side, current: Side) -> list[tuple[Measurement | None, Measurement | None]]:
    """Pairs on the full identity; then, for rows left over, on the identity without the device
    name when each side ran on one machine of that device class (the same suite on another CI
    machine). Baseline order first, then rows found only in the current run."""
    pairs: list[tuple[Measurement | None, Measurement | None]] = []
    left_current = dict(current.measurements)
    left_baseline = []
    for identity, measurement in baseline.measurements.items():
        if identity in left_current:
            pairs.append((measurement, left_current.pop(identity)))
        else:
            left_baseline.append(measurement)
    by_loose = {loose_identity(m): m for m in left_current.values()}
    for measurement in left_baseline:
        partner = by_loose.get(loose_identity(measurement))
        if partner is not None and one_machine(baseline, current, measurement.device):
            del left_current[partner.identity]
            pairs.append((measurement, partner))
        else:
            pairs.append((measurement, None))
    pairs.extend((None, m) for m in left_current.values())
    return pairs


def loose_identity(measurement: Measurement) -> tuple[str, ...]:
    return tuple(v for c, v in zip(IDENTITY, measurement.identity) if c != "device_name")


def machine_names(side: Side, device: str) -> set[str]:
    return {m.device_name for m in side.measurements.values() if m.device == device}


def one_machine(baseline: Side, current: Side, device: str) -> bool:
    return len(machine_names(baseline, device)) == 1 == len(machine_names(current, device))


# ---------------------------------------------------------------------------- machines


def on_machine(side: Side, device: str, device_name: str) -> list[Measurement]:
    return [
        m for m in side.measurements.values() if (m.device, m.device_name) == (device, device_name)
    ]


def side_calibration(side: Side, device: str, device_name: str) -> dict[str, float] | None:
    """Median calibration of a side's rows on one machine (over the whole matrix, so a moment of
    contention in one row's calibration does not count); None when no row has one (schema 1,
    or workers that died before calibrating)."""
    calibrations = [m.calibration for m in on_machine(side, device, device_name)]
    calibrations = [c for c in calibrations if c is not None]
    if not calibrations:
        return None
    return {key: statistics.median(c[key] for c in calibrations) for key in calibrations[0]}


def fastest_probe(side: Side, device: str, device_name: str) -> float | None:
    """The fastest probe of a side's windows on one machine (the whole matrix: minutes of it),
    None when a row there has no probes."""
    rows = [m for m in on_machine(side, device, device_name) if m.step_ms]
    if not rows or not all(m.has_probe_times for m in rows):
        return None
    return min(min(m.probe_ms) for m in rows)


def fast_limits(
    baseline: Side, current: Side, device: str, base_name: str, current_name: str
) -> tuple[float, float] | None:
    """The probe time at or under which a window ran in the fast state, per side. On one CPU
    model both sides share the fastest probe of either (a run that never saw the fast state
    must not call its slow state fast); on two models each side has its own."""
    if device != "cpu":
        return None
    base = fastest_probe(baseline, device, base_name)
    cur = fastest_probe(current, device, current_name)
    if base is None or cur is None:
        return None
    if base_name == current_name:
        base = cur = min(base, cur)
    return FAST_STATE * base, FAST_STATE * cur


def compare_machines(
    baseline: Side, current: Side, device: str, base_name: str, current_name: str, normalize: str
) -> MachineComparison:
    same = base_name == current_name
    limits = fast_limits(baseline, current, device, base_name, current_name)
    if device != "cpu":
        if not same:
            return MachineComparison(
                "none",
                1.0,
                f"different GPUs ({base_name} vs {current_name}): step times not compared",
            )
        return MachineComparison("raw", 1.0, f"same GPU ({base_name}): raw step times")
    machines = f"{base_name}" if same else f"{base_name} -> {current_name}"
    states = (
        "windows in the fast state compared (probe <= "
        f"{limits[0]:.3g}/{limits[1]:.3g} ms baseline/current)"
        if limits
        else "no probes to tell the machine's states apart"
    )
    if same and normalize != "always":
        return MachineComparison(
            "raw", 1.0, f"same CPU ({machines}): raw step times, {states}", limits
        )
    base_cal = side_calibration(baseline, device, base_name)
    current_cal = side_calibration(current, device, current_name)
    if normalize == "never":
        return MachineComparison(
            "raw", 1.0, f"{machines}: raw step times (--normalize never), {states}", limits
        )
    if base_cal is None or current_cal is None:
        return MachineComparison(
            "none", 1.0, f"different CPUs ({machines}) and no calibration to normalize by"
        )
    factor = speed_factor(current_cal, base_cal)
    change = (
        f"calibration x{factor:.3f} (matmul x"
        f"{current_cal['calib_matmul_ms'] / base_cal['calib_matmul_ms']:.3f}, dispatch x"
        f"{current_cal['calib_dispatch_ms'] / base_cal['calib_dispatch_ms']:.3f})"
    )
    which = "same CPU" if same else "different CPUs"
    return MachineComparison(
        "normalized",
        factor,
        f"{which} ({machines}): step times normalized, {change}, {states}",
        limits,
    )


# ---------------------------------------------------------------------------- verdicts


def judge(
    baseline: Side,
    current: Side,
    *,
    overrides: dict[str, float] | None = None,
    confidence: float = CONFIDENCE,
    normalize: str = "auto",
    metric: str = "auto",
) -> GateResult:
    """`overrides`: Tolerances fields that replace the device class's defaults."""

    def tolerances(device: str) -> Tolerances:
        defaults = DEFAULT_TOLERANCES.get(device, DEFAULT_TOLERANCES["cuda"])
        return dataclasses.replace(defaults, **(overrides or {}))

    comparisons: dict[tuple[str, str, str], MachineComparison] = {}
    results = []
    for base, cur in match(baseline, current):
        row = RowResult((base or cur).identity, base, cur)  # type: ignore[union-attr]
        results.append(row)
        if cur is None:
            row.verdict = "only in baseline"
            row.notes.append("no row in the current run")
            continue
        if base is None:
            row.verdict = "only in current"
            row.notes.append("no row in the baseline")
            continue
        key = (base.device, base.device_name, cur.device_name)
        if key not in comparisons:
            comparisons[key] = compare_machines(baseline, current, *key, normalize)
        row.comparison = comparisons[key]
        row.metric = pick_metric(base, cur, metric)
        judge_row(row, base, cur, tolerances(base.device), confidence)
        if cur.test_hooks or base.test_hooks:
            row.notes.append(
                f"made under test-only hooks ({cur.test_hooks or base.test_hooks}): not a real measurement"
            )
    suites = [
        judge_suite(key, comparisons[key], rows, tolerances(key[0]), confidence)
        for key in comparisons
        if (rows := [r for r in results if r.step and r.comparison is comparisons[key]])
    ]
    return GateResult(results, comparisons, baseline, current, suites)


def judge_suite(
    key: tuple[str, str, str],
    comparison: MachineComparison,
    rows: list[RowResult],
    tolerances: Tolerances,
    confidence: float,
) -> SuiteResult:
    device, base_name, current_name = key
    machines = base_name if base_name == current_name else f"{base_name} -> {current_name}"
    step = geometric_mean_interval([r.step.ratio for r in rows if r.step], confidence)
    slowdown = tolerances.suite_slowdown
    if comparison.method == "normalized":  # one rough calibration factor moves every row
        slowdown = max(slowdown, tolerances.other_model_slowdown)
    allowed = 1 + slowdown
    if len(rows) < SUITE_MIN_ROWS or step.low is None or step.high is None:
        verdict = f"too few rows ({SUITE_MIN_ROWS} needed)"
    elif step.low > allowed:
        verdict = "SLOWER"
    elif step.high < 1 / allowed:
        verdict = "faster"
    else:
        verdict = "ok"
    return SuiteResult(device, machines, step, allowed, verdict)


def judge_row(
    row: RowResult, base: Measurement, cur: Measurement, tolerances: Tolerances, confidence: float
) -> None:
    if base.status != "ok" or cur.status != "ok":
        judge_status(row, base, cur)
        return
    judge_step_time(row, base, cur, tolerances, confidence)
    judge_accuracy(row, base, cur, tolerances.accuracy_drop)


def judge_status(row: RowResult, base: Measurement, cur: Measurement) -> None:
    if base.status == cur.status:
        row.step_verdict = row.accuracy_verdict = f"{cur.status} in both"
    elif base.status == "ok" or cur.status not in ("ok", "skipped"):
        row.step_verdict = cur.status
        row.fail(f"{cur.status} now, {base.status} in the baseline: {cur.error or 'no message'}")
    else:
        row.step_verdict = f"{base.status} in baseline"
        row.notes.append(f"{base.status} in the baseline, {cur.status} now: nothing to compare")


def pick_metric(base: Measurement, cur: Measurement, option: str) -> str:
    """cpu: the windows' process CPU time per step; wall: their wall time. auto: cpu on a CPU
    device when both sides have it, because wall time on a shared machine also counts the time
    other processes held the cores; wall on GPUs, whose work the host's CPU time does not see,
    and wherever CPU times are missing (schema 1, pytest-benchmark)."""
    both = base.has_cpu_times and cur.has_cpu_times
    if option == "auto":
        return "cpu" if base.device == "cpu" and both else "wall"
    if option == "cpu" and not both:
        return "none"
    return option


def select_windows(
    row: RowResult, base: Measurement, cur: Measurement, tolerances: Tolerances
) -> tuple[list[float], list[float], float]:
    """The times to compare and the allowed ratio: on a CPU the fast-state windows of both sides
    where each has MIN_STATE_WINDOWS of them, else every window with the wider allowance; and
    the widest one where a rough calibration normalizes the times."""
    base_ms, current_ms = row.times(base), row.times(cur)
    assert row.comparison is not None
    limits = row.comparison.fast_limits
    allowed = 1 + tolerances.max_slowdown
    row.state = "-"
    if base.device == "cpu":
        wide = 1 + tolerances.unmatched_slowdown
        if limits and base.has_probe_times and cur.has_probe_times:
            base_fast = [t for t, p in zip(base_ms, base.probe_ms) if p <= limits[0]]
            current_fast = [t for t, p in zip(current_ms, cur.probe_ms) if p <= limits[1]]
            matched = min(len(base_fast), len(current_fast)) >= MIN_STATE_WINDOWS
            why = (
                f"the machine was in its fast state for {len(base_fast)}/{len(base_ms)} baseline "
                f"and {len(current_fast)}/{len(current_ms)} current windows "
                f"({MIN_STATE_WINDOWS} each needed)"
            )
        else:
            matched, why = False, "a side has no probe times (an older run or pytest-benchmark)"
        if matched:
            row.state, base_ms, current_ms = "fast", base_fast, current_fast
        else:
            row.state, allowed = "all", wide
            row.notes.append(
                f"{why}: every window compared, states unmatched, so only a slowdown beyond "
                f"x{wide:.2f} fails"
            )
    if row.comparison.method == "normalized":
        allowed = max(allowed, 1 + tolerances.other_model_slowdown)
        row.notes.append(
            "step times normalized by the calibration (another CPU model, or --normalize "
            "always): a rough measure, since models differ per framework in ways a numpy "
            f"calibration does not see, so only a slowdown beyond x{allowed:.2f} fails"
        )
    return base_ms, current_ms, allowed


def judge_step_time(
    row: RowResult, base: Measurement, cur: Measurement, tolerances: Tolerances, confidence: float
) -> None:
    assert row.comparison is not None
    if row.comparison.method == "none":
        row.step_verdict = "not compared"
        row.notes.append(row.comparison.reason)
        return
    threads = (base.value("threads"), cur.value("threads"))
    if all(threads) and threads[0] != threads[1]:
        row.step_verdict = "not compared"
        row.notes.append(
            f"the baseline ran with {threads[0]} threads, the current run with {threads[1]}: "
            "step times not comparable (rerun with the baseline's --threads)"
        )
        return
    if row.metric == "none":
        row.step_verdict = "not compared"
        row.notes.append("--metric cpu, but a side has no CPU times per window")
        return
    if not row.times(base) or not row.times(cur):
        row.step_verdict = "no windows"
        row.notes.append(
            f"no steady windows (baseline {len(row.times(base))}, current {len(row.times(cur))}): "
            "step time not compared; run more steps per epoch or smaller --window-steps"
        )
        return
    base_ms, current_ms, row.allowed_ratio = select_windows(row, base, cur, tolerances)
    factor = row.comparison.factor
    row.used = (base_ms, current_ms)
    row.step = ratio_interval(base_ms, [t / factor for t in current_ms], confidence)
    if row.metric == "cpu":  # for the reader: what the wall clock said (every window)
        row.wall_ratio = ratio_interval(base.step_ms, [t / factor for t in cur.step_ms]).ratio
    if row.step.low is None:
        row.step_verdict = "too few windows"
        row.notes.append(
            f"{len(base_ms)} baseline and {len(current_ms)} current windows give no "
            f"{confidence:.0%} interval (4 each at least): step time not judged"
        )
    elif row.step.low > row.allowed_ratio:
        row.step_verdict = "SLOWER"
        row.fail(
            f"{row.metric} time per step x{row.step.ratio:.3f} ({row.state} windows), "
            f"{confidence:.0%} interval [{row.step.low:.3f}, {row.step.high:.3f}] entirely above "
            f"the allowed x{row.allowed_ratio:.2f}"
        )
    elif row.step.high is not None and row.step.high < 1 / row.allowed_ratio:
        row.step_verdict = "faster"
        row.notes.append(
            f"step time x{row.step.ratio:.3f}: faster beyond the allowance; refresh the baseline "
            "so that a later slowdown is measured from here"
        )
    else:
        row.step_verdict = "ok"


def judge_accuracy(row: RowResult, base: Measurement, cur: Measurement, tolerance: float) -> None:
    base_accuracy, accuracy = base.accuracy, cur.accuracy
    if base_accuracy is None:
        return  # synthetic data or a benchmark: no accuracy to judge
    if accuracy is None:
        row.accuracy_verdict = "not measured"
        row.notes.append("the baseline has an accuracy, the current run none (synthetic data?)")
        return
    row.accuracy_verdict = "ok"
    if accuracy < base_accuracy - tolerance:
        row.accuracy_verdict = "DROP"
        row.fail(
            f"test accuracy {accuracy:.4f} < baseline {base_accuracy:.4f} - tolerance {tolerance:g}"
        )
    target = base.target
    if target is not None and base_accuracy >= target and accuracy < target:
        row.accuracy_verdict = "DROP" if row.accuracy_verdict == "DROP" else "BELOW TARGET"
        row.fail(f"test accuracy {accuracy:.4f} is below the task's target {target:g}")


# ---------------------------------------------------------------------------- output

TABLE = (
    "task", "backend", "mode", "prec", "batch", "time", "state", "base ms", "cur ms", "ratio",
    "interval", "allow", "windows", "wall", "base acc", "cur acc", "step", "accuracy", "verdict",
)  # fmt: skip


def table_cells(row: RowResult) -> list[str]:
    task, backend, _, _, precision, mode, batch_size = row.identity
    base, cur, step = row.baseline, row.current, row.step

    def median_ms(times: list[float]) -> str:
        return f"{statistics.median(times):.4g}" if times else "-"

    def accuracy(m: Measurement | None) -> str:
        return f"{m.accuracy:.4f}" if m and m.accuracy is not None else "-"

    interval = f"[{step.low:.3f}, {step.high:.3f}]" if step and step.low is not None else "-"
    windows = (
        f"{len(row.used[0])}/{len(row.times(base))} {len(row.used[1])}/{len(row.times(cur))}"
        if step and base and cur
        else "-"
    )
    metric = row.metric if row.comparison and row.comparison.method != "none" else "-"
    hooks = "*" if (cur and cur.test_hooks) or (base and base.test_hooks) else ""
    return [
        task, backend, mode, precision, batch_size, metric if step else "-",
        row.state if step else "-", median_ms(row.used[0]), median_ms(row.used[1]),
        f"{step.ratio:.3f}" if step else "-", interval,
        f"{row.allowed_ratio:.2f}" if row.allowed_ratio else "-", windows,
        f"{row.wall_ratio:.3f}" if row.wall_ratio else "-", accuracy(base), accuracy(cur),
        row.step_verdict, row.accuracy_verdict, row.verdict + hooks,
    ]  # fmt: skip


def text_report(result: GateResult, confidence: float) -> str:
    header = list(TABLE)
    lines = [table_cells(row) for row in result.rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip(),
        "  ".join("-" * width for width in widths),
        *("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines),
        "",
        *comparison_lines(result),
        f"time: the step time judged (cpu: process CPU time per step, wall: wall clock); state: "
        "fast = only windows that ran in the machine's fast state, all = every window; ratio: "
        f"current/baseline (Hodges-Lehmann); interval: {confidence:.0%}, fails only when "
        "entirely above 'allow'; windows: compared/steady, baseline then current; wall: the "
        "wall-clock ratio over every window, for information",
        *note_lines(result),
        verdict_line(result),
    ]
    return "\n".join(text) + "\n"


def comparison_lines(result: GateResult) -> list[str]:
    sources = [
        f"baseline: {', '.join(result.baseline.sources)}",
        f"current:  {', '.join(result.current.sources)}",
    ]
    return (
        sources
        + [f"step-time comparison: {c.reason}" for c in result.comparisons.values()]
        + [suite.line for suite in result.suites]
    )


def note_lines(result: GateResult) -> list[str]:
    lines = []
    for row in result.rows:
        lines.extend(f"- {row.label}: {note}" for note in row.notes)
    if any(r.current and r.current.test_hooks for r in result.rows):
        lines.append("* current rows made under test-only hooks: their numbers are not real")
    return lines


def verdict_line(result: GateResult) -> str:
    regressions, unmatched = len(result.regressions), len(result.unmatched)
    compared = len(result.rows) - unmatched
    text = f"{compared} rows compared, {regressions} regressions"
    if result.slower_suites:
        text += f", suite step time slower ({len(result.slower_suites)})"
    if unmatched:
        text += f", {unmatched} rows on one side only"
    failed = regressions or result.slower_suites
    return ("FAIL: " if failed else "PASS: " if not unmatched else "INCOMPLETE: ") + text


def markdown_report(result: GateResult, confidence: float) -> str:
    header = list(TABLE)
    lines = [
        f"### bench gate: {verdict_line(result)}",
        "",
        *(f"- {line}" for line in comparison_lines(result)),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in result.rows:
        cells = table_cells(row)
        if row.verdict != "pass":
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        f"Step time (cpu: process CPU time per step; wall: wall clock): Hodges-Lehmann ratio "
        f"current/baseline over the steady windows (state fast: only those that ran in the "
        f"machine's fast state), with its {confidence:.0%} distribution-free interval; a row "
        "fails only when the whole interval is above the allowed ratio.",
    ]
    notes = note_lines(result)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def summary_json(result: GateResult, code: int) -> str:
    methods = sorted({c.method for c in result.comparisons.values()})
    metrics = sorted({r.metric for r in result.rows if r.step is not None})
    return json.dumps(
        {
            "gate": {0: "pass", 1: "regression", 2: "error"}[code],
            "compared": len(result.rows) - len(result.unmatched),
            "regressions": len(result.regressions),
            "only_in_baseline": sum(r.verdict == "only in baseline" for r in result.rows),
            "only_in_current": sum(r.verdict == "only in current" for r in result.rows),
            "step_time_comparison": methods[0] if len(methods) == 1 else "mixed",
            "metric": metrics[0] if len(metrics) == 1 else "mixed" if metrics else "none",
            "suite": [
                {
                    "device": suite.device,
                    "rows": suite.step.baseline_samples,
                    "ratio": round(suite.step.ratio, 4),
                    "low": None if suite.step.low is None else round(suite.step.low, 4),
                    "high": None if suite.step.high is None else round(suite.step.high, 4),
                    "allowed": round(suite.allowed_ratio, 4),
                    "verdict": suite.verdict,
                }
                for suite in result.suites
            ],
        }
    )


# ---------------------------------------------------------------------------- command line


def command_gate(args: argparse.Namespace) -> int:
    try:
        baseline = load_side("baseline", args.baseline)
        current = load_side("current", args.current)
    except GateDataError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    result = judge(
        baseline,
        current,
        overrides={
            name: getattr(args, name)
            for name, _, _ in TOLERANCE_OPTIONS
            if getattr(args, name) is not None
        },
        confidence=args.confidence,
        normalize=args.normalize,
        metric=args.metric,
    )
    code = result.exit_code(args.allow_partial)
    print(text_report(result, args.confidence), end="")
    markdown = markdown_report(result, args.confidence)
    for path in (args.summary, os.environ.get("GITHUB_STEP_SUMMARY")):
        if path:
            with open(path, "a") as handle:
                handle.write(markdown + "\n")
    print(summary_json(result, code))
    if code == 2:
        only_base = [r.label for r in result.rows if r.verdict == "only in baseline"]
        only_current = [r.label for r in result.rows if r.verdict == "only in current"]
        parts = []
        if only_base:
            parts.append(
                f"{len(only_base)} baseline rows have no match in the current run ({', '.join(only_base)})"
            )
        if only_current:
            parts.append(
                f"{len(only_current)} current rows are not in the baseline ({', '.join(only_current)})"
            )
        print(
            f"bench: error: {'; '.join(parts)}; refresh the baseline (bench baseline RUN_DIR "
            "--out FILE) or pass --allow-partial",
            file=sys.stderr,
        )
    return code


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 10, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a confidence in [0.5, 1), got {text}")
    return value


# The tolerance options: Tolerances field, flag, what it allows (the defaults are appended).
TOLERANCE_OPTIONS = (
    ("max_slowdown", "--max-slowdown", "allowed step-time growth of a row, e.g. 0.1 for 10%%"),
    (
        "unmatched_slowdown",
        "--unmatched-slowdown",
        "allowed step-time growth of a CPU row whose windows' fast and slow machine states "
        "could not be matched",
    ),
    (
        "suite_slowdown",
        "--suite-slowdown",
        "allowed growth of the geometric mean step-time ratio over all rows "
        f"({SUITE_MIN_ROWS} rows needed)",
    ),
    (
        "other_model_slowdown",
        "--other-model-slowdown",
        "allowed step-time growth of calibration-normalized times (baseline and current on "
        "different CPU models; x2: gross regressions only)",
    ),
    ("accuracy_drop", "--accuracy-tolerance", "allowed absolute drop of test accuracy"),
)


def add_parser(commands) -> None:
    cpu, cuda = DEFAULT_TOLERANCES["cpu"], DEFAULT_TOLERANCES["cuda"]
    parser = commands.add_parser(
        "gate",
        help="compare a run with a baseline: exit 1 on a regression",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--baseline", nargs="+", action="extend", required=True, metavar="PATH",
        help="baseline file(s) (bench baseline), run directories or pytest-benchmark JSON",
    )  # fmt: skip
    parser.add_argument(
        "--current", nargs="+", action="extend", required=True, metavar="PATH",
        help="run directory (a folder of runs: its newest), results CSV or pytest-benchmark JSON",
    )  # fmt: skip
    for name, flag, help_text in TOLERANCE_OPTIONS:
        parser.add_argument(
            flag, dest=name, type=fraction, default=None, metavar="FRACTION",
            help=f"{help_text} (default: cpu {getattr(cpu, name)}, cuda {getattr(cuda, name)})",
        )  # fmt: skip
    parser.add_argument(
        "--confidence", type=probability, default=CONFIDENCE,
        help=f"of the step-time ratio's interval (default {CONFIDENCE})",
    )  # fmt: skip
    parser.add_argument(
        "--normalize", choices=("auto", "always", "never"), default="auto",
        help="compare calibration-normalized step times: auto = when the CPU models differ",
    )  # fmt: skip
    parser.add_argument(
        "--metric", choices=("auto", "cpu", "wall"), default="auto",
        help="step time judged: process CPU time or wall time per step; auto = cpu on CPU rows "
        "that have it (robust to other processes on a shared machine), wall elsewhere",
    )  # fmt: skip
    parser.add_argument(
        "--allow-partial", action="store_true",
        help="rows on one side only are reported but are not an error (exit 2)",
    )  # fmt: skip
    parser.add_argument("--summary", default=None, help="also append the markdown summary here")
    parser.set_defaults(handler=command_gate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gate", *(argv if argv is not None else sys.argv[1:])])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
