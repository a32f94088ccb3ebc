"""The command line: `bench report RUN_DIR [RUN_DIR ...] [--out DIR] [--tensorboard DIR]`
(also `python -m bench.report`). Exit code 0, or 2 with one line on bad input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.report.comparisons import is_comparison_only
from bench.report.page import build_report, default_out_dir
from bench.report.tensorboard import export_tensorboard
from bench.results import ResultsError, find_run_dirs

DESCRIPTION = (
    "`bench report`: merge run directories into comparison tables, plots and one HTML page."
)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories (results/<run-id>), or a folder holding them (e.g. results/)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: RUN_DIR/report for one run, <common parent>/report for several)",
    )
    parser.add_argument(
        "--tensorboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each cell's per-epoch history as TensorBoard event files under DIR",
    )
    parser.set_defaults(handler=command_report)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`bench report`, for cli.py: report.add_parser(commands)."""
    parser = subparsers.add_parser(
        "report",
        help="comparison tables, plots and an HTML page from run directories",
        description=DESCRIPTION,
    )
    return configure(parser)


def command_report(args: argparse.Namespace) -> int:
    try:
        paths = [Path(path) for path in args.run_dirs]
        comparison_dirs = [path for path in paths if is_comparison_only(path)]
        run_paths = [path for path in paths if path not in comparison_dirs]
        run_dirs = find_run_dirs(run_paths) if run_paths else []
        out = args.out or default_out_dir(run_dirs or comparison_dirs)
        written = build_report(run_dirs, out, comparison_dirs)
        cells = None
        if args.tensorboard:
            cells = sum(export_tensorboard(path, args.tensorboard) for path in run_dirs)
    except ResultsError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    for name in ("markdown", "html", "comparison_csv", "runs_csv", "seeds_csv"):
        if name in written:
            print(f"{name}: {written[name]}")
    print(f"plots: {len(written['plots'])} in {written['html'].parent / 'plots'}")
    summary = {
        "report": str(written["html"]),
        "runs": len(run_dirs),
        "plots": len(written["plots"]),
        "tensorboard_cells": cells,
    }
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench report", description=DESCRIPTION)
    configure(parser)
    return command_report(parser.parse_args(argv))
