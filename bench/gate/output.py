"""The gate's output: the text table, the markdown summary and the JSON line. Both tables are
drawn by the results layer's renderers (bench.results.text_table and markdown) from one column
spec per header below; table_cells formats every cell, so the columns only place them."""

from __future__ import annotations

import json
import statistics

from bench.gate.rows import RowResult
from bench.gate.sides import Measurement
from bench.gate.suite import GateResult
from bench.results import Column, markdown, text_table

TABLE = (
    "task", "backend", "mode", "prec", "batch", "time", "state", "base ms", "cur ms", "ratio",
    "interval", "allow", "windows", "wall", "base acc", "cur acc", "step", "accuracy", "verdict",
)  # fmt: skip
# Every cell is text from table_cells ("-" where there is nothing), left-aligned (numeric=False)
TABLE_COLUMNS = tuple(Column(title, title, numeric=False) for title in TABLE)


def table_cells(row: RowResult) -> list[str]:
    task, backend, _, _, precision, mode, batch_size = row.identity
    base, cur, step = row.baseline, row.current, row.step

    def median_ms(times: list[float]) -> str:
        return f"{statistics.median(times):.4g}" if times else "-"

    def accuracy(m: Measurement | None) -> str:
        """The accuracy, and how many seeds its mean is over where more than one."""
        if not m or m.accuracy is None:
            return "-"
        return f"{m.accuracy:.4f}" + (f" ({m.seeds} seeds)" if m.seeds > 1 else "")

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


def table_rows(result: GateResult, bold_verdicts: bool = False) -> list[dict[str, str]]:
    """Each row's cells by column title; `bold_verdicts`: markdown bold on every verdict but pass."""
    rows = []
    for row in result.rows:
        cells = table_cells(row)
        if bold_verdicts and row.verdict != "pass":
            cells[-1] = f"**{cells[-1]}**"
        rows.append(dict(zip(TABLE, cells)))
    return rows


def text_report(result: GateResult, confidence: float) -> str:
    text = [
        text_table(TABLE_COLUMNS, table_rows(result), empty=""),
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
    table = markdown(TABLE_COLUMNS, table_rows(result, bold_verdicts=True), empty="")
    lines = [
        f"### bench gate: {verdict_line(result)}",
        "",
        *(f"- {line}" for line in comparison_lines(result)),
        "",
        table.removesuffix("\n"),
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
