"""GPU checks: every installed backend on cuda, real MNIST, each mode and precision; cuda parity.

Marked `gpu`, so the default run leaves them out; `make test-gpu` runs them. On the lent GPU
machine (no venv, no network; see DEVELOPERS.md) stage first and run without the venv:

    ../shared/gpu/stage.sh mnist sst2          # here, once
    source .gpu/setup.sh && make test-gpu NOVENV=1 PYTHON=python3   # there

On a machine without an NVIDIA GPU they skip, saying so. What they check:
  - each backend x mode runs one epoch of the real MNIST CNN on the GPU: status ok (or skipped
    with a reason for a mode the framework lacks), the GPU's name in the row, the allocator's
    peak memory recorded, test accuracy >= 0.97 after one epoch;
  - bf16 and tf32 train as well;
  - on the GPU in fp32 (TF32 off), logits and five step losses agree with torch's as on the CPU.
The step times these runs print are not asserted: `make bench DEVICE=cuda` measures speed.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS
from bench.cell import worker_environment
from bench.config import RunConfig
from bench.metrics import nvml_devices

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference import probe_tasks  # noqa: E402

TASKS = probe_tasks()  # what the parity probe runs (heavy registry tasks only when named)
FRAMEWORK_MODULES = {"torch": ["torch"], "jax": ["flax", "optax"]}
FRAMEWORK_MODULES |= {
    "keras-tensorflow": ["keras", "tensorflow"],
    "keras-jax": ["keras", "jax"],
    "keras-torch": ["keras", "torch"],
}


def installed(backend: str) -> bool:
    modules = FRAMEWORK_MODULES.get(backend, [backend])
    return all(importlib.util.find_spec(m) is not None for m in modules)


INSTALLED = [name for name in BACKENDS if installed(name)]


@pytest.fixture(scope="module", autouse=True)
def require_gpu():
    if not nvml_devices():
        pytest.skip("no NVIDIA GPU here (NVML finds none): run `make test-gpu` on a GPU machine")


@pytest.fixture(scope="module")
def data_dir() -> str:
    folder = os.environ.get("BENCH_DATA_DIR")
    if not folder or not (Path(folder) / "mnist").is_dir():
        pytest.skip("real MNIST is needed: set BENCH_DATA_DIR (on the GPU machine: .gpu/setup.sh)")
    return folder


def bench_run(tmp_path: Path, *args: str) -> list[dict[str, str]]:
    """`bench run` on cuda into tmp_path; the rows of its results.csv."""
    command = [sys.executable, "-m", "bench", "run", "--device", "cuda", "--out", str(tmp_path)]
    command += ["--run-id", "gpu", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3000)
    print(result.stdout[-6000:])
    rows_file = tmp_path / "gpu" / "results.csv"
    assert rows_file.exists(), result.stderr[-3000:]
    with open(rows_file, newline="") as handle:
        return list(csv.DictReader(handle))


def check_rows(rows: list[dict[str, str]], minimum_accuracy: float) -> None:
    failures = []
    for row in rows:
        cell, status = row["cell_id"], row["status"]
        if status == "skipped" and row["error"]:
            continue  # a mode the framework lacks, with its reason
        if status != "ok":
            failures.append(f"{cell}: {status}: {row['error'][-500:]}")
            continue
        if not row["device_name"] or "cpu" in row["device_name"].lower():
            failures.append(f"{cell}: device_name {row['device_name']!r} is not a GPU")
        if not row["peak_alloc_mb"] or float(row["peak_alloc_mb"]) <= 0:
            failures.append(f"{cell}: no allocator peak recorded")
        if float(row["final_test_accuracy"]) < minimum_accuracy:
            failures.append(f"{cell}: test accuracy {row['final_test_accuracy']}")
    assert not failures, "\n".join(failures)
    assert any(row["status"] == "ok" for row in rows)


def test_every_backend_and_mode_trains_mnist_on_the_gpu(tmp_path, data_dir):
    rows = bench_run(
        tmp_path,
        *("--tasks", "mnist_cnn", "--backends", ",".join(INSTALLED)),
        *("--mode", "default,eager,compiled,fused", "--epochs", "1", "--data-dir", data_dir),
    )
    assert len(rows) == 4 * len(INSTALLED)
    check_rows(rows, minimum_accuracy=0.97)


def test_bf16_and_tf32_train_on_the_gpu(tmp_path, data_dir):
    rows = bench_run(
        tmp_path,
        *("--tasks", "mnist_cnn", "--backends", ",".join(INSTALLED)),
        *("--precision", "bf16,tf32", "--epochs", "1", "--data-dir", data_dir),
    )
    check_rows(rows, minimum_accuracy=0.97)


def test_the_text_task_trains_on_the_gpu(tmp_path, data_dir):
    if not (Path(data_dir) / "sst2").is_dir():
        pytest.skip("SST-2 is not staged")
    rows = bench_run(
        tmp_path,
        *("--tasks", "sst2_lstm", "--backends", ",".join(INSTALLED)),
        *("--epochs", "1", "--data-dir", data_dir),
    )
    check_rows(rows, minimum_accuracy=0.75)


def probe(backend: str, tmp_path: Path, mode: str = "default") -> dict[str, np.ndarray]:
    out = tmp_path / f"{backend}-{mode}.npz"
    env = worker_environment(RunConfig(task="mnist_cnn", backend=backend, device="cuda"))
    result = subprocess.run(
        [sys.executable, str(HERE / "parity_probe.py"), backend, str(out), mode, "cuda"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("backend", [name for name in INSTALLED if name != "torch"])
def test_cuda_parity_with_torch(backend, tmp_path):
    if "torch" not in INSTALLED:
        pytest.skip("torch is the reference and is not installed")
    reference, other = probe("torch", tmp_path), probe(backend, tmp_path)
    failures = []
    for task in TASKS:
        expected, got = reference[f"{task}/logits"], other[f"{task}/logits"]
        relative = np.abs(got - expected).max() / np.abs(expected).max()
        if not relative < 1e-4:
            failures.append(f"{task}: logits differ from torch's by {relative:.2e} (relative)")
        expected, got = reference[f"{task}/losses"], other[f"{task}/losses"]
        relative = np.abs(got - expected) / np.abs(expected)
        if not (relative < 1e-3).all():
            failures.append(f"{task}: step losses {got} vs torch {expected} (rel {relative})")
    assert not failures, "\n".join(failures)


def test_torch_fused_cuda_graph_trains_what_eager_trains(tmp_path):
    """The fused mode's captured graph replays exactly the eager step: same five losses."""
    if "torch" not in INSTALLED:
        pytest.skip("torch is not installed")
    eager, fused = probe("torch", tmp_path, "eager"), probe("torch", tmp_path, "fused")
    for task in TASKS:
        got = fused[f"{task}/losses"]  # a fused probe runs one window: its last loss
        expected = eager[f"{task}/losses"][-len(got) :]
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=task)
