"""Command line: `bench run | list | env | report | gate | baseline` (also `python -m bench ...`).

    bench list                                   the tasks, their models and targets
    bench run --tasks mnist_cnn --backends torch one matrix; rows in results/<run-id>/
    bench run --suite quick                      a preset matrix (see SUITES)
    bench run --resume RUN_DIR [--retry-failed]  finish an interrupted matrix
    bench report RUN_DIR [RUN_DIR ...]           tables, plots and report.html
    bench gate --baseline BASE --current RUN_DIR regression gate: exit 0 pass, 1 regression
    bench baseline RUN_DIR --out BASE.csv        a baseline file for the gate, from run(s)
    bench env                                    versions, CPU and GPUs, as JSON

Comma-separated lists expand to their product. Bad input exits with code 2 and one line that
names the valid choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from backends import BACKENDS, missing_modules
from bench import compare, gate, report
from bench.config import DATA_KINDS, DEVICES, MODES, PRECISIONS, RunConfig, UsageError, check_choice
from bench.gate import baseline
from bench.metrics import nvml_devices
from bench.results import ResultsError, check_appendable, environment
from bench.runner import new_run_id, parse_matrix, read_matrix, run_matrix
from bench.tasks import TASKS


@dataclass(frozen=True)
class Suite:
    description: str
    tasks: tuple[str, ...]
    settings: dict = field(default_factory=dict)  # RunConfig fields the suite fixes


SUITES: dict[str, Suite] = {
    "full": Suite("every task at its full size, real data", tuple(TASKS)),
    # What CI gates (bench gate vs results/baselines/cpu-quick.csv), so it is built for stable
    # times: 3 epochs of 6,400 samples and 5-step windows give every run enough steady windows
    # for the step-time statistics, and enough of them in the machine's fast state for the gate
    # to compare like with like, and one thread per framework, because with 2 threads on a
    # 2-core machine that anything else shares, the frameworks' thread barriers make windows
    # 20-40x slower at random (measured on the CI machine class: torch SST-2 median 134 ms, p90
    # 2,876 ms per step with 2 threads; 48 / 52 ms with 1). Those gates compare like with like,
    # so they need stable numbers, not peak ones.
    "quick": Suite(
        "a few minutes on 2 CPU cores: MNIST and SST-2, 3 epochs on a 6,400-sample subset, "
        "1 thread, 5-step windows (what CI gates; stable step times)",
        ("mnist_cnn", "sst2_lstm"),
        {"epochs": 3, "train_limit": 6400, "window_steps": 5, "threads": 1},
    ),
    "smoke": Suite(
        "every task on 256 synthetic samples, 1 epoch (checks that everything runs): seconds a "
        "task, but minutes for cifar10_resnet18 on a CPU",
        tuple(TASKS),
        {"epochs": 1, "train_limit": 256, "test_limit": 256, "data": "synthetic"},
    ),
}


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def positive_ints(axis: str, text: str | None) -> list[int | None]:
    values = split_list(text)
    try:
        return [int(v) for v in values] or [None]
    except ValueError:
        raise UsageError(
            f"{axis} must be a comma-separated list of integers, got {text!r}"
        ) from None


def installed_backends() -> list[str]:
    """Every backend whose framework is installed: the default when --backends is not given.
    The others are named on stderr (asked for by name, they run and fail with the reason)."""
    installed = []
    for name in BACKENDS:
        missing = missing_modules(name)
        if missing:
            print(f"bench: leaving out {name}: {', '.join(missing)} not installed", file=sys.stderr)
        else:
            installed.append(name)
    if not installed:
        raise UsageError("no backend's framework is installed: pip install -e '.[all]'")
    return installed


def expand_matrix(args: argparse.Namespace) -> list[RunConfig]:
    suite = SUITES[check_choice("suite", args.suite, list(SUITES))]
    tasks = split_list(args.tasks) or list(suite.tasks)
    backends = split_list(args.backends) or installed_backends()
    for axis, values, valid in (
        ("task", tasks, list(TASKS)),
        ("backend", backends, list(BACKENDS)),
        ("device", [args.device], DEVICES),
        ("precision", split_list(args.precision), PRECISIONS),
        ("mode", split_list(args.mode), MODES),
        ("data kind", [args.data] if args.data else [], DATA_KINDS),
    ):
        for value in values:
            check_choice(axis, value, valid)
    settings = dict(suite.settings)
    overrides = {
        "epochs": args.epochs,
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "data": args.data,
        "window_steps": args.window_steps,
        "warmup_windows": args.warmup_windows,
        "threads": args.threads,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    configs = []
    axes = itertools.product(
        tasks,
        backends,
        split_list(args.precision),
        split_list(args.mode),
        positive_ints("batch size", args.batch_size),
        [s for s in positive_ints("seed", args.seeds) if s is not None] or [0],
    )
    for task, backend, precision, mode, batch_size, seed in axes:
        config = RunConfig(
            task=task,
            backend=backend,
            device=args.device,
            precision=precision,
            mode=mode,
            batch_size=batch_size,
            seed=seed,
            data_dir=args.data_dir,
            timeout_s=args.timeout,
            **settings,
        )
        if config not in configs:
            configs.append(config)
    return configs


def check_device(device: str) -> None:
    """A cuda matrix on a machine without an NVIDIA GPU is an error, never a silent cpu run."""
    if device == "cuda" and not nvml_devices():
        raise UsageError(
            "device cuda was requested but NVML finds no NVIDIA GPU on this machine "
            "(no driver, or no device visible); use DEVICE=cpu"
        )


def command_run(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        cells = read_matrix(run_dir)
        check_appendable(run_dir / "results.csv")  # a resumed run appends rows of this schema
        devices = {c.device for c in cells if isinstance(c, RunConfig)}
    else:
        cells = read_matrix_file(args.matrix) if args.matrix else expand_matrix(args)
        devices = {c.device for c in cells if isinstance(c, RunConfig)}
        run_dir = Path(args.out) / (args.run_id or new_run_id())
        if (run_dir / "matrix.json").exists():
            raise UsageError(
                f"{run_dir} already holds a run; resume it with --resume {run_dir}, "
                "or choose another --run-id"
            )
    for device in devices:
        check_device(device)
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    if args.tensorboard:
        try:
            report.import_tensorboardx()
        except ResultsError as error:
            raise UsageError(str(error)) from None
    print(f"{len(cells)} runs -> {run_dir}", file=sys.stderr)
    try:
        rows = run_matrix(
            cells,
            run_dir,
            [Path(sys.argv[0]).name, *sys.argv[1:]],
            resume=bool(args.resume),
            retry_failed=args.retry_failed,
            retries=args.retries,
        )
    except KeyboardInterrupt:
        print(f"partial results kept in {run_dir}", file=sys.stderr)
        export_tensorboard(run_dir, args.tensorboard)
        return 130
    export_tensorboard(run_dir, args.tensorboard)
    print()
    print((run_dir / "results.md").read_text(encoding="utf-8"))
    print(f"results: {run_dir / 'results.csv'}")
    failed = [r for r in rows if r["status"] not in ("ok", "skipped")]
    summary = {"run_dir": str(run_dir), "runs": len(rows), "failed": len(failed)}
    print(json.dumps(summary))
    return 1 if failed else 0


def export_tensorboard(run_dir: Path, log_dir: str | None) -> None:
    if log_dir:
        cells = report.export_tensorboard(run_dir, Path(log_dir))
        print(f"tensorboard: {cells} runs -> {log_dir}", file=sys.stderr)


def read_matrix_file(path: str) -> list:
    """A JSON list of RunConfig fields, one object per run (invalid ones become failed rows)."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the matrix file {path}: {error}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{path} must hold a JSON list of objects (RunConfig fields)")
    return parse_matrix(entries)


