"""What a comparison's arms are: a configuration and a revision of the code to run it with.

    backend=jax                 this checkout, the row's configuration with backend jax
    rev=HEAD~1                  revision HEAD~1 (a git worktree), the row's configuration
    rev=main,mode=compiled      both
    slowdown=0.05               test hook: this arm's windows take 5% longer (bench/hooks.py)
    slowdown=0.05,slowdown_backend=torch    the same in its torch rows only

Keys: rev, backend, mode, precision, threads, batch_size, window_steps, slowdown,
slowdown_backend. A revision is
checked out once as a detached worktree under the cache (`<cache>/compare/src/<commit>`); it runs
with this checkout's Python unless its dependency list differs (pyproject.toml's
`project.dependencies` and `optional-dependencies`), and then with a venv of its own, cached by
the hash of that list (`<cache>/compare/venv/<hash>`; the `dev` extra, test and lint tools,
is not in it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import UsageError
from bench.hooks import SLOWDOWN_BACKEND_VARIABLE, SLOWDOWN_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
CONFIG_KEYS = {
    "backend": str,
    "mode": str,
    "precision": str,
    "threads": int,
    "batch_size": int,
    "window_steps": int,
}
KEYS = ("rev", *CONFIG_KEYS, "slowdown", "slowdown_backend")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison."""

    spec: str  # as given, e.g. "rev=HEAD~1,mode=compiled"
    rev: str | None = None  # None: this checkout
    settings: dict = field(default_factory=dict)  # RunConfig fields this arm sets
    env: dict = field(default_factory=dict)  # environment of this arm only (test hooks)

    @property
    def label(self) -> str:
        return self.spec or "this checkout"


def parse_arm(spec: str) -> Arm:
    """An arm from `key=value,key=value` (see the module docstring); "" or "." is this checkout
    as the row configures it."""
    rev, settings, env = None, {}, {}
    for part in [p for p in spec.split(",") if p.strip() and p.strip() != "."]:
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise UsageError(f"arm {spec!r}: expected key=value, got {part!r}")
        if key == "rev":
            rev = value
        elif key == "slowdown":
            try:
                slowdown = float(value)
            except ValueError:
                slowdown = -1.0
            if not 0 <= slowdown <= 10:
                raise UsageError(f"arm {spec!r}: slowdown must be a number from 0 to 10")
            env[SLOWDOWN_VARIABLE] = value
        elif key == "slowdown_backend":
            env[SLOWDOWN_BACKEND_VARIABLE] = value
        elif key in CONFIG_KEYS:
            try:
                settings[key] = CONFIG_KEYS[key](value)
            except ValueError:
                raise UsageError(f"arm {spec!r}: {key} must be an integer, got {value!r}") from None
        else:
            raise UsageError(f"arm {spec!r}: unknown key {key!r}; keys: {', '.join(KEYS)}")
    return Arm(spec=spec if spec != "." else "", rev=rev, settings=settings, env=env)


def arm_names(arms: list[Arm]) -> list[str]:
    """Short names: what distinguishes each arm from the others (e.g. `jax` and `torch` for
    backend=jax, backend=torch; `HEAD~1` and `this checkout`)."""
    keys = sorted({k for arm in arms for k in (*arm.settings, *arm.env, "rev")})
    differing = [
        k
        for k in keys
        if len({str({**arm.settings, **arm.env, "rev": arm.rev}.get(k)) for arm in arms}) > 1
    ]
    names = []
    for arm in arms:
        values = {**arm.settings, **arm.env, "rev": arm.rev}
        parts = []
        for key in differing:
            value = values.get(key)
            if key == "rev":
                parts.append(value or "this checkout")
            elif key == SLOWDOWN_VARIABLE:
                parts.append(f"slowdown {value}" if value else "no slowdown")
            elif key == SLOWDOWN_BACKEND_VARIABLE:
                parts.append(f"on {value}" if value else "on every backend")
            elif value is not None:
                parts.append(str(value))
        names.append(" ".join(parts) or arm.label)
    if len(set(names)) < len(names):  # identical arms (an A/A comparison): number them
        names = [f"{name} #{index + 1}" for index, name in enumerate(names)]
    return names


@dataclass(frozen=True)
class Checkout:
    """The code an arm runs: a folder with bench/ and backends/, and the Python to run it."""

    path: Path
    python: str
    commit: str | None  # None: this checkout as it is (uncommitted changes included)

    @property
    def serves(self) -> bool:
        """Whether this code has the serving worker (bench/serve.py) `bench compare` needs."""
        return (self.path / "bench" / "serve.py").is_file()


