"""Framework adapters, one small file each, all behind one interface.

`backends.base` defines it (`Backend`, the protocol the worker uses, and `BackendBase`, what
every adapter shares); `backends.registry` names the backends and everything else the harness
may know of the frameworks. Neither imports a framework: an adapter is imported lazily, by the
worker, inside the run's own process (after it has set the environment).
"""

from __future__ import annotations

from backends.base import Backend, BackendBase, Unsupported
from backends.registry import (
    BACKENDS,
    FRAMEWORK_MODULES,
    FRAMEWORK_PACKAGES,
    BackendEntry,
    compile_cache_environment,
    create_backend,
    framework_environment,
    load_backend_class,
    missing_modules,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendBase",
    "FRAMEWORK_MODULES",
    "FRAMEWORK_PACKAGES",
    "BackendEntry",
    "Unsupported",
    "compile_cache_environment",
    "create_backend",
    "framework_environment",
    "load_backend_class",
    "missing_modules",
]
