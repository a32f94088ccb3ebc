"""A run's cell as the runner prepares it: the environment its worker process starts with, and
the row it begins as. Both here, so that the runner need not import the worker."""

from __future__ import annotations

import os

from backends import framework_environment
from bench.config import RunConfig
from bench.metrics import cpu_count
from bench.results import empty_row
from bench.tasks import get_task

MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def worker_environment(config: RunConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a run's process starts with: set before any framework is imported."""
    env = dict(os.environ if base is None else base)
    threads = config.threads or cpu_count()
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONHASHSEED": str(config.seed),
            "PYTHONUNBUFFERED": "1",
            # glibc malloc: fixed thresholds, at the values its own dynamic adjustment reaches in
            # a long run, the same for every backend (why, measured: results/SCHEMA.md)
            "MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(2 * MALLOC_MMAP_THRESHOLD),
        }
    )
    env.update(framework_environment(config.backend, config.device, threads))
    return env


def base_row(config: RunConfig) -> dict:
    """The row a run begins as: what the config and the task say, before anything is measured."""
    task = get_task(config.task)
    row = empty_row()
    row.update(
        cell_id=config.cell_id,
        task=config.task,
        dataset=task.dataset,
        data=config.data,
        backend=config.backend,
        device=config.device,
        threads=config.threads or cpu_count(),
        precision=config.precision,
        mode=config.mode,
        batch_size=config.batch_size or task.batch_size,
        seed=config.seed,
        target_accuracy=task.target_accuracy if config.data == "real" else None,
        flops_per_sample=task.flops_per_sample,
    )
    return row
