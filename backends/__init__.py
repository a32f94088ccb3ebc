"""Framework adapters, one small file each, all behind the same interface.

This package's __init__ imports no framework: backends are named in `backends.registry` and
imported lazily, by the worker, inside the run's own process (after it has set the
environment).

The interface every backend class implements (the worker never branches on the framework):

    Backend(config: RunConfig)         set precision flags and threads; raise Unsupported for
                                       a device / mode / precision the framework cannot run
    framework: str                     e.g. "torch"
    mode: str                          the concrete mode ("default" resolved)
    mechanism: str                     what that mode is in this framework, e.g. "torch.compile"
    versions() -> dict[str, str]       framework package versions
    device_name() -> str
    setup(task, weights, data)         build the IR, load the canonical weights, data to device
                                       (one copy; each step gathers its batch there); may
                                       refine `mechanism` (what compile and kernel choice gave)
    begin_epoch(permutation)           the harness's sample order for this epoch (int32 array)
    run_steps(first_step, num_steps)   train steps [first, first + num) of the epoch; returns the
                                       last step's loss as a float, with the device synchronized
    evaluate() -> (accuracy, loss)     on the test split, not inside any timed step window
    predict(x) -> logits               numpy in, numpy out (parity tests)
    get_weights() -> weights           canonical layout (parity tests)
    memory_peak_bytes() -> int | None  the framework allocator's peak on the device, if any
    reset_memory_peak() -> bool        start that peak again from what is allocated now; False
                                       where the framework cannot (JAX): then the worker reads
                                       it once, before the first evaluation
    data_resident_bytes() -> int       the dataset as setup placed it: one copy on the device
    param_count() -> int               trainable parameters as the framework counts them
    window_steps: int | None           optional: steps per timed window this backend needs
                                       (e.g. whole epochs); None: the run's --window-steps
"""

from __future__ import annotations

from backends.registry import (
    BACKENDS,
    FRAMEWORK_MODULES,
    FRAMEWORK_PACKAGES,
    BackendEntry,
    compile_cache_environment,
    framework_environment,
    load_backend_class,
    missing_modules,
)

__all__ = [
    "BACKENDS",
    "FRAMEWORK_MODULES",
    "FRAMEWORK_PACKAGES",
    "BackendEntry",
    "Unsupported",
    "compile_cache_environment",
    "framework_environment",
    "load_backend_class",
    "missing_modules",
]


class Unsupported(Exception):
    """This backend cannot run this configuration: the worker writes a `skipped` row with why."""
