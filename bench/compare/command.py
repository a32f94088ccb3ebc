"""`bench compare` on the command line (bench/compare/__init__.py says what it does)."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.compare import analysis
from bench.compare.arms import Arm, arm_names, checkout, compile_bytecode, parse_arm
from bench.compare.output import CompareResult, markdown_report, summary, text_report, write_files
from bench.compare.schedule import SCHEDULES, Plan, measure_rows
from bench.config import DATA_KINDS, MODES, PRECISIONS, RunConfig, UsageError, check_choice
from bench.metrics import available_cpus
from bench.tasks import TASKS


def split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def row_configs(args: argparse.Namespace, arms: list[Arm]) -> list[tuple[str, RunConfig]]:
    """(label, config) per row: tasks x backends x modes x precisions; an arm's settings then
    override the row's (backend=jax in every arm: the rows need no --backends)."""
    from backends import BACKENDS

    tasks = split(args.tasks)
    if not tasks:
        raise UsageError("--tasks is required (e.g. --tasks mnist_cnn)")
    backends = split(args.backends)
    if not backends:
        if all("backend" in arm.settings for arm in arms):
            backends = [arms[0].settings["backend"]]
        else:
            raise UsageError("--backends is required unless every arm sets backend=...")
    for axis, values, valid in (
        ("task", tasks, list(TASKS)),
        ("backend", backends, list(BACKENDS)),
        ("mode", split(args.mode), MODES),
        ("precision", split(args.precision), PRECISIONS),
        ("data kind", [args.data], DATA_KINDS),
    ):
        for value in values:
            check_choice(axis, value, valid)
    arm_sets_backend = all("backend" in arm.settings for arm in arms)
    rows = []
    for task, backend, mode, precision in itertools.product(
        tasks, backends, split(args.mode), split(args.precision)
    ):
        config = RunConfig(
            task=task,
            backend=backend,
            device=args.device,
            precision=precision,
            mode=mode,
            data=args.data,
            data_dir=args.data_dir,
            train_limit=args.train_limit,
            threads=args.threads,
            window_steps=args.window_steps,
            warmup_windows=1,
        )
        parts = [task] + ([] if arm_sets_backend else [backend]) + [mode]
        parts += [] if precision == "fp32" else [precision]
        rows.append((" ".join(parts), config))
    return rows


def run_comparison(
    rows: list[tuple[str, RunConfig]],
    arms: list[Arm],
    plan: Plan,
    out: Path,
    metric: str = "wall",
    alpha: float = analysis.ALPHA,
    floor: float = analysis.FLOOR,
    suite_floor: float = analysis.SUITE_FLOOR,
    cache: Path | None = None,
    log=sys.stderr,
) -> CompareResult:
    """Measure every row with every arm; the judged result (files written under `out`)."""
    started = time.monotonic()
    cache = cache or Path(os.environ.get("BENCH_CACHE_DIR") or ".cache")
    code = [checkout(arm.rev, cache, log) for arm in arms]
    for arm, checkout_ in zip(arms, code, strict=True):
        if not checkout_.serves:
            raise UsageError(
                f"arm {arm.label}: revision {arm.rev} ({(checkout_.commit or '')[:12]}) predates "
                "the serving worker (bench/serve.py) that bench compare needs"
            )
    for checkout_ in dict.fromkeys(code):  # every arm's workers load bytecode, none compiles
        compile_bytecode(checkout_, log)
    names = arm_names(arms)
    cpus = available_cpus()
    estimate = len(rows) * plan.pairs * (plan.round_s + 2 * plan.window_s * (len(arms) + 2))
    print(
        f"compare: {len(rows)} rows x {plan.pairs} rounds x {len(arms)} arms, about "
        f"{estimate / 60:.0f} min of measuring (setup overlaps it where a core is free)",
        file=log,
        flush=True,
    )
    labels = [label for label, _ in rows]

    def progress(record, pair, block):
        if block == plan.min_blocks:
            index = labels.index(record.row) + 1
            print(
                f"compare: row {index}/{len(rows)} {record.row}: round {pair + 1}/{plan.pairs}",
                file=log,
                flush=True,
            )

    records = measure_rows(rows, arms, code, plan, out / "logs", cpus, progress)
    for record in records:
        if record.error:
            print(f"compare: {record.row} failed: {record.error.splitlines()[0]}", file=log)
    comparisons = [c for r in records for c in analysis.compare_row(r, len(arms), metric)]
    analysis.judge(comparisons, alpha, floor)
    suites = [
        analysis.suite(comparisons, arm, suite_floor, plan.seed) for arm in range(1, len(arms))
    ]
    if len(rows) < 2:
        suites = []
    result = CompareResult(
        arms, names, [c.commit for c in code], plan, metric, records, comparisons, suites,
        floor, suite_floor, alpha,
    )  # fmt: skip
    result.seconds = time.monotonic() - started
    write_files(result, out)
    return result


