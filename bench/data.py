"""Datasets: official files -> verified -> decoded -> cached numpy arrays, plus synthetic twins.

Every backend trains on the numpy arrays this module returns, so all of them see the same
pixels, the same token ids and the same labels. Text is tokenized here, once, into pre-padded
integer arrays (DESIGN.md, fairness invariant 5), so no framework's tokenizer is compared.

Lookup order in `load`:

1. the data directory (`data_dir`, else `$BENCH_DATA_DIR`): `<dir>/<folder>/` or `<dir>/` itself;
2. the cache (`cache_dir`, else `$BENCH_CACHE_DIR`, else `~/.cache/bench`): decoded arrays in
   `<cache>/<name>-v<FORMAT_VERSION>-<key>.npz`, the key made from the source files' md5;
3. files downloaded earlier into `<cache>/raw/<name>/`;
4. a download from the official URLs into `<cache>/raw/<name>/` (needs pooch and internet);
5. otherwise a `DatasetError` naming the missing files, the expected layout and BENCH_DATA_DIR.

Official checksums are verified where they exist (MNIST, Fashion-MNIST, the CIFAR-10 and IMDB
tarballs); elsewhere record counts and the format are validated. Importing this module imports
only the standard library and numpy (pooch is imported inside the download function).
"""

import csv
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

# Bump when decoding, tokenization or the cache layout changes: old cache files are then unused.
FORMAT_VERSION = 1

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


# --- Official files, checksums and download URLs -------------------------------------------

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

CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_TARBALL_MD5 = (
    "c58f30108f718f92721af3b95e74349a"  # https://www.cs.toronto.edu/~kriz/cifar.html
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_ROWS_PER_BATCH = 10000  # each batch: uint8 (10000, 3072), 3072 = 3 x 32 x 32 (CHW)

SST2_FILES = {"train": "train.tsv", "test": "dev.tsv"}  # dev is labelled; GLUE's test is not

IMDB_OFFICIAL_TARBALL = "aclImdb_v1.tar.gz"
IMDB_OFFICIAL_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"  # aclImdb_v1.tar.gz as Stanford ships it
IMDB_LABELED_TARBALL = "aclImdb_v1_labeled.tar.gz"  # a repack without train/unsup: no official md5
IMDB_REVIEWS_PER_CLASS = 12500  # per split (train, test) and class (neg, pos)
IMDB_LABELS = {"neg": 0, "pos": 1}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"

# Sub-folders of a data directory searched for each dataset (then the directory itself).
FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
    "cifar10": ("cifar10", "cifar-10", CIFAR10_FOLDER),
    "sst2": ("sst2", "SST-2"),
    "imdb": ("imdb", "aclImdb"),
}

EXPECTED_LAYOUT = {
    "mnist": "<data dir>/mnist/{" + ", ".join(IDX_FILES.values()) + "}",
    "fashion_mnist": "<data dir>/fashion-mnist/{" + ", ".join(IDX_FILES.values()) + "}",
    "cifar10": (
        f"<data dir>/cifar10/{CIFAR10_TARBALL} or the extracted "
        f"<data dir>/cifar10/{CIFAR10_FOLDER}/{{data_batch_1..5, test_batch}}"
    ),
    "sst2": "<data dir>/sst2/{train.tsv, dev.tsv} (GLUE SST-2, tab-separated with a header)",
    "imdb": (
        f"<data dir>/imdb/{IMDB_OFFICIAL_TARBALL} (or {IMDB_LABELED_TARBALL}, or the extracted "
        "<data dir>/imdb/aclImdb/{train,test}/{pos,neg}/*.txt)"
    ),
}


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


# --- Loading ----------------------------------------------------------------------------------


