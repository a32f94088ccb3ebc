"""CIFAR-10: the official python batches (pickles), extracted or in the official tarball, and
the decoder to uint8 NHWC images (N, 32, 32, 3). Only numpy's classes may be unpickled."""

import io
import pickle
from pathlib import Path, PurePosixPath

import numpy as np

from bench.data.registry import DatasetError, Sources
from bench.data.store import read_tar_gz

CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_TARBALL_MD5 = (
    "c58f30108f718f92721af3b95e74349a"  # https://www.cs.toronto.edu/~kriz/cifar.html
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_ROWS_PER_BATCH = 10000  # each batch: uint8 (10000, 3072), 3072 = 3 x 32 x 32 (CHW)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def find_cifar(name: str, folder: Path) -> Sources | None:
    if (folder / CIFAR10_TARBALL).is_file():  # preferred: its official md5 can be checked
        return Sources(name, "cifar_tarball", {"tarball": folder / CIFAR10_TARBALL})
    for batches in (folder / CIFAR10_FOLDER, folder):
        files = {batch: batches / batch for batch in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)}
        if all(path.is_file() for path in files.values()):
            return Sources(name, "cifar_batches", files)
    return None


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches (dicts of bytes, lists and numpy arrays) and refuses any
    other class, so an unverified file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocols 0-2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One official batch: a pickled dict with b'data' uint8 (10000, 3072) and b'labels'."""
    try:
        batch = NumpyOnlyUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as error:  # unpickling garbage raises almost anything
        raise DatasetError(f"{where} is not a CIFAR-10 python batch: {error}") from error
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} is not a CIFAR-10 python batch (no dict inside)")
    data = batch.get(b"data", batch.get("data"))
    labels = np.asarray(batch.get(b"labels", batch.get("labels", [])))
    rows = CIFAR10_ROWS_PER_BATCH
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (rows, 3072):
        found = (type(data).__name__, getattr(data, "dtype", None), getattr(data, "shape", None))
        raise DatasetError(f"{where}: data should be uint8 ({rows}, 3072), found {found}")
    if (
        labels.shape != (rows,)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() > 9
    ):
        raise DatasetError(f"{where}: labels should be {rows} ints in 0..9, found {labels.shape}")
    return data, labels.astype(np.int32)


def decode_cifar(sources: Sources) -> dict[str, np.ndarray]:
    """CIFAR-10: rows of 3072 bytes in CHW order (1024 red, 1024 green, 1024 blue, each 32 rows of
    32) -> uint8 NHWC (N, 32, 32, 3)."""
    if sources.layout == "cifar_tarball":
        contents = read_cifar_tarball(sources.files["tarball"])
        where = {batch: f"{sources.files['tarball']}:{batch}" for batch in contents}
    else:
        contents = {batch: path.read_bytes() for batch, path in sources.files.items()}
        where = {batch: str(path) for batch, path in sources.files.items()}
    batches = {
        batch: read_cifar_batch(content, where[batch]) for batch, content in contents.items()
    }
    train = [batches[batch] for batch in CIFAR10_TRAIN_BATCHES]

    def to_nhwc(data: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))

    return {
        "x_train": to_nhwc(np.concatenate([data for data, _ in train])),
        "y_train": np.concatenate([labels for _, labels in train]),
        "x_test": to_nhwc(batches[CIFAR10_TEST_BATCH][0]),
        "y_test": batches[CIFAR10_TEST_BATCH][1],
    }


def read_cifar_tarball(path: Path) -> dict[str, bytes]:
    wanted = {*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH}
    members = read_tar_gz(path, lambda member: PurePosixPath(member).name in wanted)
    contents = {PurePosixPath(member).name: content for member, content in members}
    if missing := sorted(wanted - set(contents)):
        raise DatasetError(f"{path} lacks the CIFAR-10 batches {', '.join(missing)}")
    return contents