def command_list(args: argparse.Namespace) -> int:
    print(
        f"{'task':<20} {'dataset':<14} {'params':>10} {'batch':>5} {'epochs':>6} {'target':>6}  model"
    )
    for task in TASKS.values():
        target = f"{task.target_accuracy:.2f}" if task.target_accuracy else "-"
        print(
            f"{task.name:<20} {task.dataset:<14} {task.param_count:>10,} {task.batch_size:>5} "
            f"{task.epochs:>6} {target:>6}  {task.description}"
        )
    print("\ntargets and where they come from (optimizer; schedule and augmentation if any):")
    for task in TASKS.values():
        recipe = [repr(task.optimizer)]
        recipe += [repr(part) for part in (task.schedule, task.augmentation) if part is not None]
        text = f"{task.name}: {task.target_source}. Recipe: {', '.join(recipe)}"
        print(textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="    "))
    print("\nbackends:", ", ".join(BACKENDS))
    print("suites:  ", "; ".join(f"{name}: {suite.description}" for name, suite in SUITES.items()))
    return 0


def command_env(args: argparse.Namespace) -> int:
    print(json.dumps(environment(sys.argv), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a matrix of benchmark runs")
    run.add_argument("--suite", default="full", help=f"preset matrix: {', '.join(SUITES)}")
    run.add_argument("--tasks", help="comma-separated task names (default: the suite's)")
    run.add_argument("--backends", help="comma-separated backends (default: all)")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--precision", default="fp32", help="comma list of fp32, tf32, bf16")
    run.add_argument(
        "--mode", default="default", help="comma list of default, eager, compiled, fused"
    )
    run.add_argument("--data", default=None, help="real (default) or synthetic")
    run.add_argument("--data-dir", default=None, help="dataset folder (default: $BENCH_DATA_DIR)")
    run.add_argument("--epochs", type=int, default=None, help="override the tasks' epochs")
    run.add_argument("--batch-size", default=None, help="comma list; default: the task's")
    run.add_argument("--seeds", default="0", help="comma list of seeds")
    run.add_argument("--train-limit", type=int, default=None, help="use the first N train samples")
    run.add_argument("--test-limit", type=int, default=None, help="use the first N test samples")
    run.add_argument(
        "--window-steps", type=int, default=None, help="steps per timed window (25, or the suite's)"
    )
    run.add_argument(
        "--warmup-windows", type=int, default=None, help="windows excluded as warm-up (default 2)"
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads, and on a cpu run as many cores: fewer than the cores confines the run "
        "to the idlest that many (default: all, or the suite's)",
    )
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    run.add_argument("--out", default="results", help="parent folder of the run directory")
    run.add_argument("--run-id", default=None, help="run directory name (default: a timestamp)")
    run.add_argument("--matrix", default=None, help="JSON file: a list of RunConfig objects")
    run.add_argument("--resume", metavar="RUN_DIR", help="run the cells of RUN_DIR without a row")
    run.add_argument(
        "--retry-failed", action="store_true", help="with --resume: also redo failed cells"
    )
    run.add_argument("--retries", type=int, default=0, help="retry failed/timeout runs N times")
    run.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also write each run's per-epoch metrics as TensorBoard event files under DIR",
    )
    run.set_defaults(handler=command_run)
    commands.add_parser("list", help="list tasks, backends and suites").set_defaults(
        handler=command_list
    )
    commands.add_parser("env", help="print the environment as JSON").set_defaults(
        handler=command_env
    )
    report.add_parser(commands)
    compare.add_parser(commands)
    gate.add_parser(commands)
    baseline.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ResultsError) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
