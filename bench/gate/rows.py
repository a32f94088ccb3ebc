"""The verdicts of one matched row: its status, its step time and its accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.gate.machines import MachineComparison
from bench.gate.sides import Measurement
from bench.gate.tolerances import MIN_STATE_WINDOWS, Tolerances
from bench.stats import RatioInterval, ratio_interval


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
    """The mean final accuracy of each side's rows against the other's: with several seeds on
    both sides the seed means (each side's interval across its seeds in the notes), else a
    single run's accuracy (or the mean of the runs pooled for that seed), as before seeds were
    summed up. The rules are the same for both."""
    base_accuracy, accuracy = base.accuracy, cur.accuracy
    if base_accuracy is None:
        return  # synthetic data or a benchmark: no accuracy to judge
    if accuracy is None:
        row.accuracy_verdict = "not measured"
        row.notes.append("the baseline has an accuracy, the current run none (synthetic data?)")
        return
    seeds = base.seeds > 1 and cur.seeds > 1
    what = "seed mean test accuracy" if seeds else "test accuracy"
    if seeds:
        row.notes.append(f"seed means: current {seed_summary(cur)}, baseline {seed_summary(base)}")
    row.accuracy_verdict = "ok"
    if accuracy < base_accuracy - tolerance:
        row.accuracy_verdict = "DROP"
        row.fail(f"{what} {accuracy:.4f} < baseline {base_accuracy:.4f} - tolerance {tolerance:g}")
    target = base.target
    if target is not None and base_accuracy >= target and accuracy < target:
        row.accuracy_verdict = "DROP" if row.accuracy_verdict == "DROP" else "BELOW TARGET"
        row.fail(f"{what} {accuracy:.4f} is below the task's target {target:g}")


def seed_summary(side: Measurement) -> str:
    """e.g. "0.8612 (95% interval 0.8512-0.8712, min 0.8501, max 0.8700; 5 seeds, 5 runs)"."""
    summary = side.accuracy_interval
    assert summary is not None and summary.low is not None and summary.high is not None
    return (
        f"{summary.mean:.4f} ({summary.confidence:.0%} interval {summary.low:.4f}-"
        f"{summary.high:.4f}, min {summary.minimum:.4f}, max {summary.maximum:.4f}; "
        f"{side.seeds} seeds, {summary.n} runs)"
    )
