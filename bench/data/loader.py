"""`load` and the per-dataset tables that send each step to its family's module.

Lookup order in `load` (the package docstring has it in full): the data directory, the cache,
files downloaded earlier, a new download, else a `DatasetError`. Found files are verified
(official md5 where one exists), then served from the cache or decoded and cached.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.data.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_TARBALL,
    CIFAR10_TARBALL_MD5,
    decode_cifar,
    find_cifar,
)
from bench.data.download import download_dataset
from bench.data.idx import IDX_FILES, OFFICIAL_MD5, decode_idx_dataset, find_idx
from bench.data.registry import (
    Dataset,
    DatasetError,
    Sources,
    dataset_info,
    default_cache_dir,
    default_data_dir,
)
from bench.data.store import (
    cache_meta,
    cache_path,
    cache_pattern,
    file_md5,
    newest_cache,
    read_cache,
    to_dataset,
    tree_digest,
    write_cache,
)
from bench.data.text import (
    IMDB_LABELED_TARBALL,
    IMDB_OFFICIAL_MD5,
    IMDB_OFFICIAL_TARBALL,
    decode_imdb,
    decode_sst2,
    find_imdb,
    find_sst2,
    imdb_review_paths,
)
from bench.data.twins import make_synthetic

# --- Per-dataset tables: where to look, how to find and decode --------------------------------

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

FINDERS: dict[str, Callable[[str, Path], Sources | None]] = {
    "mnist": find_idx,
    "fashion_mnist": find_idx,
    "cifar10": find_cifar,
    "sst2": find_sst2,
    "imdb": find_imdb,
}

DECODERS: dict[str, Callable[[Sources], dict[str, np.ndarray]]] = {
    "mnist": decode_idx_dataset,
    "fashion_mnist": decode_idx_dataset,
    "cifar10": decode_cifar,
    "sst2": decode_sst2,
    "imdb": decode_imdb,
}


# --- Loading ----------------------------------------------------------------------------------


def load(
    name: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
    download: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """The dataset `name`, real (verified, cached) or, with synthetic=True, its synthetic twin;
    a twin is made with only the first train_limit / test_limit samples of each split (a real
    dataset is loaded whole: the caller keeps what it uses)."""
    dataset_info(name)
    if synthetic:
        return make_synthetic(name, seed, train_limit, test_limit)
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


def load_sources(sources: Sources, cache_root: Path) -> Dataset:
    """Verify the files, then serve the cached arrays made from them, or decode and cache."""
    fingerprint = verify_sources(sources)
    path = cache_path(sources.name, fingerprint, cache_root)
    if cached := read_cache(path, sources.name):
        return cached
    arrays = DECODERS[sources.name](sources)
    source = sources.describe()
    write_cache(path, arrays, cache_meta(sources.name, source))
    return to_dataset(sources.name, arrays, source)


# --- Finding and verifying source files -------------------------------------------------------


def find_sources(name: str, root: Path) -> Sources | None:
    """The first complete set of files for `name` in `root`'s known sub-folders or in `root`."""
    folders = [root / folder for folder in (name, *FOLDERS[name])] + [root]
    for folder in dict.fromkeys(folders):  # keeps order, drops duplicates
        if folder.is_dir() and (sources := FINDERS[name](name, folder)):
            return sources
    return None


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
