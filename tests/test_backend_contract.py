"""The Backend contract, the same for every installed backend (backends/base.py).

Each backend runs in a fresh process with the worker's environment (tests/contract_probe.py,
whose run tests/test_parity.py judges too): it builds every task (the registry's but the heavy
ones, each model once, and tests/reference.py's TEST_TASKS) from the canonical weights and gives
them back unchanged; its logits match the float64 numpy reference (tests/reference.py) to 1e-4; its first
step's loss is the loss of the harness's first permuted batch; training lowers the loss and
run_steps gives a float; evaluation returns floats; steps past the epoch, tf32 on a cpu and cuda
without a GPU are refused with the reason; bf16 trains (the MNIST CNN and the reduced ResNet,
BatchNorm included). Framework-specific behaviour (layouts, modes, precision flags) stays in the
per-backend tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS, missing_modules
from bench.metrics import nvml_devices

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference import probe_tasks  # noqa: E402

TASKS = probe_tasks()  # the registry's tasks and the test tasks, as the probe runs them
INSTALLED = [name for name in BACKENDS if not missing_modules(name)]


@pytest.fixture(scope="module", params=INSTALLED)
def contract(request, backend_probe) -> tuple[str, dict]:
    report, _ = backend_probe(request.param)  # tests/conftest.py: one probe for parity too
    return request.param, report


def test_identity_and_default_mode(contract):
    name, probe = contract
    assert probe["framework"] == name
    assert probe["default_mode"] in ("eager", "compiled", "fused")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_builds_from_the_canonical_weights_and_matches_numpy(contract, task):
    _, probe = contract
    result = probe["tasks"][task]
    assert result["params"] == result["expected_params"]
    assert result["logits_dtype"] == "float32"
    assert result["logits_relative_error"] < 1e-4, result["logits_relative_error"]
    assert result["weight_keys_in_order"] and result["weights_unchanged"]
    assert isinstance(result["window_steps"], int) and result["window_steps"] >= 1
    assert result["mode"] == probe["default_mode"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_its_first_permuted_batch_and_evaluates(contract, task):
    _, probe = contract
    step = probe["first_steps"][task]
    assert step["loss"] == pytest.approx(step["expected_loss"], rel=1e-4)
    assert step["weights_moved"]
    assert 0.0 <= step["accuracy"] <= 1.0 and np.isfinite(step["eval_loss"])


def test_the_first_step_trains_the_permuted_batch_and_training_lowers_the_loss(contract):
    _, probe = contract
    training = probe["training"]
    assert training["first_loss_is_float"]
    assert training["first_loss"] == pytest.approx(training["expected_first_loss"], rel=1e-4)
    assert training["weights_moved"]
    assert training["last_loss"] < training["first_loss"]
    assert training["eval_types"] == ["float", "float"]
    assert 0.0 <= training["accuracy"] <= 1.0 and np.isfinite(training["eval_loss"])
    assert training["memory_peak_bytes"] is None  # no device allocator on the cpu


def test_steps_past_the_epoch_are_refused(contract):
    _, probe = contract
    assert (
        probe["training"]["past_the_epoch"]
        and "past the epoch" in probe["training"]["past_the_epoch"]
    )


def test_tf32_on_the_cpu_is_unsupported_with_the_reason(contract):
    _, probe = contract
    assert probe["tf32_on_cpu"].startswith("Unsupported: tf32")


@pytest.mark.skipif(bool(nvml_devices()), reason="a GPU is here")
def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run(contract):
    _, probe = contract
    refusal = probe["cuda_without_gpu"]
    assert refusal and refusal.startswith("RuntimeError:") and "no GPU" in refusal, refusal


def test_bf16_trains(contract):
    _, probe = contract
    assert all(np.isfinite(probe["bf16_losses"]))
