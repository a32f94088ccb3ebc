"""The backends by name, and what the rest of the harness may know of the frameworks.

Framework-free: nothing here imports a framework, so the runner, the results and the report can
read it. Everything a file outside `backends/` needs to know about a framework (its package
names, its environment variables, what a backend needs installed) is named here and only here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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

# Distributions whose versions describe a run's frameworks (env.json), read from metadata.
FRAMEWORK_PACKAGES = ("torch", "jax", "jaxlib", "flax", "optax", "keras", "tensorflow")
FRAMEWORK_PACKAGES += ("tensorflow-cpu",)
# Top-level modules of the frameworks: what no harness process outside a run may import.
FRAMEWORK_MODULES = ("torch", "jax", "jaxlib", "flax", "optax", "keras", "tensorflow")


def missing_modules(name: str) -> list[str]:
    """The modules backend `name` needs that are not installed (found without importing)."""
    return [m for m in BACKENDS[name].requires if importlib.util.find_spec(m) is None]


def load_backend_class(name: str) -> type:
    entry = BACKENDS[name]
    return getattr(importlib.import_module(entry.module), entry.class_name)


def create_backend(config):
    """The backend a RunConfig names, made for its task (the task reaches the backend once)."""
    from bench.tasks import get_task

    return load_backend_class(config.backend)(config, get_task(config.task))


def framework_environment(backend: str, device: str, threads: int) -> dict[str, str]:
    """The frameworks' own settings for a run's process, set before anything is imported.

    Every framework's are set in every run, whichever backend it is, so that no framework runs
    on its defaults beside another that does not; then the backend's own (KERAS_BACKEND)."""
    env = {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX: allocate as needed, so peaks are real
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow: the same
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": str(threads),
    }
    if device == "cpu":  # no framework may touch a GPU in a cpu run
        env.update({"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    else:  # and a cuda run fails rather than falls back to the cpu
        env["JAX_PLATFORMS"] = "cuda"
    env.update(BACKENDS[backend].environment)
    return env


def compile_cache_environment(folder: str) -> dict[str, str]:
    """Where the compilers keep their on-disk caches (inductor, Triton): a run's own folder,
    so that no run starts warm from another's compilation."""
    return {
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(folder, "triton"),
    }