def load(
    name: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """The dataset `name`, real (verified, cached) or, with synthetic=True, its synthetic twin."""
    dataset_info(name)
    if synthetic:
        return make_synthetic(name, seed)
    data_root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    raw_root = cache_root / "raw"

    if data_root is not None and (sources := find_sources(name, data_root)):
        return load_sources(sources, cache_root)
    if cached := newest_cache(name, cache_root):
        return cached
    if sources := find_sources(name, raw_root):
        return load_sources(sources, cache_root)
    if not download:
        raise missing_error(name, data_root, cache_root, "downloading is off (download=False)")
    try:
        download_dataset(name, raw_root / name)
    except Exception as error:  # network, HTTP, checksum, missing pooch: all end the same way
        raise missing_error(name, data_root, cache_root, f"the download failed: {error}") from error
    if sources := find_sources(name, raw_root):
        return load_sources(sources, cache_root)
    raise missing_error(name, data_root, cache_root, f"the download left no files in {raw_root}")


def missing_error(name: str, data_root: Path | None, cache_root: Path, reason: str) -> DatasetError:
    looked = (
        f"data dir {data_root}" if data_root is not None else "no data dir (BENCH_DATA_DIR unset)"
    )
    return DatasetError(
        f"{name}: dataset files not found and {reason}. Looked in: {looked}; "
        f"cache {cache_root} ({cache_pattern(name)}); downloads {cache_root / 'raw' / name}. "
        f"Expected layout: {EXPECTED_LAYOUT[name]}. To fix: put the official files there and "
        "set BENCH_DATA_DIR to that data dir (or pass data_dir / --data-dir), or run once with "
        "internet access and pooch installed so the files are downloaded."
    )


def load_sources(sources: "Sources", cache_root: Path) -> Dataset:
    """Verify the files, then serve the cached arrays made from them, or decode and cache."""
    fingerprint = verify_sources(sources)
    path = cache_path(sources.name, fingerprint, cache_root)
    if cached := read_cache(path, sources.name):
        return cached
    arrays = DECODERS[sources.name](sources)
    source = sources.describe()
    write_cache(path, arrays, cache_meta(sources.name, source))
    return to_dataset(sources.name, arrays, source)


def to_dataset(name: str, arrays: Mapping[str, np.ndarray], source: str) -> Dataset:
    """Cache dtypes (uint8 pixels, uint16 token ids) to the returned ones (float32, int32)."""
    info = DATASETS[name]

    def inputs(stored: np.ndarray) -> np.ndarray:
        if info.kind == "image":  # true division, as x.astype(float32) / 255 does
            return np.divide(stored, np.float32(255), dtype=np.float32)
        return stored.astype(np.int32)

    return Dataset(
        info=info,
        x_train=inputs(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int32),
        x_test=inputs(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int32),
        synthetic=False,
        source=source,
    )


# --- Synthetic twins --------------------------------------------------------------------------


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


# --- Tokenization -----------------------------------------------------------------------------

TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
LINE_BREAK_PATTERN = re.compile(r"<br\s*/?>")  # IMDB reviews carry HTML line breaks


def tokenize(text: str) -> list[str]:
    """Lowercase, turn `<br />` into a space, keep runs of [a-z0-9] (with inner apostrophes)."""
    return TOKEN_PATTERN.findall(LINE_BREAK_PATTERN.sub(" ", text.lower()))


def build_vocabulary(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """Word -> id for the (vocab_size - 2) most frequent words, ties broken alphabetically.
    Ids start at 2: 0 is padding and 1 the unknown word."""
    return vocabulary_from_tokens((tokenize(text) for text in texts), vocab_size)


def vocabulary_from_tokens(token_lists: Iterable[list[str]], vocab_size: int) -> dict[str, int]:
    if vocab_size < FIRST_WORD_ID:
        raise ValueError(f"vocab_size must be at least {FIRST_WORD_ID} (pad and unknown)")
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = ranked[: vocab_size - FIRST_WORD_ID]
    return {word: index for index, (word, _) in enumerate(top, start=FIRST_WORD_ID)}


def encode(texts: Iterable[str], vocabulary: Mapping[str, int], seq_len: int) -> np.ndarray:
    """int32 (N, seq_len) token ids, unknown words as 1, padded with 0 at the front and truncated
    at the front (the last seq_len tokens stay), as Keras' pad_sequences does by default."""
    if isinstance(texts, str):
        raise TypeError("encode takes a list of texts, not one string")
    return encode_tokens((tokenize(text) for text in texts), vocabulary, seq_len)


def encode_tokens(
    token_lists: Iterable[list[str]], vocabulary: Mapping[str, int], seq_len: int
) -> np.ndarray:
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    rows = [
        [vocabulary.get(token, UNKNOWN_ID) for token in tokens[-seq_len:]] for tokens in token_lists
    ]
    encoded = np.full((len(rows), seq_len), PAD_ID, dtype=np.int32)
    for index, ids in enumerate(rows):
        if ids:
            encoded[index, seq_len - len(ids) :] = ids
    return encoded


def encode_splits(
    name: str, train: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray]
) -> dict[str, np.ndarray]:
    """Tokenize both splits, build the vocabulary from the train split only, encode both."""
    info = DATASETS[name]
    train_tokens = [tokenize(text) for text in train[0]]
    vocabulary = vocabulary_from_tokens(train_tokens, info.vocab_size)
    id_dtype = np.uint16 if info.vocab_size <= 2**16 else np.int32  # smaller cache files
    return {
        "x_train": encode_tokens(train_tokens, vocabulary, info.seq_len).astype(id_dtype),
        "y_train": train[1],
        "x_test": encode(test[0], vocabulary, info.seq_len).astype(id_dtype),
        "y_test": test[1],
    }


# --- Finding and verifying source files -------------------------------------------------------


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


def find_sources(name: str, root: Path) -> Sources | None:
    """The first complete set of files for `name` in `root`'s known sub-folders or in `root`."""
    folders = [root / folder for folder in (name, *FOLDERS[name])] + [root]
    for folder in dict.fromkeys(folders):  # keeps order, drops duplicates
        if folder.is_dir() and (sources := FINDERS[name](name, folder)):
            return sources
    return None


def find_idx(name: str, folder: Path) -> Sources | None:
    files = {role: folder / filename for role, filename in IDX_FILES.items()}
    if all(path.is_file() for path in files.values()):
        return Sources(name, "idx", files)
    return None


def find_cifar(name: str, folder: Path) -> Sources | None:
    if (folder / CIFAR10_TARBALL).is_file():  # preferred: its official md5 can be checked
        return Sources(name, "cifar_tarball", {"tarball": folder / CIFAR10_TARBALL})
    for batches in (folder / CIFAR10_FOLDER, folder):
        files = {batch: batches / batch for batch in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)}
        if all(path.is_file() for path in files.values()):
            return Sources(name, "cifar_batches", files)
    return None


