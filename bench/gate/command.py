"""`bench gate` on the command line: its options, output and exit code (bench/gate/__init__.py)."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

from bench.config import UsageError
from bench.gate.ab import add_options as add_ab_options
from bench.gate.ab import command_gate_ab
from bench.gate.output import markdown_report, summary_json, text_report
from bench.gate.sides import GateDataError
from bench.gate.sources import load_side
from bench.gate.suite import judge
from bench.gate.tolerances import CONFIDENCE, DEFAULT_TOLERANCES, SUITE_MIN_ROWS


def command_gate(args: argparse.Namespace) -> int:
    if args.ab:
        return command_gate_ab(args, judge_run)
    if not args.baseline or not args.current:
        raise UsageError("bench gate needs --baseline and --current (or --ab REV)")
    return judge_run(args, step_time=True)


def judge_run(args: argparse.Namespace, step_time: bool) -> int:
    """A run against a baseline; `step_time` False: accuracy and status only (bench gate --ab
    judges speed interleaved), every step-time allowance infinite."""
    overrides = {
        name: getattr(args, name)
        for name, _, _ in TOLERANCE_OPTIONS
        if getattr(args, name) is not None
    }
    if not step_time:
        overrides.update(
            {name: math.inf for name, _, _ in TOLERANCE_OPTIONS if name != "accuracy_drop"}
        )
        print("bench gate: accuracy and status against the baseline (step time: the A/B below)")
    try:
        baseline = load_side("baseline", args.baseline)
        current = load_side("current", args.current)
    except GateDataError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    result = judge(
        baseline,
        current,
        overrides=overrides,
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
    package = importlib.import_module(__package__)  # bench.gate, whose docstring tells the gate
    parser = commands.add_parser(
        "gate",
        help="compare a run with a baseline: exit 1 on a regression",
        description=package.__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--baseline", nargs="+", action="extend", default=[], metavar="PATH",
        help="baseline file(s) (bench baseline), run directories or pytest-benchmark JSON",
    )  # fmt: skip
    parser.add_argument(
        "--current", nargs="+", action="extend", default=[], metavar="PATH",
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
    add_ab_options(parser)
    parser.set_defaults(handler=command_gate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gate", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