def emit(result: CompareResult, code: int, summary_path: str | None) -> None:
    """The table on stdout, the markdown to --summary and $GITHUB_STEP_SUMMARY, one JSON line."""
    import json

    print(text_report(result), end="")
    markdown = markdown_report(result)
    for path in (summary_path, os.environ.get("GITHUB_STEP_SUMMARY")):
        if path:
            with open(path, "a") as handle:
                handle.write(markdown + "\n")
    print(json.dumps(summary(result, code)))


def plan_from(args: argparse.Namespace) -> Plan:
    cpus = [int(c) for c in split(args.cpus)] or None
    return Plan(
        pairs=args.pairs,
        round_s=args.round_seconds,
        window_s=args.window_seconds,
        schedule=args.schedule,
        cpus=cpus,
        seed=args.seed,
    )


def default_out(prefix: str) -> Path:
    return Path("results") / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def command_compare(args: argparse.Namespace) -> int:
    arms = [parse_arm(spec) for spec in args.arms]
    if len(arms) < 2:
        raise UsageError("--arms needs two or more arms (e.g. --arms backend=torch backend=jax)")
    rows = row_configs(args, arms)
    out = Path(args.out) if args.out else default_out("compare")
    result = run_comparison(
        rows, arms, plan_from(args), out, args.metric, args.alpha, args.floor, args.suite_floor
    )
    code = 2 if result.failed else 0
    emit(result, code, args.summary)
    print(f"compare: every window and result in {out}", file=sys.stderr)
    return code


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return parse


def add_measurement_options(parser: argparse.ArgumentParser, pairs: int, round_s: float) -> None:
    """The options bench compare and bench gate --ab share."""
    parser.add_argument("--mode", default="default", help="comma list of modes (rows)")
    parser.add_argument("--precision", default="fp32", help="comma list of precisions (rows)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data", default="synthetic", help="synthetic (default) or real")
    parser.add_argument(
        "--data-dir", default=None, help="dataset folder (default: $BENCH_DATA_DIR)"
    )
    parser.add_argument("--train-limit", type=int, default=None, help="first N training samples")
    parser.add_argument("--threads", type=positive(int), default=1, help="threads per arm (1)")
    parser.add_argument(
        "--window-steps", type=positive(int), default=25, help="steps per dispatch (fused modes)"
    )
    parser.add_argument(
        "--pairs",
        type=positive(int),
        default=pairs,
        help=f"rounds of fresh processes per row ({pairs})",
    )
    parser.add_argument(
        "--round-seconds",
        type=positive(float),
        default=round_s,
        help=f"measuring time per round ({round_s:g})",
    )
    parser.add_argument(
        "--window-seconds",
        type=positive(float),
        default=0.5,
        help="about this long per window (0.5)",
    )
    parser.add_argument("--schedule", choices=SCHEDULES, default="interleaved")
    parser.add_argument(
        "--cpus", default=None, help="comma list of cores for the arms (default: the last)"
    )
    parser.add_argument(
        "--metric",
        choices=analysis.METRICS,
        default="wall",
        help="wall (default) or process CPU time",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=analysis.ALPHA,
        help=f"of the Holm-adjusted tests ({analysis.ALPHA})",
    )
    parser.add_argument(
        "--floor",
        type=float,
        default=analysis.FLOOR,
        help=f"a row's smallest slowdown that fails ({analysis.FLOOR})",
    )
    parser.add_argument(
        "--suite-floor",
        type=float,
        default=analysis.SUITE_FLOOR,
        help=f"the suite's ({analysis.SUITE_FLOOR})",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the block orders and the bootstrap")
    parser.add_argument("--summary", default=None, help="also append the markdown here")
    parser.add_argument("--out", default=None, help="directory for windows.csv, compare.csv, logs")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "compare",
        help="two or more arms (configurations or git revisions) interleaved on this machine",
        description=__import__("bench.compare", fromlist=["x"]).__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        required=True,
        metavar="ARM",
        help="key=value,... per arm (rev, backend, mode, precision, threads, batch_size, window_steps, slowdown); '.' = this checkout",
    )
    parser.add_argument("--tasks", required=True, help="comma list of tasks (rows)")
    parser.add_argument(
        "--backends", default=None, help="comma list (rows), unless the arms set backend"
    )
    add_measurement_options(parser, pairs=5, round_s=40.0)
    parser.set_defaults(handler=command_compare)