def find_sst2(name: str, folder: Path) -> Sources | None:
    files = {split: folder / filename for split, filename in SST2_FILES.items()}
    if all(path.is_file() for path in files.values()):
        return Sources(name, "tsv", files)
    return None


def find_imdb(name: str, folder: Path) -> Sources | None:
    for tarball in (IMDB_OFFICIAL_TARBALL, IMDB_LABELED_TARBALL):
        if (folder / tarball).is_file():
            return Sources(name, "imdb_tarball", {"tarball": folder / tarball})
    for root in (folder / "aclImdb", folder):
        if all(
            (root / split / label).is_dir() for split in ("train", "test") for label in IMDB_LABELS
        ):
            return Sources(name, "imdb_dir", {"directory": root})
    return None


FINDERS: dict[str, Callable[[str, Path], Sources | None]] = {
    "mnist": find_idx,
    "fashion_mnist": find_idx,
    "cifar10": find_cifar,
    "sst2": find_sst2,
    "imdb": find_imdb,
}


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):  # 1 MiB
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, actual: str) -> None:
    if actual == expected:
        return
    known = {
        md5: f"{name}/{file}" for name, files in OFFICIAL_MD5.items() for file, md5 in files.items()
    }
    hint = f" (that is the official {known[actual]})" if actual in known else ""
    raise DatasetError(
        f"checksum mismatch for {path}: expected md5 {expected}, got {actual}{hint}; the file is "
        "corrupt or not the official one: delete it and re-download, or point BENCH_DATA_DIR at "
        "a good copy"
    )


