"""The GPU path's fairness, checked on the cpu wherever its logic runs there.

- Keras' fit is handed batches that are already framework device arrays (never numpy, never a
  host-side slice of the epoch), and every backend stages the dataset as one copy;
- the bf16 policy's mechanism string names the LSTM kernel and its dtype, for every backend;
- the worker's memory columns: the allocator's peak is reset after setup, read before each
  evaluation (so evaluation's peak is out), and for a framework that cannot reset (JAX) read
  before the first evaluation only; the resident data size sits beside it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS, missing_modules
from bench import worker
from bench.cell import worker_environment
from bench.config import RunConfig
from bench.results import empty_row
from bench.tasks import TASKS

HERE = Path(__file__).resolve().parent
INSTALLED = [name for name in BACKENDS if not missing_modules(name)]
DEVICE_ARRAY_TYPES = {
    "keras-jax": "jaxlib._jax.ArrayImpl",
    "keras-torch": "torch.Tensor",
    "keras-tensorflow": "tensorflow.python.framework.ops.EagerTensor",
}
LABEL_BYTES = {"torch": 8}  # torch's cross-entropy takes int64 labels; the others hold int32


def staging(backend: str, task: str, precision: str = "fp32") -> dict:
    env = worker_environment(RunConfig(task=task, backend=backend, threads=1))
    result = subprocess.run(
        [sys.executable, str(HERE / "staging_probe.py"), backend, task, precision],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mnist_staging() -> dict[str, dict]:
    return {name: staging(name, "mnist_cnn") for name in INSTALLED}


@pytest.mark.parametrize("backend", [name for name in INSTALLED if name.startswith("keras-")])
def test_keras_fit_is_handed_device_batches_in_the_harness_order(backend, mnist_staging):
    probe = mnist_staging[backend]
    batches = probe["fit_batches"]
    assert len(batches) == 6, batches  # one epoch in two windows, 2 + 4 steps: 6 batches
    expected = DEVICE_ARRAY_TYPES[backend]
    for batch in batches:
        assert all(kind == expected for kind in batch["types"]), batch
        assert batch["shape"][0] == probe["batch_size"]
        assert batch["in_order"], batch  # the harness's permuted batches, one after another
    if backend == "keras-tensorflow":
        # tf.data yields the step's sample indices; the model gathers them on the device
        assert probe["model_class"] == "GatheringModel"
        assert all(batch["shape"] == [probe["batch_size"]] for batch in batches)
    else:  # the images themselves, gathered on the device: (batch, 28, 28, 1)
        assert all(batch["shape"] == [probe["batch_size"], 28, 28, 1] for batch in batches)
    assert "gathered on the device" in probe["mechanism"]


@pytest.mark.parametrize("backend", INSTALLED)
def test_every_backend_stages_one_copy_of_the_data(backend, mnist_staging):
    probe = mnist_staging[backend]
    label_bytes = LABEL_BYTES.get(backend, 4)
    assert probe["resident_bytes"] == probe["inputs_bytes"] + probe["labels"] * label_bytes
    assert probe["epoch_copies"] == []


def test_every_backend_trains_the_same_steps_from_its_staged_data(mnist_staging):
    losses = {name: probe["losses"] for name, probe in mnist_staging.items()}
    reference = next(iter(losses.values()))
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=1e-3, err_msg=name)


LSTM_KERNEL_WORDS = {  # on the cpu, what each backend's bf16 LSTM must say it ran
    "torch": ("PyTorch's CPU LSTM", "bf16, cast from fp32 weights outside autocast"),
    "jax": ("lax.scan loop", "bf16 compute, fp32 weights"),
    "keras-tensorflow": ("tf.while_loop", "bf16 compute, fp32 variables"),
    "keras-jax": ("lax.scan", "bf16 compute, fp32 variables"),
    "keras-torch": ("Keras' torch LSTM loop", "bf16 compute, fp32 variables"),
}


@pytest.mark.parametrize("backend", INSTALLED)
def test_the_bf16_lstm_mechanism_names_its_kernel_and_dtype(backend, mnist_staging):
    probe = staging(backend, "sst2_lstm", "bf16")
    kernel, dtype = LSTM_KERNEL_WORDS[backend]
    lstm_part = [part for part in probe["mechanism"].split("; ") if part.startswith("LSTM: ")]
    assert len(lstm_part) == 1, probe["mechanism"]
    assert kernel in lstm_part[0] and dtype in lstm_part[0], lstm_part[0]
    assert all(np.isfinite(probe["losses"]))
    assert "LSTM" not in mnist_staging[backend]["mechanism"]  # no LSTM, no LSTM part


# --- the worker's memory columns, with a fake backend ----------------------------------------


class FakeBackend:
    """A backend whose allocator peak is scripted: training steps reach `TRAIN_PEAK`, evaluation
    reaches `EVAL_PEAK` (higher, as a batch of 1,024 can), setup `SETUP_PEAK`."""

    framework = "fake"
    mode = "eager"
    mechanism = "before setup"
    window_steps = 1
    SETUP_PEAK, TRAIN_PEAK, EVAL_PEAK = 500 << 20, 300 << 20, 900 << 20
    resets = True
    calls: list[str] = []

    def __init__(self, config: RunConfig, task) -> None:
        self.config, self.task = config, task
        self.peak = 0
        FakeBackend.calls = []

    def versions(self) -> dict[str, str]:
        return {"fake": "1"}

    def device_name(self) -> str:
        return "fake device"

    def setup(self, weights, data) -> None:
        self.peak = self.SETUP_PEAK
        self.resident = data.x_train.nbytes + data.x_test.nbytes
        self.mechanism = "after setup"

    def data_resident_bytes(self) -> int:
        return self.resident

    def reset_memory_peak(self) -> bool:
        FakeBackend.calls.append("reset")
        if self.resets:
            self.peak = 0
        return self.resets

    def memory_peak_bytes(self) -> int:
        FakeBackend.calls.append("read")
        return self.peak

    def param_count(self) -> int:
        return 1

    def begin_epoch(self, permutation, learning_rate=None, x_train=None) -> None:
        pass

    def run_steps(self, first_step: int, num_steps: int) -> float:
        self.peak = max(self.peak, self.TRAIN_PEAK)
        return 1.0

    def evaluate(self) -> tuple[float, float]:
        FakeBackend.calls.append("evaluate")
        self.peak = max(self.peak, self.EVAL_PEAK)
        return 0.5, 1.0


class FakeJaxLike(FakeBackend):
    resets = False


@pytest.mark.parametrize(
    ("backend_class", "expected_peak"),
    [(FakeBackend, FakeBackend.TRAIN_PEAK), (FakeJaxLike, FakeBackend.SETUP_PEAK)],
)
def test_the_worker_reports_training_peak_beside_the_resident_data(
    backend_class, expected_peak, monkeypatch, tmp_path
):
    sys.path.insert(0, str(HERE))
    from reference import tiny_dataset

    task = TASKS["mnist_cnn"]
    data = dataclasses.replace(tiny_dataset(task, train=task.batch_size * 4), synthetic=False)
    monkeypatch.setattr(worker.datasets, "load", lambda *args, **kwargs: data)
    monkeypatch.setattr(worker, "load_backend_class", lambda name: backend_class)
    config = RunConfig(task="mnist_cnn", backend="torch", epochs=3, window_steps=1, threads=1)
    row = worker.base_row(config)
    worker.run(config, tmp_path, row, worker.Progress(None))
    # setup's peak (500 MiB) and evaluation's (900 MiB) are out where the framework can reset;
    # without a reset, the first reading (before the first evaluation) is the only one taken
    assert row["peak_alloc_mb"] == expected_peak / 2**20
    assert row["data_resident_mb"] == (data.x_train.nbytes + data.x_test.nbytes) / 2**20
    assert row["mechanism"] == "after setup"
    if backend_class.resets:
        assert FakeBackend.calls == ["reset", *(["read", "evaluate", "reset"] * 3)]
    else:  # the reset said no: only the reading before the first evaluation counts
        assert FakeBackend.calls == ["reset", "read", "evaluate", "reset", "evaluate", "evaluate"]
    assert row["nvml_source"] is None and row["peak_nvml_mb"] is None  # no GPU here


def test_a_cpu_row_has_no_device_memory_but_its_resident_data(tmp_path):
    assert "data_resident_mb" in empty_row() and "nvml_source" in empty_row()
