"""The A/B gate's proof: false alarms on unchanged code, and detection of injected slowdowns.

    python tests/ab_proof.py --runs 10 [--kinds aa,0.15,0.05] [--base HEAD] [--out DIR]
    make gate-ab-proof                      (the same, with its defaults)

Runs `bench gate --ab BASE` (no accuracy side) in the configuration CI uses, `--runs` times per
kind, the kinds interleaved round by round (A/A, +15%, +5%, A/A, ...) so that the machine's phases
meet every kind alike: `aa` is this checkout against BASE (unchanged code when BASE is HEAD and
the tree is clean), a number F injects a slowdown of F into this checkout's arm only (the test
hook), F@BACKEND into that backend's rows of it only. Writes every gate's JSON line (runs.jsonl)
and a markdown summary (summary.md): per kind, the gate's exit codes, how many runs failed (a
false alarm for `aa`, a detection otherwise), and each row's ratio over the runs (min, median,
max). A measurement: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def gate(base: str, kind: str, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "bench", "gate", "--ab", base, "--ab-out", str(out), *extra]
    if kind != "aa":
        command += ["--ab-inject-slowdown", kind]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {"rows": [], "suite": []}
    summary.update(kind=kind, exit=result.returncode, seconds=time.monotonic() - started)
    if not lines:
        summary["stderr"] = result.stderr[-2000:]
    return summary


def summarize(runs: list[dict]) -> str:
    lines = [
        "| kind | runs | exit codes | gate failed | mean s per gate |",
        "|---|---|---|---|---|",
    ]
    kinds = list(dict.fromkeys(run["kind"] for run in runs))
    for kind in kinds:
        mine = [run for run in runs if run["kind"] == kind]
        codes = [run["exit"] for run in mine]
        failed = sum(code == 1 for code in codes)
        fraction, _, backend = kind.partition("@")
        name = "A/A (unchanged)" if kind == "aa" else f"+{float(fraction):.0%} injected"
        name += f" in {backend} only" if backend else ""
        seconds = np.mean([run["seconds"] for run in mine])
        lines.append(
            f"| {name} | {len(mine)} | {' '.join(map(str, codes))} | {failed} of {len(mine)} | {seconds:.0f} |"
        )
    lines += [
        "",
        "| kind | row | ratio min | median | max | runs slower |",
        "|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        mine = [run for run in runs if run["kind"] == kind]
        rows = list(dict.fromkeys(r["row"] for run in mine for r in run["rows"]))
        for row in [*rows, "suite"]:
            entries = [
                entry
                for run in mine
                for entry in (
                    run["suite"] if row == "suite" else [r for r in run["rows"] if r["row"] == row]
                )
            ]
            ratios = [e["ratio"] for e in entries if e.get("ratio")]
            if not ratios:
                continue
            slower = sum(e["verdict"] == "slower" for e in entries)
            lines.append(
                f"| {kind} | {row} | {min(ratios):.3f} | {np.median(ratios):.3f} | {max(ratios):.3f} | {slower} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="gate runs per kind")
    parser.add_argument(
        "--kinds", default="aa,0.15,0.05", help="aa and/or slowdown fractions (F or F@BACKEND)"
    )
    parser.add_argument("--base", default="HEAD", help="the base revision")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / f"gate-ab-proof-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    parser.add_argument("gate_args", nargs="*", help="passed to bench gate (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for index in range(args.runs):
        for kind in args.kinds.split(","):
            run = gate(args.base, kind, args.out / f"{kind}-{index}", args.gate_args)
            runs.append(run)
            with open(args.out / "runs.jsonl", "a") as handle:
                handle.write(json.dumps(run) + "\n")
            verdicts = [r["verdict"] for r in run["rows"]] + [s["verdict"] for s in run["suite"]]
            print(
                f"{kind} #{index + 1}: exit {run['exit']} in {run['seconds']:.0f} s: {' '.join(verdicts)}",
                flush=True,
            )
            (args.out / "summary.md").write_text(summarize(runs))
    print(summarize(runs))


if __name__ == "__main__":
    main()
