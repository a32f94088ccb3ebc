"""Datasets: official files -> verified -> decoded -> cached numpy arrays, plus synthetic twins.

Every backend trains on the numpy arrays this package returns, so all of them see the same
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
tarballs); elsewhere record counts and the format are validated. Importing this package imports
only the standard library and numpy (pooch is imported inside the download function).

Modules: `registry` (DatasetInfo, DATASETS, Dataset, Sources, DatasetError, token ids),
`store` (checksums, the cache, .tar.gz reading), one per family (`idx`: MNIST and Fashion-MNIST;
`cifar`: CIFAR-10; `text`: the tokenizer, SST-2 and IMDB), `twins` (synthetic twins),
`download` (pooch) and `loader` (`load` and the per-dataset tables). The names below are
re-exported copies: to monkeypatch one, patch it in the module that uses it.
"""

from bench.data.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_TARBALL,
    CIFAR10_TARBALL_MD5,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    CIFAR10_URL,
)
from bench.data.idx import IDX_FILES, MNIST_MIRRORS, OFFICIAL_MD5
from bench.data.loader import EXPECTED_LAYOUT, find_sources, load
from bench.data.registry import (
    DATASETS,
    FIRST_WORD_ID,
    PAD_ID,
    TEXT_VOCAB_SIZE,
    UNKNOWN_ID,
    Dataset,
    DatasetError,
    DatasetInfo,
    dataset_info,
    default_cache_dir,
    default_data_dir,
)
from bench.data.store import FORMAT_VERSION
from bench.data.text import (
    IMDB_LABELED_TARBALL,
    IMDB_OFFICIAL_TARBALL,
    SST2_URL,
    build_vocabulary,
    encode,
    read_sst2_split,
    tokenize,
)
from bench.data.twins import synthetic

__all__ = [
    "CIFAR10_FOLDER",
    "CIFAR10_TARBALL",
    "CIFAR10_TARBALL_MD5",
    "CIFAR10_TEST_BATCH",
    "CIFAR10_TRAIN_BATCHES",
    "CIFAR10_URL",
    "DATASETS",
    "EXPECTED_LAYOUT",
    "FIRST_WORD_ID",
    "FORMAT_VERSION",
    "IDX_FILES",
    "IMDB_LABELED_TARBALL",
    "IMDB_OFFICIAL_TARBALL",
    "MNIST_MIRRORS",
    "OFFICIAL_MD5",
    "PAD_ID",
    "SST2_URL",
    "TEXT_VOCAB_SIZE",
    "UNKNOWN_ID",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "build_vocabulary",
    "dataset_info",
    "default_cache_dir",
    "default_data_dir",
    "encode",
    "find_sources",
    "load",
    "read_sst2_split",
    "synthetic",
    "tokenize",
]
