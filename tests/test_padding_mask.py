"""The padding mask is honoured, in the numpy reference and in every backend (fp32, CPU).

Every task whose model takes the padding mask (bench.layers.model_uses_padding_mask):
  - ignoring the mask changes the numpy reference's logits far beyond the 1e-4 every backend is
    held to (tests/test_backend_contract.py, tests/test_parity.py), so a backend that dropped
    the mask in any layer fails those tests on tiny_dataset's padded texts;
  - with the mask honoured, the logits do not depend on the padding's weights: redrawing the
    padding token's embedding row and the position embeddings at positions that are padding in
    every text leaves every backend's logits (and the reference's) unchanged, while a model that
    let padding through attention or the mean pool would move.
Each backend runs in a fresh process with the worker's environment (tests/padding_mask_probe.py).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from padding_mask_probe import PROBE_BATCH, masked_tasks, padding_redrawn
from reference import THREADS, forward, tiny_dataset
from test_parity import installed

from backends import BACKENDS
from bench.cell import worker_environment
from bench.config import RunConfig
from bench.data import PAD_ID
from bench.init import initial_weights

HERE = Path(__file__).resolve().parent
TASKS = masked_tasks()
NO_TASKS = [pytest.param("none", marks=pytest.mark.skip(reason="no task takes the mask"))]


def padded_batch(task) -> np.ndarray:
    x = tiny_dataset(task, train=task.batch_size, test=PROBE_BATCH).x_test
    x[1:, : task.input_shape[0] // 4] = PAD_ID
    return x


@pytest.mark.parametrize("name", sorted(TASKS) or NO_TASKS)
def test_ignoring_the_mask_changes_the_reference_logits(name):
    task = TASKS[name]
    x = padded_batch(task)
    assert (x == PAD_ID).any(axis=1).sum() > PROBE_BATCH // 2  # most texts are padded
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    masked = forward(task.layers, weights, x)
    unmasked = forward(task.layers, weights, x, use_mask=False)
    assert np.isfinite(masked).all()  # the all-padding text too
    assert np.abs(unmasked - masked).max() / np.abs(masked).max() > 1e-2


@pytest.mark.parametrize("name", sorted(TASKS) or NO_TASKS)
def test_reference_logits_ignore_the_padding_weights(name):
    task = TASKS[name]
    x = padded_batch(task)
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    redrawn = padding_redrawn(weights, x)
    np.testing.assert_allclose(forward(task.layers, redrawn, x), forward(task.layers, weights, x))
    unmasked = forward(task.layers, redrawn, x, use_mask=False)
    assert not np.allclose(unmasked, forward(task.layers, weights, x, use_mask=False), rtol=1e-3)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    cache = {}

    def run(backend: str) -> dict[str, np.ndarray]:
        if backend not in cache:
            if not installed(backend):
                pytest.skip(f"{backend} is not installed (pip install -e '.[all]')")
            out = tmp_path_factory.mktemp("mask") / f"{backend}.npz"
            env = worker_environment(RunConfig(task="mnist_cnn", backend=backend, threads=THREADS))
            result = subprocess.run(
                [sys.executable, str(HERE / "padding_mask_probe.py"), backend, str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            cache[backend] = dict(np.load(out))
        return cache[backend]

    return run


@pytest.mark.skipif(not TASKS, reason="no task takes the padding mask")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backend_logits_ignore_the_padding_weights(backend, probes):
    results = probes(backend)
    for name in TASKS:
        logits, redrawn = results[f"{name}/logits"], results[f"{name}/redrawn"]
        assert np.isfinite(logits).all(), f"{name}: non-finite logits (the all-padding text?)"
        relative = np.abs(redrawn - logits).max() / np.abs(logits).max()
        assert relative < 1e-5, f"{name}: the padding's weights moved the logits by {relative:.2e}"
