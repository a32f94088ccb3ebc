"""Tests for bench/data/ (the bench.data package).

The real loaders run on BENCH_DATA_DIR, else on ../shared/datasets next to the repository, and
skip when neither holds the files. CIFAR-10 (which we have no copy of) is tested on files
generated in the official format. Downloads are monkeypatched: no test touches the network, and
every cache lives under tmp_path.
"""

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench import data
from bench.data import (
    DATASETS,
    DatasetError,
    build_vocabulary,
    cifar,
    download,
    encode,
    load,
    loader,
    store,
    synthetic,
    text,
    tokenize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_FETCH_URL = download.fetch_url  # the autouse fixture replaces it; download tests restore it


def find_real_data_dir() -> Path | None:
    configured = os.environ.get("BENCH_DATA_DIR", "").strip()
    if configured:
        return Path(configured)
    fallback = REPO_ROOT.parent / "shared" / "datasets"
    return fallback if fallback.is_dir() else None


REAL_DATA_DIR = find_real_data_dir()  # read before the fixture below clears BENCH_DATA_DIR


def require_real(name: str) -> Path:
    """The real data folder holding `name`, or skip the test saying why."""
    if REAL_DATA_DIR is None or not REAL_DATA_DIR.is_dir():
        pytest.skip("no data folder: set BENCH_DATA_DIR or put the datasets in ../shared/datasets")
    if data.find_sources(name, REAL_DATA_DIR) is None:
        pytest.skip(f"no {name} files in {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Downloads fail (and are recorded), BENCH_DATA_DIR is unset, the default cache is tmp."""
    attempts = []

    def no_network(url, md5, destination):
        attempts.append(url)
        raise OSError(f"tests must not download ({url})")

    monkeypatch.setattr(download, "fetch_url", no_network)
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "default-cache"))
    yield
    assert not attempts, f"a test tried to download {attempts}"


def assert_same_arrays(first: data.Dataset, second: data.Dataset) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def assert_shapes_and_dtypes(dataset: data.Dataset, train: int, test: int) -> None:
    info = dataset.info
    x_dtype = np.float32 if info.kind == "image" else np.int32
    assert dataset.x_train.shape == (train, *info.input_shape)
    assert dataset.x_test.shape == (test, *info.input_shape)
    assert dataset.y_train.shape == (train,) and dataset.y_test.shape == (test,)
    assert dataset.x_train.dtype == dataset.x_test.dtype == x_dtype
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int32


def assert_pre_padded(ids: np.ndarray) -> None:
    """Padding (0) only before the first word: once a row holds a word, no 0 follows."""
    has_word = (ids != data.PAD_ID).astype(np.int8)
    assert (np.diff(has_word, axis=1) >= 0).all()


def assert_served_from_cache(name: str, first: data.Dataset, **load_arguments) -> None:
    again = load(name, download=False, **load_arguments)
    assert again.source.startswith("cache "), again.source
    assert_same_arrays(first, again)


# --- Real data --------------------------------------------------------------------------------

