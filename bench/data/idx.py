"""MNIST and Fashion-MNIST: the official gzipped IDX files, their md5s and mirrors, and the
decoder to uint8 images (N, 28, 28, 1) and labels."""

import gzip
import zlib
from pathlib import Path

import numpy as np

from bench.data.registry import DATASETS, DatasetError, Sources

IDX_FILES = {  # role -> file name, the same for MNIST and Fashion-MNIST
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# md5 of the official .gz files (torchvision and the Fashion-MNIST README publish the same values)
OFFICIAL_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def find_idx(name: str, folder: Path) -> Sources | None:
    files = {role: folder / filename for role, filename in IDX_FILES.items()}
    if all(path.is_file() for path in files.values()):
        return Sources(name, "idx", files)
    return None


def decode_idx_dataset(sources: Sources) -> dict[str, np.ndarray]:
    """MNIST / Fashion-MNIST: uint8 images (N, 28, 28, 1) and int32 labels."""
    info = DATASETS[sources.name]
    arrays = {}
    for split, count in (("train", info.train_size), ("test", info.test_size)):
        images = read_idx(sources.files[f"{split}_images"], IDX_IMAGES_MAGIC, (count, 28, 28))
        labels = read_idx(sources.files[f"{split}_labels"], IDX_LABELS_MAGIC, (count,))
        if labels.max() >= info.num_classes:
            raise DatasetError(f"{sources.files[f'{split}_labels']}: a label is {labels.max()}")
        arrays[f"x_{split}"] = images.reshape(count, 28, 28, 1)
        arrays[f"y_{split}"] = labels.astype(np.int32)
    return arrays


def read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """A gzipped IDX file (http://yann.lecun.com/exdb/mnist/): big-endian magic number, one
    uint32 size per dimension, then the uint8 data."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"cannot decompress {path}: {error}") from error
    header_size = 4 + 4 * len(shape)
    found_magic = int.from_bytes(raw[:4], "big")
    dimensions = tuple(
        int.from_bytes(raw[offset : offset + 4], "big") for offset in range(4, header_size, 4)
    )
    if found_magic != magic or dimensions != shape or len(raw) != header_size + np.prod(shape):
        raise DatasetError(
            f"{path} is not the expected IDX file: magic {found_magic:#x} (expected {magic:#x}), "
            f"dimensions {dimensions} (expected {shape}), {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
