"""A run's cell as the runner prepares it: the environment its worker process starts with, the
cores it may run on, and the row it begins as. Here, so that the runner need not import the
worker."""

from __future__ import annotations

import os
import time

from backends import framework_environment
from bench.config import RunConfig
from bench.metrics import available_cpus, cpu_count, idle_ticks, pin_threads
from bench.results import empty_row
from bench.tasks import get_task

IDLE_SAMPLE_S = 0.2  # run_cpus: how long it watches the cores (/proc/stat counts 10 ms ticks)
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


def run_cpus(
    config: RunConfig, available: list[int] | None = None, idle: dict[int, int] | None = None
) -> list[int] | None:
    """The cores a cpu run's process is confined to when `threads` asks for fewer than it may
    run on (`available`, default this process's affinity mask): the `threads` of them that were
    idlest over the last IDLE_SAMPLE_S (`idle`: idle ticks per core; default sampled now from
    /proc/stat), ties going to the later cores, so that runs started side by side (the test
    suite's, CI's quick suite beside it) spread over the cores as the scheduler would have
    spread them. None: no confinement (threads unset or not fewer than the cores, or a cuda
    run, whose host threads feed the GPU).

    The thread-count settings alone do not hold every framework to `threads`: measured on a
    2-core VM with threads=1 (the SST-2 transformer; docs/MEASUREMENTS.md, "One thread, one
    core"), JAX's XLA CPU runtime still used up to 1.86 cores' CPU time per wall second and
    Keras-TensorFlow up to 1.48, against torch's 1.0; confined, every framework gets the same."""
    if config.device != "cpu" or not config.threads:
        return None
    cores = available_cpus() if available is None else sorted(available)
    if config.threads >= len(cores):
        return None
    if idle is None:
        idle = idle_since(IDLE_SAMPLE_S)
    order = sorted(cores, key=lambda core: (idle.get(core, 0), core), reverse=True)
    return sorted(order[: config.threads])


def idle_since(seconds: float) -> dict[int, int]:
    """Each core's idle ticks over the next `seconds` (empty without /proc/stat)."""
    before = idle_ticks()
    time.sleep(seconds)
    after = idle_ticks()
    if before is None or after is None:
        return {}
    return {core: after[core] - before.get(core, after[core]) for core in after}


def confine(config: RunConfig) -> list[int] | None:
    """Confine this process, every thread of it and every thread it starts later, to
    run_cpus(config); the cores, or None where it runs unconfined. Called by the worker before
    any framework is imported."""
    cpus = run_cpus(config)
    if cpus is not None:
        pin_threads(cpus)
    return cpus


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
