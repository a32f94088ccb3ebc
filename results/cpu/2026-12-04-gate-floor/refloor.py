"""The A/B gate's verdicts at other row floors, recomputed from recorded windows.

Every comparison folder given holds the windows.csv that `bench gate --ab` / `bench compare`
wrote; this reruns bench.compare.analysis on them (the same pair medians, t-tests, Holm
adjustment and suite bootstrap) with each floor in --floors, and prints one line per folder:
the folder, for each floor whether the gate would have failed (any row `slower`, or the suite
`slower`) and which rows were `slower`, and the suite's ratio at the first floor.

    python results/cpu/2026-12-04-gate-floor/refloor.py --floors 0.02,0.03,0.04 DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from bench.compare import analysis
from bench.compare.schedule import RowRecord


def records(folder: Path) -> tuple[list[RowRecord], int]:
    windows = pd.read_csv(folder / "windows.csv")
    arms = int(windows["arm"].max()) + 1
    rows = []
    for row, frame in windows.groupby("row", sort=False):
        rows.append(RowRecord(str(row), None, frame.to_dict("records")))
    return rows, arms


def verdicts(folder: Path, floor: float, suite_floor: float, metric: str = "wall") -> dict:
    rows, arms = records(folder)
    comparisons = [c for record in rows for c in analysis.compare_row(record, arms, metric)]
    analysis.judge(comparisons, analysis.ALPHA, floor)
    suites = [analysis.suite(comparisons, arm, suite_floor) for arm in range(1, arms)]
    slower = [c for c in comparisons if c.verdict == "slower"]
    return {
        "failed": bool(slower) or any(s.verdict == "slower" for s in suites),
        "slower": [f"{c.row.split()[1]} x{c.ratio:.3f}" for c in slower],
        "suite": [f"x{s.ratio:.3f} [{s.low:.3f}, {s.high:.3f}] {s.verdict}" for s in suites],
        "rows": [
            (c.row.split()[1], c.ratio, c.low, c.high, c.p_holm, len(c.pair_logs))
            for c in comparisons
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--floors", default="0.02,0.03,0.04,0.05")
    parser.add_argument("--suite-floor", type=float, default=analysis.SUITE_FLOOR)
    parser.add_argument("--rows", action="store_true", help="also print every row")
    parser.add_argument("--metric", default="wall", choices=analysis.METRICS)
    args = parser.parse_args()
    floors = [float(f) for f in args.floors.split(",")]
    print("folder | " + " | ".join(f"floor {f:g}" for f in floors) + " | suite")
    for folder in args.folders:
        results = [verdicts(folder, floor, args.suite_floor, args.metric) for floor in floors]
        cells = [("FAIL " + ", ".join(r["slower"]) if r["failed"] else "pass") for r in results]
        print(f"{folder} | " + " | ".join(cells) + " | " + "; ".join(results[0]["suite"]))
        if args.rows:
            for name, ratio, low, high, p, pairs in results[0]["rows"]:
                interval = f"[{low:.3f}, {high:.3f}]" if low is not None else ""
                p_text = f"{p:.4f}" if p is not None and not math.isnan(p) else "-"
                print(f"    {name:18s} x{ratio:.3f} {interval} p {p_text} pairs {pairs}")


if __name__ == "__main__":
    main()
