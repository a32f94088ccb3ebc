"""The suite verdict (every compared row of one machine pair at once), and `judge`: every verdict
of one gate, rows and suites."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bench.gate.machines import MachineComparison, compare_machines, match
from bench.gate.rows import RowResult, judge_row, pick_metric
from bench.gate.sides import Side
from bench.gate.tolerances import CONFIDENCE, DEFAULT_TOLERANCES, SUITE_MIN_ROWS, Tolerances
from bench.stats import RatioInterval, geometric_mean_interval


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
