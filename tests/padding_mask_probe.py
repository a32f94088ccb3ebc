"""One backend's logits on padded texts, before and after the padding's weights change.

    python tests/padding_mask_probe.py BACKEND OUT.npz

For every task whose model takes the padding mask, from the canonical initial weights: the
logits of a batch of padded texts (tests/reference.py's tiny_dataset: random lengths, one text
all padding), then the logits of the same batch from weights whose padding token row (id 0) and
whose position embeddings at the positions every text of the batch pads are redrawn. With the
mask honoured the two agree (tests/test_padding_mask.py). Run in a fresh process with the
worker's environment (a Keras backend is fixed per process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import probe_threads, tiny_dataset  # noqa: E402

from backends import create_backend  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.data import PAD_ID  # noqa: E402
from bench.init import Weights, initial_weights  # noqa: E402
from bench.layers import model_uses_padding_mask  # noqa: E402
from bench.tasks import TASKS, TaskSpec  # noqa: E402

PROBE_BATCH = 16


def masked_tasks() -> dict[str, TaskSpec]:
    return {name: task for name, task in TASKS.items() if model_uses_padding_mask(task.layers)}


def padding_redrawn(weights: Weights, x: np.ndarray) -> Weights:
    """The weights with the padding token's embedding row, and the position embeddings at the
    positions that are padding in every text of `x`, drawn anew."""
    rng = np.random.default_rng(7)
    changed = dict(weights)
    always_padding = (x == PAD_ID).all(axis=0)
    assert always_padding.any(), "the batch must have positions that are padding in every text"
    for key, value in weights.items():
        if key.endswith("_embedding/embeddings"):
            value = value.copy()
            value[PAD_ID] = rng.uniform(-1, 1, value.shape[1])
            changed[key] = value
        elif key.endswith("_positionembedding/embeddings"):
            value = value.copy()
            value[always_padding] = rng.uniform(-1, 1, value[always_padding].shape)
            changed[key] = value
    assert any(not np.array_equal(changed[k], weights[k]) for k in weights)
    return changed


def probe(backend_name: str) -> dict[str, np.ndarray]:
    results = {}
    for name, task in masked_tasks().items():
        config = RunConfig(task=name, backend=backend_name, threads=probe_threads(), seed=0)
        data = tiny_dataset(task, train=task.batch_size, test=PROBE_BATCH)
        x = data.x_test
        x[1:, : task.input_shape[0] // 4] = PAD_ID  # a quarter of positions pad every text
        weights = initial_weights(task.layers, task.input_shape, seed=0)
        for label, these in (("logits", weights), ("redrawn", padding_redrawn(weights, x))):
            backend = create_backend(config)
            backend.setup(these, data)
            results[f"{name}/{label}"] = backend.predict(x)
    return results


if __name__ == "__main__":
    np.savez(sys.argv[2], **probe(sys.argv[1]))
