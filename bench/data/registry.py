"""The dataset registry and the types every part of `bench.data` shares.

`DatasetInfo` and `DATASETS` describe each dataset; `Dataset` is what `load` returns; `Sources`
is the set of files found for one dataset; `DatasetError` says which files and what to do. The
token ids (pad, unknown, first word) and the text vocabulary size live here too, beside the
registry entries that use them, and so do the data and cache directories from the environment.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD_ID = 0  # token id of padding (pre-padding, as Keras' pad_sequences)
UNKNOWN_ID = 1  # token id of words outside the vocabulary
FIRST_WORD_ID = 2  # ids 2.. are the most frequent training words, most frequent first
TEXT_VOCAB_SIZE = 20000  # ids in [0, 20000), pad and unknown included


class DatasetError(Exception):
    """A dataset is missing, corrupt or malformed. The message says which files and what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # "mnist" | "fashion_mnist" | "cifar10" | "sst2" | "imdb"
    kind: str  # "image" | "text"
    input_shape: tuple[int, ...]  # per sample: images (H, W, C) NHWC; text (seq_len,)
    num_classes: int
    train_size: int
    test_size: int
    vocab_size: int | None = None  # text only: 0 = pad, 1 = unknown, then the top train words
    seq_len: int | None = None  # text only: tokens per sample after padding/truncation


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "image", (28, 28, 1), 10, 60000, 10000),
    "fashion_mnist": DatasetInfo("fashion_mnist", "image", (28, 28, 1), 10, 60000, 10000),
    "cifar10": DatasetInfo("cifar10", "image", (32, 32, 3), 10, 50000, 10000),
    # SST-2's test split here is GLUE's labelled dev split (GLUE's own test split has no labels).
    "sst2": DatasetInfo("sst2", "text", (64,), 2, 67349, 872, TEXT_VOCAB_SIZE, 64),
    "imdb": DatasetInfo("imdb", "text", (200,), 2, 25000, 25000, TEXT_VOCAB_SIZE, 200),
}


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == is ambiguous
class Dataset:
    info: DatasetInfo
    x_train: np.ndarray  # images: float32 (N, H, W, C) in [0, 1]; text: int32 (N, seq_len)
    y_train: np.ndarray  # int32 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    synthetic: bool
    source: str  # where it came from: files, "cache <path> ...", or "synthetic seed=S"


@dataclass(frozen=True, eq=False)
class Sources:
    """Files found for one dataset. `files` maps a role ("train_images", "tarball", ...) to a
    path; `layout` says how to read them."""

    name: str
    layout: str  # "idx" | "cifar_tarball" | "cifar_batches" | "tsv" | "imdb_tarball" | "imdb_dir"
    files: dict[str, Path]

    def describe(self) -> str:
        """The files, e.g. "/data/mnist/{t10k-images-idx3-ubyte.gz, ...}"."""
        paths = sorted(self.files.values())
        folders = {path.parent for path in paths}
        if len(paths) > 1 and len(folders) == 1:
            return f"{folders.pop()}/{{{', '.join(path.name for path in paths)}}}"
        return ", ".join(str(path) for path in paths)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`; ValueError naming the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}") from None


def default_data_dir() -> Path | None:
    """`$BENCH_DATA_DIR`, or None when it is unset or empty."""
    value = os.environ.get("BENCH_DATA_DIR", "").strip()
    return Path(value).expanduser() if value else None


def default_cache_dir() -> Path:
    """`$BENCH_CACHE_DIR`, else ~/.cache/bench."""
    value = os.environ.get("BENCH_CACHE_DIR", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "bench"
