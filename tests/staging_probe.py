"""What a backend does with the data, in a fresh process: prints one JSON line.

    python tests/staging_probe.py BACKEND TASK PRECISION

Started with the worker's environment (a Keras backend is fixed per process). It sets the
backend up on tiny data, runs one epoch in two windows with the backend's `model.fit` (Keras)
watched, and reports: the mechanism, the resident data size against one copy of the data,
whether an epoch copy exists, the type of every batch `fit` was handed and whether it is the
harness's next batch (the sample indices, or the samples), and the windows' losses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import tiny_dataset  # noqa: E402

from backends import create_backend  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.tasks import TASKS  # noqa: E402


def type_name(value) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def watch_fit(model, seen: list[dict], expected: list[np.ndarray], x_train: np.ndarray) -> None:
    """Wrap model.fit so that every batch it reads is recorded (type, shape, and whether it is
    the epoch's next batch: `expected` holds each step's sample indices) on its way in."""
    import keras

    fit = model.fit

    def watched(x=None, **kwargs):
        if hasattr(x, "element_spec"):  # a tf.data.Dataset (of sample indices): what it yields
            for element in x:
                step = expected[len(seen)]
                seen.append(
                    {
                        "types": [type_name(element)],
                        "shape": list(element.shape),
                        "in_order": bool(np.array_equal(element.numpy(), step)),
                    }
                )
            return fit(x=x, **kwargs)

        def recorded():
            for batch in x:
                samples = keras.ops.convert_to_numpy(batch[0])
                seen.append(
                    {
                        "types": [type_name(t) for t in batch],
                        "shape": list(batch[0].shape),
                        "in_order": bool(np.array_equal(samples, x_train[expected[len(seen)]])),
                    }
                )
                yield batch

        return fit(x=recorded(), **kwargs)

    model.fit = watched


def main(backend_name: str, task_name: str, precision: str) -> dict:
    task = TASKS[task_name]
    config = RunConfig(task=task_name, backend=backend_name, precision=precision, threads=1)
    backend = create_backend(config)
    data = tiny_dataset(task, train=task.batch_size * 6)
    backend.setup(initial_weights(task.layers, task.input_shape, seed=0), data)
    seen: list[dict] = []
    permutation = epoch_permutation(0, 0, len(data.y_train))
    batch = backend.batch_size
    steps = [permutation[i * batch : (i + 1) * batch] for i in range(len(permutation) // batch)]
    if hasattr(backend, "model") and hasattr(backend.model, "fit"):
        watch_fit(backend.model, seen, steps, data.x_train)
    backend.begin_epoch(permutation)
    losses = [backend.run_steps(0, 2), backend.run_steps(2, 4)]  # the whole epoch: 6 steps
    one_copy = sum(array.nbytes for array in (data.x_train, data.x_test))
    labels = len(data.y_train) + len(data.y_test)
    epoch_copies = [name for name in ("x_epoch", "y_epoch") if hasattr(backend, name)]
    return {
        "mechanism": backend.mechanism,
        "resident_bytes": backend.data_resident_bytes(),
        "inputs_bytes": one_copy,
        "labels": labels,
        "epoch_copies": epoch_copies,
        "fit_batches": seen,
        "model_class": type(getattr(backend, "model", None)).__name__,
        "losses": losses,
        "batch_size": task.batch_size,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
