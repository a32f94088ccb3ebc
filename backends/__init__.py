"""Framework adapters, one small file each, all behind the same interface.

This package's __init__ imports no framework: backends are named here and imported lazily, by
the worker, inside the run's own process (after it has set the environment).

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

import importlib
import importlib.util
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendEntry:
    module: str
    class_name: str
    environment: dict[str, str] = field(default_factory=dict)  # set before the process starts
    requires: tuple[str, ...] = ()  # the modules it imports: without them it cannot run


BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry("backends.torch_backend", "TorchBackend", requires=("torch",)),
    "jax": BackendEntry("backends.jax_backend", "JaxBackend", requires=("jax", "flax", "optax")),
    "keras-tensorflow": BackendEntry(
        "backends.keras_backend",
        "KerasBackend",
        {"KERAS_BACKEND": "tensorflow"},
        ("keras", "tensorflow"),
    ),
    "keras-jax": BackendEntry(
        "backends.keras_backend", "KerasBackend", {"KERAS_BACKEND": "jax"}, ("keras", "jax")
    ),
    "keras-torch": BackendEntry(
        "backends.keras_backend", "KerasBackend", {"KERAS_BACKEND": "torch"}, ("keras", "torch")
    ),
}


def missing_modules(name: str) -> list[str]:
    """The modules backend `name` needs that are not installed (found without importing)."""
    return [m for m in BACKENDS[name].requires if importlib.util.find_spec(m) is None]


class Unsupported(Exception):
    """This backend cannot run this configuration: the worker writes a `skipped` row with why."""


def load_backend_class(name: str) -> type:
    entry = BACKENDS[name]
    return getattr(importlib.import_module(entry.module), entry.class_name)