def verify_sources(sources: Sources) -> dict[str, str]:
    """Check official checksums where they exist; return a fingerprint of the sources (role ->
    md5, or a digest of names, sizes and mtimes for an extracted IMDB tree) for the cache key."""
    fingerprint = {}
    for role, path in sources.files.items():
        if path.is_dir():
            fingerprint[role] = "tree:" + tree_digest(imdb_review_paths(path), path)
            continue
        md5 = file_md5(path)
        fingerprint[role] = md5
        if sources.layout == "idx":
            check_md5(path, OFFICIAL_MD5[sources.name][path.name], md5)
        elif sources.layout == "cifar_tarball":
            check_md5(path, CIFAR10_TARBALL_MD5, md5)
        elif sources.layout == "imdb_tarball" and path.name == IMDB_OFFICIAL_TARBALL:
            check_md5(path, IMDB_OFFICIAL_MD5, md5)
    return fingerprint


def tree_digest(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        status = path.stat()
        digest.update(
            f"{path.relative_to(root)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


# --- Cache ------------------------------------------------------------------------------------


def cache_pattern(name: str) -> str:
    return f"{name}-v{FORMAT_VERSION}-*.npz"


def cache_path(name: str, fingerprint: Mapping[str, str], cache_root: Path) -> Path:
    """The key changes with the source files, the dataset's shapes and FORMAT_VERSION."""
    description = {
        "format_version": FORMAT_VERSION,
        "info": asdict(DATASETS[name]),
        "sources": dict(sorted(fingerprint.items())),
    }
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root / f"{name}-v{FORMAT_VERSION}-{key}.npz"


def newest_cache(name: str, cache_root: Path) -> Dataset | None:
    """The newest valid cache file for `name`, whatever files it was made from."""
    if not cache_root.is_dir():
        return None
    candidates = sorted(cache_root.glob(cache_pattern(name)), key=modified_time, reverse=True)
    for path in candidates:
        if cached := read_cache(path, name):
            return cached
    return None


def modified_time(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def read_cache(path: Path, name: str) -> Dataset | None:
    """The cached dataset, or None when the file is missing, stale or corrupt (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
        problem = cache_problem(name, meta, arrays)
    except Exception as error:  # a truncated or foreign file fails in many ways: all mean rebuild
        problem = f"{type(error).__name__}: {error}"
    if problem:
        warnings.warn(f"ignoring cache file {path} ({problem}); rebuilding it", stacklevel=3)
        return None
    return to_dataset(name, arrays, f"cache {path} (decoded from {meta['source']})")


def cache_problem(name: str, meta: dict, arrays: Mapping[str, np.ndarray]) -> str | None:
    info = DATASETS[name]
    if meta.get("format_version") != FORMAT_VERSION or meta.get("name") != name:
        return "written for another format version or dataset"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[1:] != info.input_shape or y.shape != x.shape[:1]:
            return f"{split} arrays have shapes {x.shape} and {y.shape}"
        stored_dtype_ok = x.dtype == np.uint8 if info.kind == "image" else x.dtype.kind in "iu"
        if not stored_dtype_ok or y.dtype.kind not in "iu":
            return f"{split} arrays have dtypes {x.dtype} and {y.dtype}"
    return None


def cache_meta(name: str, source: str) -> dict:
    """What a cache file records beside its arrays (cache_problem checks it on reading)."""
    return {"format_version": FORMAT_VERSION, "name": name, "source": source}


def write_cache(path: Path, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
    """Write atomically (temporary file, then os.replace); a cache that cannot be written only
    costs time, so that is a warning, not an error."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as file:
            np.savez(file, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        warnings.warn(f"could not write the dataset cache {path}: {error}", stacklevel=3)
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


# --- Decoders: source files -> arrays in cache dtypes -----------------------------------------

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


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


def read_tar_gz(path: Path, wanted: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    """(member name, content) of the wanted files of a .tar.gz, in archive order, in one streaming
    pass. The gzip stream is read to its end and its CRC checked, so a truncated or corrupt
    archive is an error (tarfile alone takes a cut at a member boundary for the archive's end)."""
    members = []
    try:
        with gzip.open(path, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    if member.isfile() and wanted(member.name):
                        members.append((member.name, archive.extractfile(member).read()))
            while stream.read(1 << 20):  # what tarfile left: end-of-archive padding (1 MiB reads)
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(corrupt_archive_message(path, error)) from error
    return members


def corrupt_archive_message(path: Path, error: BaseException) -> str:
    return (
        f"cannot read {path}: {type(error).__name__}: {error}; the archive is corrupt or "
        "truncated: delete it and re-download, or point BENCH_DATA_DIR at a good copy"
    )


def decode_sst2(sources: Sources) -> dict[str, np.ndarray]:
    """SST-2: train.tsv is the train split, the labelled dev.tsv the test split."""
    info = DATASETS[sources.name]
    splits = {split: read_sst2_split(path) for split, path in sources.files.items()}
    for split, expected in (("train", info.train_size), ("test", info.test_size)):
        if len(splits[split][0]) != expected:
            warnings.warn(
                f"{sources.files[split]} holds {len(splits[split][0])} rows; official GLUE SST-2 "
                f"has {expected}",
                stacklevel=2,
            )
    return encode_splits(sources.name, splits["train"], splits["test"])


def read_sst2_split(path: Path) -> tuple[list[str], np.ndarray]:
    """A GLUE-style TSV with a header naming a `label` column and a text column (`sentence` or
    `content`), in either order. Quotes are text, not quoting. CRLF and LF both work."""
    texts, labels, blank_line = [], [], None
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = [field.strip().lower() for field in next(reader, [])]
            if len(header) != 2 or "label" not in header:
                raise DatasetError(
                    f"{path}, line 1: expected a header of two tab-separated columns, one of them "
                    f"'label', found {header}"
                )
            label_column = header.index("label")
            for row in reader:
                line = reader.line_num
                if not row:
                    blank_line = blank_line or line
                    continue
                if blank_line is not None:
                    raise DatasetError(f"{path}, line {blank_line}: empty line inside the data")
                label, text = parse_sst2_row(row, label_column, path, line)
                labels.append(label)
                texts.append(text)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    return texts, np.array(labels, dtype=np.int32)


def parse_sst2_row(row: list[str], label_column: int, path: Path, line: int) -> tuple[int, str]:
    if len(row) != 2:
        raise DatasetError(
            f"{path}, line {line}: expected 2 tab-separated fields (label, sentence), found "
            f"{len(row)}: {row!r:.200}"
        )
    label, text = row[label_column].strip(), row[1 - label_column].strip()
    if label not in ("0", "1"):
        raise DatasetError(f"{path}, line {line}: label must be 0 or 1, found {label!r}")
    if not text:
        raise DatasetError(f"{path}, line {line}: the sentence is empty")
    return int(label), text


IMDB_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")


def decode_imdb(sources: Sources) -> dict[str, np.ndarray]:
    """IMDB: reviews in train/{pos,neg} and test/{pos,neg} (train/unsup is ignored)."""
    if sources.layout == "imdb_tarball":
        path = sources.files["tarball"]
        reviews = read_imdb_tarball(path)
    else:
        path = sources.files["directory"]
        reviews = read_imdb_directory(path)
    train, test = split_imdb_reviews(reviews, path)
    return encode_splits(sources.name, train, test)


def read_imdb_tarball(path: Path) -> list[tuple[str, str, str, str]]:
    """(split, label, file name, text) for every review, in one streaming pass."""
    reviews = []
    for member, content in read_tar_gz(path, IMDB_MEMBER.match):
        split, label, filename = IMDB_MEMBER.match(member).groups()
        reviews.append((split, label, filename, content.decode("utf-8", errors="replace")))
    return reviews


def imdb_review_paths(root: Path) -> list[Path]:
    return sorted(
        path
        for split in ("train", "test")
        for label in IMDB_LABELS
        for path in (root / split / label).glob("*.txt")
    )


def read_imdb_directory(root: Path) -> list[tuple[str, str, str, str]]:
    reviews = []
    for path in imdb_review_paths(root):
        text = path.read_bytes().decode("utf-8", errors="replace")
        reviews.append((path.parent.parent.name, path.parent.name, path.name, text))
    return reviews


def split_imdb_reviews(
    reviews: list[tuple[str, str, str, str]], where: Path
) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """Check 12,500 reviews per split and class; order by (label, file name) within a split."""
    counts = Counter((split, label) for split, label, _, _ in reviews)
    for split in ("train", "test"):
        for label in IMDB_LABELS:
            if counts[split, label] != IMDB_REVIEWS_PER_CLASS:
                raise DatasetError(
                    f"{where}: {split}/{label} holds {counts[split, label]} reviews, expected "
                    f"{IMDB_REVIEWS_PER_CLASS}; the copy is incomplete: re-download it, or point "
                    "BENCH_DATA_DIR at a complete copy"
                )
    ordered = sorted(reviews, key=lambda review: (review[0], IMDB_LABELS[review[1]], review[2]))

    def split_of(split: str) -> tuple[list[str], np.ndarray]:
        chosen = [review for review in ordered if review[0] == split]
        labels = np.array([IMDB_LABELS[label] for _, label, _, _ in chosen], dtype=np.int32)
        return [text for *_, text in chosen], labels

    return split_of("train"), split_of("test")


DECODERS: dict[str, Callable[[Sources], dict[str, np.ndarray]]] = {
    "mnist": decode_idx_dataset,
    "fashion_mnist": decode_idx_dataset,
    "cifar10": decode_cifar,
    "sst2": decode_sst2,
    "imdb": decode_imdb,
}


# --- Download ---------------------------------------------------------------------------------


def fetch_url(url: str, md5: str | None, destination: Path) -> None:
    """Download `url` to `destination` through pooch, checking `md5` when one is known. pooch
    writes to a temporary file and moves it into place only when the checksum matches."""
    try:
        import pooch
    except ImportError as error:
        raise DatasetError(
            "downloading needs pooch: pip install 'dl-bench-harness[download]'"
        ) from error
    pooch.retrieve(
        url,
        known_hash=f"md5:{md5}" if md5 else None,
        fname=destination.name,
        path=destination.parent,
        progressbar=False,
    )


def download_dataset(name: str, folder: Path) -> None:
    """Fetch the official files for `name` into `folder` (the cache's raw/<name>/)."""
    folder.mkdir(parents=True, exist_ok=True)
    if name in OFFICIAL_MD5:
        mirrors = MNIST_MIRRORS if name == "mnist" else FASHION_MNIST_MIRRORS
        for filename, md5 in OFFICIAL_MD5[name].items():
            fetch_from_mirrors([mirror + filename for mirror in mirrors], md5, folder / filename)
    elif name == "cifar10":
        fetch_url(CIFAR10_URL, CIFAR10_TARBALL_MD5, folder / CIFAR10_TARBALL)
    elif name == "sst2":
        archive = folder / "SST-2.zip"
        fetch_url(SST2_URL, None, archive)  # GLUE publishes no checksum: the rows are validated
        extract_sst2(archive, folder)
    elif name == "imdb":
        fetch_url(IMDB_URL, IMDB_OFFICIAL_MD5, folder / IMDB_OFFICIAL_TARBALL)


def fetch_from_mirrors(urls: list[str], md5: str, destination: Path) -> None:
    failures = []
    for url in urls:
        try:
            fetch_url(url, md5, destination)
            return
        except Exception as error:  # try the next mirror
            failures.append(f"{url}: {error}")
    raise DatasetError("every mirror failed: " + "; ".join(failures))


def extract_sst2(archive: Path, folder: Path) -> None:
    """Copy SST-2/train.tsv and SST-2/dev.tsv out of GLUE's zip, each written atomically."""
    try:
        with zipfile.ZipFile(archive) as package:
            for filename in SST2_FILES.values():
                content = package.read(f"SST-2/{filename}")
                temporary = folder / f".{filename}.tmp"
                temporary.write_bytes(content)
                os.replace(temporary, folder / filename)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise DatasetError(corrupt_archive_message(archive, error)) from error
