"""A comparison's result as a text table, markdown, one JSON line and files (pandas for CSVs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.compare.analysis import Comparison, Suite
from bench.compare.schedule import Plan, RowRecord


@dataclass
class CompareResult:
    arms: list  # Arm
    names: list[str]
    commits: list[str | None]
    plan: Plan
    metric: str
    records: list[RowRecord]
    comparisons: list[Comparison]
    suites: list[Suite]
    floor: float
    suite_floor: float
    alpha: float
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(c.verdict == "slower" for c in self.comparisons) or any(
            s.verdict == "slower" for s in self.suites
        )

    @property
    def failed(self) -> bool:
        return any(c.verdict == "failed" for c in self.comparisons) or not self.comparisons


def ratio_text(ratio: float | None, low: float | None, high: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return ""
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"x{ratio:.3f}{interval}"


def number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table_rows(result: CompareResult) -> list[dict[str, str]]:
    rows = []
    for c in result.comparisons:
        rows.append(
            {
                "row": c.row,
                "arms": f"{result.names[c.arm]} / {result.names[0]}",
                "step time ratio": ratio_text(c.ratio, c.low, c.high),
                "p (Holm)": number(c.p_holm, 4),
                "pairs": str(len(c.pair_logs)),
                "windows": str(c.samples),
                f"{result.names[0]} ms/step": number(c.per_step_ms[0] if c.per_step_ms else None),
                f"{result.names[c.arm]} ms/step": number(
                    c.per_step_ms[1] if c.per_step_ms else None
                ),
                "verdict": c.verdict + (f": {c.error.splitlines()[0][:160]}" if c.error else ""),
            }
        )
    for s in result.suites:
        rows.append(
            {
                "row": f"suite ({s.rows} rows, geometric mean)",
                "arms": f"{result.names[s.arm]} / {result.names[0]}",
                "step time ratio": ratio_text(s.ratio, s.low, s.high),
                "verdict": s.verdict,
            }
        )
    return rows


def render(rows: list[dict[str, str]], markdown: bool) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[row.get(c, "") for c in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return lines + ["| " + " | ".join(line) + " |" for line in cells]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    return lines + [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells
    ]


def header_lines(result: CompareResult) -> list[str]:
    plan = result.plan
    lines = [
        f"bench compare: {len(result.arms)} arms, {plan.schedule}, {plan.pairs} rounds of fresh "
        f"processes x {plan.round_s:g} s per row, windows of about {plan.window_s:g} s, "
        f"{result.metric} time; {result.seconds:.0f} s in all",
    ]
    for name, arm, commit in zip(result.names, result.arms, result.commits, strict=True):
        code = f"commit {commit[:12]}" if commit else "this checkout"
        lines.append(f"  {name}: {arm.label} ({code})")
    lines.append(
        f"A row is slower/faster when its Holm-adjusted one-sided p < {result.alpha} and its "
        f"ratio is beyond x{1 + result.floor:.3f}; the suite when its interval is beyond "
        f"x{1 + result.suite_floor:.3f}."
    )
    return lines


def ratio_lines(result: CompareResult) -> list[str]:
    """`jax/torch step time x4.07 [3.95, 4.18]` per row."""
    return [
        f"{c.row}: {result.names[c.arm]}/{result.names[0]} step time "
        f"{ratio_text(c.ratio, c.low, c.high) or c.verdict}"
        for c in result.comparisons
    ]


def text_report(result: CompareResult) -> str:
    lines = header_lines(result) + [""] + render(table_rows(result), False) + [""]
    lines += ratio_lines(result) + result.notes
    return "\n".join(lines) + "\n"


def markdown_report(result: CompareResult) -> str:
    lines = ["### bench compare", ""] + [f"- {line.strip()}" for line in header_lines(result)]
    lines += ["", *render(table_rows(result), True), ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def summary(result: CompareResult, code: int) -> dict:
    return {
        "compare": {
            "arms": [arm.label for arm in result.arms],
            "names": result.names,
            "schedule": result.plan.schedule,
            "metric": result.metric,
            "seconds": round(result.seconds, 1),
        },
        "rows": [
            {
                "row": c.row,
                "arm": result.names[c.arm],
                "ratio": c.ratio,
                "low": c.low,
                "high": c.high,
                "p_holm": c.p_holm,
                "pairs": len(c.pair_logs),
                "verdict": c.verdict,
            }
            for c in result.comparisons
        ],
        "suite": [
            {
                "arm": result.names[s.arm],
                "ratio": s.ratio,
                "low": s.low,
                "high": s.high,
                "rows": s.rows,
                "verdict": s.verdict,
            }
            for s in result.suites
        ],
        "exit_code": code,
    }


def write_files(result: CompareResult, out: Path) -> None:
    """windows.csv, compare.csv (rows and suite), arms.csv, compare.md, compare.json."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    windows = [
        {"row": r.row, "arm_name": result.names[w["arm"]], **w}
        for r in result.records
        for w in r.windows
    ]
    pd.DataFrame(windows).to_csv(out / "windows.csv", index=False)
    ready = [{"row": r.row, **entry} for r in result.records for entry in r.ready]
    pd.DataFrame(ready).to_csv(out / "arms.csv", index=False)
    rows = []
    for c in result.comparisons:
        rows.append(
            {
                "row": c.row,
                "arm": result.names[c.arm],
                "reference": result.names[0],
                "ratio": c.ratio,
                "low": c.low,
                "high": c.high,
                "p_slower": c.p_slower,
                "p_faster": c.p_faster,
                "p_holm": c.p_holm,
                "pairs": len(c.pair_logs),
                "samples": c.samples,
                "pair_log_ratios": " ".join(f"{v:.5f}" for v in c.pair_logs),
                "reference_ms_per_step": c.per_step_ms[0] if c.per_step_ms else None,
                "arm_ms_per_step": c.per_step_ms[1] if c.per_step_ms else None,
                "verdict": c.verdict,
                "error": c.error or "",
            }
        )
    for s in result.suites:
        rows.append(
            {
                "row": "suite",
                "arm": result.names[s.arm],
                "reference": result.names[0],
                "ratio": s.ratio,
                "low": s.low,
                "high": s.high,
                "pairs": s.rows,
                "verdict": s.verdict,
            }
        )
    pd.DataFrame(rows).to_csv(out / "compare.csv", index=False)
    (out / "compare.md").write_text(markdown_report(result))
    (out / "compare.json").write_text(json.dumps(summary(result, 0), indent=1) + "\n")