CLASS_COUNTS = {  # (train, test) samples per class in the official files
    "mnist": (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "fashion_mnist": ([6000] * 10, [1000] * 10),
}


def read_idx_independently(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_idx_dataset(name, tmp_path):
    data_dir = require_real(name)
    dataset = load(name, data_dir=data_dir, cache_dir=tmp_path, download=False)
    assert not dataset.synthetic and str(data_dir) in dataset.source
    assert_shapes_and_dtypes(dataset, 60000, 10000)
    assert dataset.x_train.min() == 0.0 and dataset.x_train.max() == 1.0
    train_counts, test_counts = CLASS_COUNTS[name]
    assert np.bincount(dataset.y_train).tolist() == train_counts
    assert np.bincount(dataset.y_test).tolist() == test_counts

    folder = data.find_sources(name, data_dir).files["test_images"].parent
    pixels = read_idx_independently(folder / "t10k-images-idx3-ubyte.gz", 16)
    labels = read_idx_independently(folder / "t10k-labels-idx1-ubyte.gz", 8)
    expected = pixels.reshape(10000, 28, 28, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(dataset.x_test, expected)
    np.testing.assert_array_equal(dataset.y_test, labels)

    assert_served_from_cache(name, dataset, data_dir=data_dir, cache_dir=tmp_path)
    assert_served_from_cache(name, dataset, cache_dir=tmp_path)  # no data dir: the cache alone
    (cached_file,) = tmp_path.glob(f"{name}-v{data.FORMAT_VERSION}-*.npz")
    with np.load(cached_file) as archive:
        assert archive["x_train"].dtype == np.uint8  # pixels are cached as bytes


def test_real_sst2(tmp_path):
    data_dir = require_real("sst2")
    dataset = load("sst2", data_dir=data_dir, cache_dir=tmp_path, download=False)
    assert_shapes_and_dtypes(dataset, 67349, 872)  # GLUE's train and (labelled) dev splits
    assert np.bincount(dataset.y_train).tolist() == [29780, 37569]
    assert np.bincount(dataset.y_test).tolist() == [428, 444]
    assert dataset.x_train.min() >= 0 and dataset.x_train.max() < data.TEXT_VOCAB_SIZE
    assert_pre_padded(dataset.x_train)
    assert_pre_padded(dataset.x_test)
    # SST-2 train has fewer distinct words than the vocabulary holds: no unknown id in train.
    assert not (dataset.x_train == data.UNKNOWN_ID).any()
    assert (dataset.x_test == data.UNKNOWN_ID).any()

    # The public tokenizer, vocabulary and encoder give exactly what load() returns.
    sources = data.find_sources("sst2", data_dir)
    texts, labels = data.read_sst2_split(sources.files["train"])
    assert texts[0] == "hide new secretions from the parental units"
    vocabulary = build_vocabulary(texts, data.TEXT_VOCAB_SIZE)
    np.testing.assert_array_equal(encode(texts[:200], vocabulary, 64), dataset.x_train[:200])
    np.testing.assert_array_equal(labels, dataset.y_train)
    assert_served_from_cache("sst2", dataset, data_dir=data_dir, cache_dir=tmp_path)


def test_real_imdb(tmp_path):
    """About 5 s from a fresh cache (read the tarball, tokenize 50,000 reviews), so not slow."""
    data_dir = require_real("imdb")
    dataset = load("imdb", data_dir=data_dir, cache_dir=tmp_path, download=False)
    assert_shapes_and_dtypes(dataset, 25000, 25000)
    for labels in (dataset.y_train, dataset.y_test):  # sorted: 12,500 neg (0), then 12,500 pos
        np.testing.assert_array_equal(labels, np.repeat(np.int32([0, 1]), 12500))
    assert dataset.x_train.min() >= 0 and dataset.x_train.max() < data.TEXT_VOCAB_SIZE
    assert_pre_padded(dataset.x_train)
    assert 0.3 < (dataset.x_train[:, 0] != data.PAD_ID).mean() < 0.5  # reviews over 200 tokens
    assert (dataset.x_test == data.UNKNOWN_ID).mean() < 0.05
    assert_served_from_cache("imdb", dataset, data_dir=data_dir, cache_dir=tmp_path)


def link_real_files(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).symlink_to(path)


def test_corrupt_mnist_file_is_a_checksum_error(tmp_path):
    data_dir = require_real("mnist")
    folder = tmp_path / "data" / "mnist"
    link_real_files(data.find_sources("mnist", data_dir).files["train_labels"].parent, folder)
    corrupt = folder / "train-labels-idx1-ubyte.gz"
    content = bytearray(corrupt.read_bytes())
    content[1000] ^= 0xFF  # flip one byte
    corrupt.unlink()
    corrupt.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match="checksum") as error:
        load("mnist", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    message = str(error.value)
    assert str(corrupt) in message and "BENCH_DATA_DIR" in message


def test_fashion_files_in_the_mnist_folder_are_named(tmp_path):
    data_dir = require_real("fashion_mnist")
    fashion = data.find_sources("fashion_mnist", data_dir).files["train_labels"].parent
    link_real_files(fashion, tmp_path / "mnist")
    with pytest.raises(DatasetError, match="official fashion_mnist/"):
        load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


# --- CIFAR-10 on generated official-format files ----------------------------------------------

CIFAR_LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
CIFAR_LABEL_NAMES += [b"dog", b"frog", b"horse", b"ship", b"truck"]


def official_pickle(content: dict) -> bytes:
    """Pickle protocol 2 with bytes keys, naming numpy's classes as Python 2's numpy did
    (numpy.core.multiarray), as in the official batches read with encoding='bytes'."""
    return pickle.dumps(content, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def write_cifar_batches(folder: Path, rows: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    """data_batch_1..5, test_batch and batches.meta; returns each batch's pixels and labels."""
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    written = {}
    for number, batch in enumerate([*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH]):
        pixels = generator.integers(0, 256, (rows, 3072), dtype=np.uint8)  # CHW, row-major
        labels = [int(label) for label in generator.integers(0, 10, rows)]
        content = {
            b"batch_label": f"training batch {number + 1} of 5".encode(),
            b"labels": labels,
            b"data": pixels,
            b"filenames": [f"image_{number}_{row}.png".encode() for row in range(rows)],
        }
        (folder / batch).write_bytes(official_pickle(content))
        written[batch] = (pixels, labels)
    meta = {b"num_cases_per_batch": rows, b"label_names": CIFAR_LABEL_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(official_pickle(meta))
    return written


def write_cifar_tarball(path: Path, rows: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    staging = path.parent / "staging"
    written = write_cifar_batches(staging / data.CIFAR10_FOLDER, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(staging / data.CIFAR10_FOLDER, arcname=data.CIFAR10_FOLDER)
    return written


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_from_extracted_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_ROWS_PER_BATCH", 8)
    written = write_cifar_batches(tmp_path / "data" / "cifar10" / data.CIFAR10_FOLDER, rows=8)
    dataset = load("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)
    assert_shapes_and_dtypes(dataset, 40, 8)
    train_labels = [label for batch in data.CIFAR10_TRAIN_BATCHES for label in written[batch][1]]
    assert dataset.y_train.tolist() == train_labels
    assert dataset.y_test.tolist() == written["test_batch"][1]

    # CHW byte (channel c, row h, column w) of an image lands at NHWC [h, w, c].
    first, second, test = (
        written[name][0] for name in ("data_batch_1", "data_batch_2", "test_batch")
    )
    for image, channel, row, column in [(0, 0, 0, 0), (3, 2, 5, 7), (7, 1, 31, 0), (2, 0, 0, 31)]:
        chw_index = channel * 1024 + row * 32 + column
        nhwc = (image, row, column, channel)
        assert dataset.x_train[nhwc] == np.float32(first[image, chw_index]) / np.float32(255)
        assert dataset.x_train[8 + image, row, column, channel] * 255 == second[image, chw_index]
        assert dataset.x_test[nhwc] * 255 == test[image, chw_index]
    assert_served_from_cache("cifar10", dataset, data_dir=tmp_path / "data", cache_dir=tmp_path)


def test_cifar_from_the_official_tarball(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_ROWS_PER_BATCH", 8)
    tarball = tmp_path / "data" / "cifar10" / data.CIFAR10_TARBALL
    written = write_cifar_tarball(tarball, rows=8)
    with pytest.raises(DatasetError, match=f"checksum mismatch for {tarball}"):
        load("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)

    monkeypatch.setattr(loader, "CIFAR10_TARBALL_MD5", md5_of(tarball))
    dataset = load("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)
    assert str(tarball) in dataset.source
    from_folder = load(
        "cifar10",
        data_dir=tarball.parent / "staging",
        cache_dir=tmp_path / "other-cache",
        download=False,
    )
    assert_same_arrays(dataset, from_folder)
    assert dataset.y_test.tolist() == written["test_batch"][1]


def test_cifar_at_the_official_size(tmp_path):
    """10,000 rows per batch, as the real files: the sizes DatasetInfo promises."""
    folder = tmp_path / data.CIFAR10_FOLDER
    folder.mkdir()
    for number, batch in enumerate([*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH]):
        pixels = np.zeros((10000, 3072), dtype=np.uint8)
        pixels[:, 2 * 1024 + 31 * 32 + 31] = 255  # blue, bottom-right corner
        labels = [(row + number) % 10 for row in range(10000)]
        (folder / batch).write_bytes(official_pickle({b"data": pixels, b"labels": labels}))
    dataset = load("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)
    info = DATASETS["cifar10"]
    assert_shapes_and_dtypes(dataset, info.train_size, info.test_size)
    assert (dataset.x_test[:, 31, 31, 2] == 1).all() and dataset.x_test[:, :, :, :2].max() == 0
    assert np.bincount(dataset.y_train).tolist() == [5000] * 10


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle", "data_batch_3 is not a CIFAR-10 python batch"),
        (pickle.dumps(RunsCode(), protocol=2), "refusing to unpickle"),
        (
            official_pickle({b"data": np.zeros((7, 3072), np.uint8), b"labels": [0] * 7}),
            r"\(8, 3072\)",
        ),
        (official_pickle({b"data": np.zeros((8, 3072), np.uint8), b"labels": [10] * 8}), "0..9"),
    ],
    ids=["garbage", "code", "rows", "labels"],
)
def test_cifar_rejects_malformed_batches(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(cifar, "CIFAR10_ROWS_PER_BATCH", 8)
    folder = tmp_path / "cifar10"
    write_cifar_batches(folder, rows=8)
    (folder / "data_batch_3").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


# --- SST-2 on small files ---------------------------------------------------------------------

SMALL_SST2_TRAIN = [("1", 'a "great" film'), ("0", "dull , dull"), ("1", "it 's \"fine")]
SMALL_SST2_DEV = [("1", "a great ending"), ("0", 'the "dull" middle')]


def write_tsv(path: Path, header: tuple[str, str], rows, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header), *("\t".join(row) for row in rows)]
    path.write_bytes((newline.join(lines) + newline).encode())


@pytest.mark.filterwarnings("ignore:.*official GLUE SST-2")
@pytest.mark.parametrize("folder", ["sst2", "SST-2", "."])
def test_sst2_column_orders_line_endings_and_quotes(tmp_path, folder):
    root = tmp_path / "data" / folder
    # our copy: label first, CRLF; GLUE's own files: sentence first, LF
    write_tsv(root / "train.tsv", ("label", "sentence"), SMALL_SST2_TRAIN, newline="\r\n")
    write_tsv(root / "dev.tsv", ("sentence", "label"), [row[::-1] for row in SMALL_SST2_DEV])
    dataset = load("sst2", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)
    assert_shapes_and_dtypes(dataset, 3, 2)
    train_texts = [text for _, text in SMALL_SST2_TRAIN]
    vocabulary = build_vocabulary(train_texts, data.TEXT_VOCAB_SIZE)
    assert vocabulary["dull"] == 2  # the most frequent word
    np.testing.assert_array_equal(dataset.x_train, encode(train_texts, vocabulary, 64))
    dev_texts = [text for _, text in SMALL_SST2_DEV]
    np.testing.assert_array_equal(dataset.x_test, encode(dev_texts, vocabulary, 64))
    assert dataset.y_train.tolist() == [1, 0, 1] and dataset.y_test.tolist() == [1, 0]
    unknown = data.UNKNOWN_ID  # "the" and "middle" never occur in train
    assert dataset.x_test[1, -3:].tolist() == [unknown, vocabulary["dull"], unknown]


@pytest.mark.parametrize(
    ("train_lines", "line", "problem"),
    [
        (["label\tsentence", "1\tgood", "0\tbad\textra"], 3, "2 tab-separated fields"),
        (["label\tsentence", "1\tgood", "maybe\tbad"], 3, "label must be 0 or 1"),
        (["label\tsentence", "1\tgood", "0\tfine", "1\t  "], 4, "sentence is empty"),
        (["label\tsentence", "1\tgood", "", "0\tbad"], 3, "empty line"),
        (["label\tsentence", "1 good"], 2, "2 tab-separated fields"),
        (["sentence\tscore", "good\t1"], 1, "header"),
    ],
    ids=["three-fields", "bad-label", "empty-sentence", "blank-line", "no-tab", "no-label-column"],
)
def test_sst2_bad_row_names_file_and_line(tmp_path, train_lines, line, problem):
    (tmp_path / "train.tsv").write_text("\n".join(train_lines) + "\n")
    (tmp_path / "dev.tsv").write_text("label\tsentence\n1\tgood\n")
    with pytest.raises(DatasetError, match=f"train.tsv, line {line}: .*{problem}"):
        load("sst2", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


# --- IMDB on small archives -------------------------------------------------------------------

IMDB_RATINGS = {"neg": 2, "pos": 9}


def imdb_review(split: str, label: str, index: int) -> str:
    return f"A {label.upper()} review<br /><br />number {index} of the {split} split."


def write_imdb_tree(root: Path, per_class: int) -> None:
    """The aclImdb layout, with the unlabelled train/unsup reviews the loader must skip."""
    for split in ("train", "test"):
        for label, rating in IMDB_RATINGS.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                (folder / f"{index}_{rating}.txt").write_text(imdb_review(split, label, index))
        (root / split / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0000000/\n")
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("zebra " * 1000)
    (root / "README").write_text("Large Movie Review Dataset v1.0\n")


def write_imdb_tarball(path: Path, per_class: int) -> Path:
    staging = path.parent / "staging"
    write_imdb_tree(staging / "aclImdb", per_class)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(staging / "aclImdb", arcname="aclImdb")
    return staging / "aclImdb"


def expected_imdb_split(split: str, per_class: int) -> list[str]:
    """Neg before pos; inside a class, by file name ("10_2.txt" sorts before "2_2.txt")."""
    return [
        imdb_review(split, label, index)
        for label, rating in IMDB_RATINGS.items()
        for index in sorted(range(per_class), key=lambda index: f"{index}_{rating}.txt")
    ]


def test_imdb_tarball_and_extracted_tree_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "IMDB_REVIEWS_PER_CLASS", 12)
    tarball = tmp_path / "data" / "imdb" / data.IMDB_LABELED_TARBALL
    tarball.parent.mkdir(parents=True)
    extracted = write_imdb_tarball(tarball, per_class=12)
    dataset = load("imdb", data_dir=tmp_path / "data", cache_dir=tmp_path / "c1", download=False)
    assert_shapes_and_dtypes(dataset, 24, 24)
    assert dataset.y_train.tolist() == [0] * 12 + [1] * 12

    train_texts = expected_imdb_split("train", 12)
    vocabulary = build_vocabulary(train_texts, data.TEXT_VOCAB_SIZE)
    assert "zebra" not in vocabulary and "br" not in vocabulary  # unsup skipped, <br /> removed
    np.testing.assert_array_equal(dataset.x_train, encode(train_texts, vocabulary, 200))
    expected_test = encode(expected_imdb_split("test", 12), vocabulary, 200)
    np.testing.assert_array_equal(dataset.x_test, expected_test)

    from_tree = load("imdb", data_dir=extracted.parent, cache_dir=tmp_path / "c2", download=False)
    assert str(extracted) in from_tree.source
    assert_same_arrays(dataset, from_tree)
    assert_served_from_cache(
        "imdb", from_tree, data_dir=extracted.parent, cache_dir=tmp_path / "c2"
    )


def test_imdb_counts_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "IMDB_REVIEWS_PER_CLASS", 4)
    write_imdb_tarball(tmp_path / "imdb" / data.IMDB_LABELED_TARBALL, per_class=3)
    with pytest.raises(DatasetError, match="train/neg holds 3 reviews, expected 4"):
        load("imdb", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


def test_truncated_imdb_tarball_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "IMDB_REVIEWS_PER_CLASS", 200)
    tarball = tmp_path / "imdb" / data.IMDB_LABELED_TARBALL
    tarball.parent.mkdir()
    write_imdb_tarball(tarball, per_class=200)
    tarball.write_bytes(tarball.read_bytes()[:-3000])
    with pytest.raises(DatasetError, match=f"cannot read {tarball}.*corrupt or truncated"):
        load("imdb", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


def test_official_imdb_name_requires_the_official_md5(tmp_path):
    tarball = tmp_path / data.IMDB_OFFICIAL_TARBALL
    write_imdb_tarball(tarball, per_class=2)
    with pytest.raises(DatasetError, match=f"checksum mismatch for {tarball}"):
        load("imdb", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)


# --- Missing files, downloads, cache ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_files_without_download_name_bench_data_dir(tmp_path, name):
    with pytest.raises(DatasetError) as error:
        load(name, data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", download=False)
    message = str(error.value)
    assert "BENCH_DATA_DIR" in message and "download=False" in message
    assert data.EXPECTED_LAYOUT[name] in message
    if name == "mnist":
        assert all(filename in message for filename in data.IDX_FILES.values())


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def unreachable(url, md5, destination):
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "fetch_url", unreachable)
    with pytest.raises(DatasetError, match="download failed: network unreachable.*BENCH_DATA_DIR"):
        load("cifar10", cache_dir=tmp_path / "cache")


@pytest.mark.filterwarnings("ignore:.*official GLUE SST-2")
def test_download_fills_the_raw_folder_then_the_cache(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "SST-2.zip"  # GLUE's zip layout: SST-2/{train,dev,test}.tsv
    mirror.parent.mkdir()
    with zipfile.ZipFile(mirror, "w") as package:
        package.writestr("SST-2/train.tsv", "sentence\tlabel\ngood film \t1\nbad film \t0\n")
        package.writestr("SST-2/dev.tsv", "sentence\tlabel\nfine\t1\n")
        package.writestr("SST-2/test.tsv", "index\tsentence\n0\tunlabelled\n")
    fetched = []

    def fake_fetch(url, md5, destination):
        fetched.append(url)
        destination.write_bytes(mirror.read_bytes())

    monkeypatch.setattr(download, "fetch_url", fake_fetch)
    cache = tmp_path / "cache"
    dataset = load("sst2", cache_dir=cache)
    assert fetched == [data.SST2_URL]
    assert (cache / "raw" / "sst2" / "train.tsv").is_file()
    assert dataset.y_train.tolist() == [1, 0] and dataset.y_test.tolist() == [1]
    assert_served_from_cache("sst2", dataset, cache_dir=cache)
    for cached_file in cache.glob("*.npz"):
        cached_file.unlink()
    from_raw = load("sst2", cache_dir=cache, download=False)  # raw files, no new download
    assert str(cache / "raw" / "sst2") in from_raw.source
    assert fetched == [data.SST2_URL]


def test_download_tries_the_next_mnist_mirror(tmp_path, monkeypatch):
    """The real fetch_url, with pooch replaced by a local mirror whose first host is down."""
    real_folder = data.find_sources("mnist", require_real("mnist")).files["train_images"].parent
    requests = []

    def retrieve(url, known_hash, fname, path, progressbar):
        requests.append((url, known_hash))
        if url.startswith(data.MNIST_MIRRORS[0]):
            raise ConnectionError("first mirror down")
        Path(path, fname).symlink_to(real_folder / url.rsplit("/", 1)[1])
        return str(Path(path, fname))

    monkeypatch.setitem(sys.modules, "pooch", types.SimpleNamespace(retrieve=retrieve))
    monkeypatch.setattr(download, "fetch_url", REAL_FETCH_URL)
    dataset = load("mnist", cache_dir=tmp_path)
    assert dataset.x_train.shape == (60000, 28, 28, 1)
    assert len(requests) == 8  # four files, two mirrors each
    assert ("http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
            "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873") in requests  # fmt: skip


def test_download_without_pooch_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)  # makes `import pooch` fail
    with pytest.raises(DatasetError, match=r"pooch.*\[download\]"):
        REAL_FETCH_URL(data.CIFAR10_URL, data.CIFAR10_TARBALL_MD5, tmp_path / "x.tar.gz")


def small_sst2(root: Path) -> Path:
    write_tsv(root / "sst2" / "train.tsv", ("label", "sentence"), SMALL_SST2_TRAIN)
    write_tsv(root / "sst2" / "dev.tsv", ("label", "sentence"), SMALL_SST2_DEV)
    return root


@pytest.mark.filterwarnings("ignore:.*official GLUE SST-2")
def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path):
    data_dir, cache = small_sst2(tmp_path / "data"), tmp_path / "cache"
    first = load("sst2", data_dir=data_dir, cache_dir=cache, download=False)
    (cached_file,) = cache.glob("sst2-*.npz")
    cached_file.write_bytes(cached_file.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="ignoring cache file"):
        rebuilt = load("sst2", data_dir=data_dir, cache_dir=cache, download=False)
    assert not rebuilt.source.startswith("cache ")
    assert_same_arrays(first, rebuilt)
    assert_served_from_cache("sst2", first, data_dir=data_dir, cache_dir=cache)
    assert not list(cache.glob(".*.tmp")), "the atomic write left a temporary file"


@pytest.mark.filterwarnings("ignore:.*official GLUE SST-2")
def test_cache_key_follows_the_sources_and_the_format_version(tmp_path, monkeypatch):
    data_dir, cache = small_sst2(tmp_path / "data"), tmp_path / "cache"
    load("sst2", data_dir=data_dir, cache_dir=cache, download=False)
    write_tsv(data_dir / "sst2" / "dev.tsv", ("label", "sentence"), [("0", "dull")])
    changed = load("sst2", data_dir=data_dir, cache_dir=cache, download=False)
    assert not changed.source.startswith("cache ") and changed.y_test.tolist() == [0]
    assert len(list(cache.glob("sst2-v*.npz"))) == 2

    monkeypatch.setattr(store, "FORMAT_VERSION", store.FORMAT_VERSION + 1)
    newer = load("sst2", data_dir=data_dir, cache_dir=cache, download=False)
    assert not newer.source.startswith("cache ")
    assert len(list(cache.glob(f"sst2-v{store.FORMAT_VERSION}-*.npz"))) == 1


def test_default_directories_follow_the_environment(monkeypatch, tmp_path):
    assert data.default_data_dir() is None
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert data.default_cache_dir() == tmp_path / "default-cache"
    monkeypatch.delenv("BENCH_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / ".cache" / "bench"


# --- Tokenization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("It's a <br />GREAT film, isn't it?", ["it's", "a", "great", "film", "isn't", "it"]),
        ("end.<br /><br />Start<BR/>again", ["end", "start", "again"]),
        ("'quoted' rock'n'roll 10/10 -- ok", ["quoted", "rock'n'roll", "10", "10", "ok"]),
        ("it 's", ["it", "s"]),
        ("  ", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_vocabulary_ranks_by_count_then_alphabetically():
    texts = ["b a c", "a b", "a", "d c"]  # a: 3, b: 2, c: 2, d: 1
    assert build_vocabulary(texts, vocab_size=6) == {"a": 2, "b": 3, "c": 4, "d": 5}
    assert build_vocabulary(texts, vocab_size=4) == {"a": 2, "b": 3}  # b beats c on the tie
    assert build_vocabulary(texts, vocab_size=2) == {}
    with pytest.raises(ValueError, match="at least 2"):
        build_vocabulary(texts, vocab_size=1)


def test_encode_pads_and_truncates_at_the_front_like_keras():
    """keras.utils.pad_sequences defaults: padding='pre', truncating='pre', value=0."""
    vocabulary = {"a": 2, "b": 3, "c": 4}
    encoded = encode(["a b", "a b c a b", "zzz a", "", "c"], vocabulary, seq_len=3)
    assert encoded.dtype == np.int32
    assert encoded.tolist() == [[0, 2, 3], [4, 2, 3], [0, 1, 2], [0, 0, 0], [0, 0, 4]]
    assert encode([], vocabulary, seq_len=3).shape == (0, 3)
    with pytest.raises(TypeError):
        encode("a b", vocabulary, seq_len=3)
    with pytest.raises(ValueError):
        encode(["a"], vocabulary, seq_len=0)


# --- Registry, synthetic twins, imports -------------------------------------------------------


def test_registry():
    sizes = {name: (info.train_size, info.test_size) for name, info in DATASETS.items()}
    assert sizes == {
        "mnist": (60000, 10000),
        "fashion_mnist": (60000, 10000),
        "cifar10": (50000, 10000),
        "sst2": (67349, 872),
        "imdb": (25000, 25000),
    }
    for info in DATASETS.values():
        if info.kind == "text":
            assert info.input_shape == (info.seq_len,) and info.vocab_size == 20000


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_synthetic_twin_has_the_real_shapes(name):
    info = DATASETS[name]
    dataset = load(name, synthetic=True, seed=3)
    assert dataset.synthetic and dataset.source == "synthetic seed=3"
    assert_shapes_and_dtypes(dataset, info.train_size, info.test_size)
    assert set(np.unique(dataset.y_test)) == set(range(info.num_classes))
    if info.kind == "image":
        assert dataset.x_test.min() >= 0 and dataset.x_test.max() < 1
    else:
        assert dataset.x_test.min() >= 2 and dataset.x_test.max() < info.vocab_size


def test_synthetic_is_deterministic_in_the_seed():
    first, again, other = synthetic("sst2", seed=5), synthetic("sst2", 5), synthetic("sst2", 6)
    assert_same_arrays(first, again)
    assert not np.array_equal(first.x_train, other.x_train)
    assert_same_arrays(first, load("sst2", synthetic=True, seed=5))


@pytest.mark.parametrize("name", ["mnist", "sst2"])
def test_a_limited_twin_is_the_full_twins_first_samples(name):
    """A run limited to N samples makes only those, the same values as the full twin's."""
    full = synthetic(name, seed=2)
    small = load(name, synthetic=True, seed=2, train_limit=300, test_limit=40)
    assert len(small.y_train) == 300 and len(small.y_test) == 40
    for split in ("x_train", "y_train", "x_test", "y_test"):
        count = len(getattr(small, split))
        np.testing.assert_array_equal(getattr(small, split), getattr(full, split)[:count])
    beyond = synthetic(name, seed=2, train_count=10**9)  # a limit past the split: all of it
    assert len(beyond.y_train) == len(full.y_train)


def test_unknown_dataset_names_the_valid_ones():
    for call in (lambda: load("svhn"), lambda: synthetic("svhn")):
        with pytest.raises(ValueError, match="svhn.*mnist, fashion_mnist, cifar10, sst2, imdb"):
            call()


def test_importing_the_module_loads_no_framework_and_no_pooch():
    code = (
        "import sys, bench.data; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'jax', 'tensorflow', 'keras', 'pooch')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "[]"
