"""Synthetic twins: random data with a real dataset's full shapes and dtypes."""

import numpy as np

from bench.data.registry import FIRST_WORD_ID, Dataset, dataset_info


def synthetic(name: str, seed: int = 0) -> Dataset:
    """Random data with the real dataset's full shapes and dtypes, deterministic in `seed`:
    images uniform in [0, 1), token ids uniform in [2, vocab_size), labels uniform."""
    return make_synthetic(name, seed)


def make_synthetic(name: str, seed: int) -> Dataset:
    info = dataset_info(name)
    generator = np.random.default_rng(seed)

    def inputs(count: int) -> np.ndarray:
        shape = (count, *info.input_shape)
        if info.kind == "image":
            return generator.random(shape, dtype=np.float32)
        return generator.integers(FIRST_WORD_ID, info.vocab_size, shape, dtype=np.int32)

    def labels(count: int) -> np.ndarray:
        return generator.integers(0, info.num_classes, count, dtype=np.int32)

    x_train, y_train = inputs(info.train_size), labels(info.train_size)
    x_test, y_test = inputs(info.test_size), labels(info.test_size)
    return Dataset(info, x_train, y_train, x_test, y_test, True, f"synthetic seed={seed}")
