"""`bench gate --ab REV`: this checkout against revision REV, on this machine, interleaved.

    bench gate --ab REV [--baseline FILE --current RUN_DIR]
    make gate-ab BASE=REV            (CI: BASE from results/baselines/ab-base)

Step time: `bench compare` (bench/compare/) with two arms, REV (checked out as a worktree) and
this checkout, over the A/B rows (--ab-tasks x --ab-backends, default mode, 1 thread each,
synthetic data): a row regresses when its Holm-adjusted one-sided p-value is below alpha and its
ratio exceeds the floor; the suite when its whole bootstrap interval lies above the suite floor.
Accuracy and status: judged as `bench gate` judges them (a run against the committed baseline,
--baseline and --current), with that comparison's step-time verdicts off, since the interleaved
comparison is the better judge of speed.

When REV predates the serving worker (no bench/serve.py), the gate says so and judges the run
against the committed baseline as plain `bench gate` does, step time included.

Exit code: 0 pass, 1 regression (either judgement), 2 usage or data error (2 outranks 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.compare import analysis
from bench.compare.arms import Arm, checkout, parse_arm
from bench.compare.command import default_out, emit, run_comparison, split
from bench.compare.schedule import Plan
from bench.config import RunConfig, UsageError

AB_TASKS = "mnist_cnn"
AB_PAIRS = 4
AB_ROUND_S = 8.0
AB_TRAIN_LIMIT = 12800  # 200 steps per epoch at batch 64: setup stays short, windows fit


def ab_rows(args: argparse.Namespace) -> list[tuple[str, RunConfig]]:
    from bench.cli import installed_backends

    backends = split(args.ab_backends) or installed_backends()
    rows = []
    for task in split(args.ab_tasks):
        for backend in backends:
            config = RunConfig(
                task=task,
                backend=backend,
                data="synthetic",
                train_limit=args.ab_train_limit,
                threads=1,
                warmup_windows=1,
            )
            rows.append((f"{task} {backend} default", config))
    return rows


def command_gate_ab(args: argparse.Namespace, plain_gate) -> int:
    """The A/B gate; `plain_gate(args, step_time)` is today's gate (step_time False: accuracy
    and status only)."""
    has_run = bool(args.baseline) and bool(args.current)
    if bool(args.baseline) != bool(args.current):
        raise UsageError("--baseline and --current go together (the accuracy judgement)")
    cache = Path(os.environ.get("BENCH_CACHE_DIR") or ".cache")
    try:
        base = checkout(args.ab, cache, sys.stderr)
        problem = (
            None
            if base.serves
            else (
                f"revision {args.ab} ({(base.commit or '')[:12]}) predates the serving worker "
                "(bench/serve.py), so it cannot be run interleaved"
            )
        )
    except UsageError as error:  # e.g. a shallow clone without that commit
        problem = f"revision {args.ab} cannot be checked out here ({error})"
    if problem:
        print(
            f"bench gate --ab: {problem}; judging step time against the committed baseline instead"
        )
        if not has_run:
            raise UsageError("that fallback needs --baseline and --current")
        return plain_gate(args, True)
    code = plain_gate(args, False) if has_run else 0
    arms = [Arm(spec=f"rev={args.ab}", rev=args.ab), Arm(spec="")]
    if args.ab_inject_slowdown:  # test-only: the gate's proof (tests/ab_proof.py)
        fraction, _, backend = args.ab_inject_slowdown.partition("@")
        spec = f"slowdown={fraction}" + (f",slowdown_backend={backend}" if backend else "")
        arms[1] = parse_arm(spec)
    plan = Plan(pairs=args.ab_pairs, round_s=args.ab_round_seconds, seed=args.ab_seed)
    out = Path(args.ab_out) if args.ab_out else default_out("gate-ab")
    result = run_comparison(
        ab_rows(args), arms, plan, out, floor=args.ab_floor, suite_floor=args.ab_suite_floor
    )
    ab_code = 2 if result.failed else 1 if result.regressed else 0
    emit(result, ab_code, args.summary)
    print(f"bench gate --ab: every window in {out}; A/B exit code {ab_code}", file=sys.stderr)
    return 2 if 2 in (code, ab_code) else max(code, ab_code)


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("interleaved A/B (--ab REV)")
    group.add_argument(
        "--ab", metavar="REV", default=None,
        help="judge step time by running this checkout against git revision REV, interleaved",
    )  # fmt: skip
    group.add_argument("--ab-tasks", default=AB_TASKS, help=f"rows' tasks ({AB_TASKS})")
    group.add_argument("--ab-backends", default=None, help="rows' backends (every installed one)")
    group.add_argument(
        "--ab-pairs", type=int, default=AB_PAIRS, help=f"rounds per row ({AB_PAIRS})"
    )
    group.add_argument(
        "--ab-round-seconds", type=float, default=AB_ROUND_S,
        help=f"measuring seconds per round ({AB_ROUND_S:g})",
    )  # fmt: skip
    group.add_argument("--ab-train-limit", type=int, default=AB_TRAIN_LIMIT, help=argparse.SUPPRESS)
    group.add_argument(
        "--ab-floor", type=float, default=analysis.FLOOR,
        help=f"a row's smallest slowdown that fails ({analysis.FLOOR})",
    )  # fmt: skip
    group.add_argument(
        "--ab-suite-floor", type=float, default=analysis.SUITE_FLOOR,
        help=f"the suite's ({analysis.SUITE_FLOOR})",
    )  # fmt: skip
    group.add_argument("--ab-seed", type=int, default=0, help="of the block orders")
    group.add_argument("--ab-out", default=None, help="directory for its windows and logs")
    group.add_argument(
        "--ab-inject-slowdown", default=None, metavar="FRACTION[@BACKEND]",
        help="test hook: this checkout's windows take FRACTION longer, in BACKEND's rows only "
        "when named (the gate's proof)",
    )  # fmt: skip
