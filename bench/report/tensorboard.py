"""TensorBoard export: each cell's per-epoch history as event files (needs tensorboardX)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from bench.report.derive import ReportError
from bench.report.loading import read_history
from bench.results import number

TENSORBOARD_SCALARS = (
    ("test/accuracy", "test_accuracy"),
    ("test/loss", "test_loss"),
    ("train/loss", "train_loss"),
    ("time/train_time_s", "train_time_s"),
    ("time/eval_s", "eval_s"),
)


def import_tensorboardx():
    """tensorboardX, imported without letting it import a framework.

    tensorboardX tries `import torch` when imported (to accept torch tensors, which this module
    never passes); that would cost seconds and break the rule that bench imports no framework.
    A None entry in sys.modules makes such an import fail as if the framework were absent; the
    entries are removed afterwards, so a later import elsewhere works as usual.
    """
    from backends import FRAMEWORK_MODULES  # the registry, framework-free

    blocked = [name for name in FRAMEWORK_MODULES if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import tensorboardX
    except ImportError as error:
        raise ReportError(
            f"TensorBoard export needs tensorboardX ({error}): pip install tensorboardX"
        ) from None
    finally:
        for name in blocked:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return tensorboardX


def export_tensorboard(run_dir: Path, log_dir: Path, cell_ids: Iterable[str] | None = None) -> int:
    """Each cell's history.csv as event files in log_dir/<run-id>/<cell_id>/; returns the count.

    One point per epoch (step = epoch). Each point's wall time is the run's start plus the
    cumulative training time, so TensorBoard's "Relative" axis shows training seconds.
    Event files of an earlier export to the same folder are replaced. cell_ids: only these
    cells (e.g. the one that just finished); None: every cell with a history.
    """
    run_dir, log_dir = Path(run_dir), Path(log_dir)
    if not run_dir.is_dir():
        raise ReportError(f"no such run directory: {run_dir}")
    tensorboardx = import_tensorboardx()
    written = 0
    wanted = None if cell_ids is None else set(cell_ids)
    for history_path in sorted((run_dir / "cells").glob("*/history.csv")):
        if wanted is not None and history_path.parent.name not in wanted:
            continue
        history = read_history(history_path)
        if not history:
            continue
        cell_log_dir = log_dir / run_dir.name / history_path.parent.name
        for old in cell_log_dir.glob("events.out.tfevents.*"):
            old.unlink()
        start = history_path.stat().st_mtime - (number(history[-1].get("train_time_s")) or 0.0)
        writer = tensorboardx.SummaryWriter(logdir=str(cell_log_dir))
        try:
            for entry in history:
                walltime = start + (number(entry.get("train_time_s")) or 0.0)
                for tag, key in TENSORBOARD_SCALARS:
                    value = number(entry.get(key))
                    if value is not None:
                        writer.add_scalar(tag, value, int(entry["epoch"]), walltime=walltime)
        finally:
            writer.close()
        written += 1
    return written