def git(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UsageError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def dependency_hash(pyproject: Path) -> str:
    """The hash of a pyproject.toml's dependency lists: equal hashes run in one environment.
    The `dev` extra (test and lint tools) is left out: an arm's venv does not install it
    (own_venv: `[all]`) and no worker imports it, so a new test tool reuses this Python."""
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    optional = project.get("optional-dependencies", {})
    listed = {
        "dependencies": project.get("dependencies", []),
        "optional": {extra: pins for extra, pins in optional.items() if extra != "dev"},
        "python": project.get("requires-python"),
    }
    return hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()[:16]


def resolve_commit(rev: str) -> str:
    return git("rev-parse", "--verify", f"{rev}^{{commit}}")


def checkout(rev: str | None, cache: Path, log=None) -> Checkout:
    """This checkout (rev None) or a worktree of `rev`, with the Python its dependencies need
    (this one's for a revision that predates the serving worker: it is never run)."""
    if rev is None:
        return Checkout(ROOT, sys.executable, None)
    commit = resolve_commit(rev)
    path = cache / "compare" / "src" / commit
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "prune")
        git("worktree", "add", "--detach", "--force", str(path), commit)
    code = Checkout(path, sys.executable, commit)
    pyproject = path / "pyproject.toml"
    # a revision without the serving worker is never run interleaved: no venv for it (minutes of pip)
    if code.serves and pyproject.is_file():
        wanted = dependency_hash(pyproject)
        if wanted != dependency_hash(ROOT / "pyproject.toml"):
            python = own_venv(path, cache / "compare" / "venv" / wanted, log)
            code = dataclasses.replace(code, python=str(python))
    return code


# The packages a worker imports from its checkout (the frameworks' come compiled by pip)
WORKER_PACKAGES = ("bench", "backends")


def compile_bytecode(checkout_: Checkout, log=None) -> None:
    """Writes the checkout's bytecode (`__pycache__`) with the Python its workers run, so that
    every worker of every arm loads its modules from bytecode that is the same, byte for byte,
    wherever the checkout lies, instead of compiling them from source at import.

    Why (docs/MEASUREMENTS.md, "The keras-torch false alarm"): a worker compiles every module
    from source where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machines), and
    the compiler's allocations follow the source text, comments included; the bytecode files'
    sizes follow the path they were compiled at, which is embedded in them. Either leaves glibc's
    heap laid out differently for everything allocated later, the frameworks' tensors
    included, and keras-torch's step time has two levels (about 28 and 37 ms per step on the
    MNIST CNN here) that such a layout picks: a comment added at the end of one module, no
    bytecode changed, put every keras-torch worker of that revision on the slower one, and
    bytecode compiled at each arm's own path put the base's workers there in an A/A gate. So
    each package is compiled with its own name in place of its path (`-d`): the files are the
    same for the same code in every checkout. Python's import puts the real path back into the
    code objects (tracebacks show it). Every file is compiled anew (`-f`), so that none keeps
    another path."""
    for package in WORKER_PACKAGES:
        folder = str(checkout_.path / package)
        command = [checkout_.python, "-m", "compileall", "-q", "-f", "-d", package, folder]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 and log:  # a read-only tree: its workers compile at import
            print(
                f"compare: could not compile {folder}'s bytecode: {result.stdout[-500:]}", file=log
            )


def own_venv(source: Path, venv: Path, log=None) -> Path:
    """A venv with `source`'s dependencies (`pip install -e source[all]`), built once per hash."""
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.exists():
        return python
    if log:
        print(f"compare: building a venv for {source.name[:12]}'s dependencies in {venv}", file=log)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{source}[all]"], check=True)
    stamp.touch()
    return python


def arm_environment(arm: Arm, checkout_: Checkout, base: dict[str, str]) -> dict[str, str]:
    """An arm's process environment: `base` (the worker's), its code first on the path, its
    test hooks, and none of another arm's."""
    hooks = (SLOWDOWN_VARIABLE, SLOWDOWN_BACKEND_VARIABLE)
    env = {k: v for k, v in base.items() if k not in hooks}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(checkout_.path), *filter(None, [base.get("PYTHONPATH")])]
    )
    env.update(arm.env)
    return env


def with_settings(config, arm: Arm):
    """The row's RunConfig with the arm's settings."""
    return dataclasses.replace(config, **arm.settings)
