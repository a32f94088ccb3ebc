"""Text datasets: the shared tokenizer, SST-2 (GLUE TSV files) and IMDB (aclImdb).

Text is tokenized here, once, into pre-padded integer arrays (DESIGN.md, fairness invariant 5),
so no framework's tokenizer is compared. The vocabulary is built from the train split only.
"""

import csv
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from bench.data.registry import DATASETS, FIRST_WORD_ID, PAD_ID, UNKNOWN_ID, DatasetError, Sources
from bench.data.store import read_tar_gz

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


# --- SST-2 ------------------------------------------------------------------------------------

SST2_FILES = {"train": "train.tsv", "test": "dev.tsv"}  # dev is labelled; GLUE's test is not
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"


def find_sst2(name: str, folder: Path) -> Sources | None:
    files = {split: folder / filename for split, filename in SST2_FILES.items()}
    if all(path.is_file() for path in files.values()):
        return Sources(name, "tsv", files)
    return None


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


# --- IMDB -------------------------------------------------------------------------------------

IMDB_OFFICIAL_TARBALL = "aclImdb_v1.tar.gz"
IMDB_OFFICIAL_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"  # aclImdb_v1.tar.gz as Stanford ships it
IMDB_LABELED_TARBALL = "aclImdb_v1_labeled.tar.gz"  # a repack without train/unsup: no official md5
IMDB_REVIEWS_PER_CLASS = 12500  # per split (train, test) and class (neg, pos)
IMDB_LABELS = {"neg": 0, "pos": 1}

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"

IMDB_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")


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
