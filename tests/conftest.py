"""Test-run order (the longest test files first), and the backend probe the contract and parity
tests share.

`make test` runs the files on TEST_JOBS pytest-xdist workers (--dist loadfile: a file's tests
share their probe processes, so a file is the unit), which hand out files in collection order.
A long file handed out last keeps one worker busy while the other idles; longest first
(the longest-processing-time rule) keeps both busy to the end. The order below is from
`pytest --durations` on the CI machine class (2 cores, 2026-12-01); files not named keep
their own order after these. Order only: which tests run, and what they check, is unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from reference import THREADS

from bench.cell import worker_environment
from bench.config import RunConfig

HERE = Path(__file__).resolve().parent

# roughly how long each file took on one worker of CI's pool (default and slow tests together),
# longest first
LONGEST_FIRST = (
    # ~350 CPU-s (2026-12-02): one probe process per backend, every task, for the contract and
    # parity tests
    "test_backend_contract.py",
    "test_keras_windows.py",  # ~100 s: one probe per Keras backend, every mode
    "test_faults.py",  # ~140 s with slow: the thirty-cell drill
    "test_transformer_smoke.py",  # ~110 s (slow): both transformers on every backend
    "test_cli.py",  # ~130 s with slow: ResNet-18 through bench run on every backend
    "test_staging.py",
    "test_padding_mask.py",
    "test_keras_backend.py",
)
# last: its probes are the contract file's (the backend_probe cache below), which the other
# worker has made by the time a worker reaches it
LAST = ("test_parity.py",)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    rank |= {name: len(LONGEST_FIRST) + 1 + index for index, name in enumerate(LAST)}
    # sorted() is stable: within a file, and among the files not named, the order is pytest's
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


@pytest.fixture(scope="session")
def backend_probe(tmp_path_factory):
    """One backend through tests/contract_probe.py, once per test session: (the contract's
    JSON report, the parity arrays). The contract and the parity tests judge the same probe
    (each task's build and compilation is its cost), so it runs once per backend for both
    files, also when they are on two pytest-xdist workers: the results are kept in the
    session's folder, which the workers share, under a lock per backend."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's, shared by its workers
    folder = root / "backend-probes"
    folder.mkdir(exist_ok=True)

    def run(name: str) -> tuple[dict, dict]:
        out, report = folder / f"{name}.npz", folder / f"{name}.json"
        with FileLock(str(folder / f"{name}.lock")):
            if not report.exists():
                config = RunConfig(task="mnist_cnn", backend=name, threads=THREADS)
                env = worker_environment(config)
                command = [sys.executable, str(HERE / "contract_probe.py"), name, str(out)]
                result = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=900
                )
                lines = result.stdout.strip().splitlines()
                outcome = {"returncode": result.returncode, "stderr": result.stderr[-3000:]}
                if result.returncode == 0:
                    outcome["probe"] = json.loads(lines[-1])
                report.write_text(json.dumps(outcome))
        outcome = json.loads(report.read_text())
        assert outcome["returncode"] == 0, outcome["stderr"]
        return outcome["probe"], dict(np.load(out))

    return run
