"""Steps common to every dataset: file checksums, the cache of decoded arrays, .tar.gz reading.

The cache holds decoded arrays in `<cache>/<name>-v<FORMAT_VERSION>-<key>.npz`, the key made
from the source files' md5 (or, for an extracted IMDB tree, a digest of names, sizes and mtimes),
the dataset's shapes and FORMAT_VERSION. Files are written atomically; a missing, stale or
corrupt cache file is ignored with a warning and rebuilt.
"""

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.data.registry import DATASETS, Dataset, DatasetError

# Bump when decoding, tokenization or the cache layout changes: old cache files are then unused.
FORMAT_VERSION = 1


# --- Checksums --------------------------------------------------------------------------------


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):  # 1 MiB
            digest.update(chunk)
    return digest.hexdigest()


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


# --- Archives ---------------------------------------------------------------------------------


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
