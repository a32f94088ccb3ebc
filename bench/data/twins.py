"""Synthetic twins: random data with a real dataset's full shapes and dtypes."""

import numpy as np

from bench.data.registry import FIRST_WORD_ID, Dataset, dataset_info


def synthetic(
    name: str, seed: int = 0, train_count: int | None = None, test_count: int | None = None
) -> Dataset:
    """Random data with the real dataset's full shapes and dtypes, deterministic in `seed`:
    images uniform in [0, 1), token ids uniform in [2, vocab_size), labels uniform. With a
    count, only that many samples of the split are made: the full twin's first ones."""
    return make_synthetic(name, seed, train_count, test_count)


def make_synthetic(
    name: str, seed: int, train_count: int | None = None, test_count: int | None = None
) -> Dataset:
    """Each array from its own random stream ([seed, 0..3]: x_train, y_train, x_test, y_test),
    drawn sample by sample, so a twin of N samples is the full twin's first N: a run limited to
    a few hundred samples need not make CIFAR-10's 600 MB of images first."""
    info = dataset_info(name)
    train = info.train_size if train_count is None else min(train_count, info.train_size)
    test = info.test_size if test_count is None else min(test_count, info.test_size)

    def inputs(stream: int, count: int) -> np.ndarray:
        generator = np.random.default_rng([seed, stream])
        shape = (count, *info.input_shape)
        if info.kind == "image":
            return generator.random(shape, dtype=np.float32)
        return generator.integers(FIRST_WORD_ID, info.vocab_size, shape, dtype=np.int32)

    def labels(stream: int, count: int) -> np.ndarray:
        generator = np.random.default_rng([seed, stream])
        return generator.integers(0, info.num_classes, count, dtype=np.int32)

    x_train, y_train = inputs(0, train), labels(1, train)
    x_test, y_test = inputs(2, test), labels(3, test)
    return Dataset(info, x_train, y_train, x_test, y_test, True, f"synthetic seed={seed}")
