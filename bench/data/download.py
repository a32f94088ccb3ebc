"""Downloads of the official files into the cache's raw/<name>/, through pooch.

pooch is imported inside `fetch_url`, only when a download runs. Every download goes through
`fetch_url` in this module (tests replace it there so that none touches the network).
"""

import os
import zipfile
from pathlib import Path

from bench.data.cifar import CIFAR10_TARBALL, CIFAR10_TARBALL_MD5, CIFAR10_URL
from bench.data.idx import FASHION_MNIST_MIRRORS, MNIST_MIRRORS, OFFICIAL_MD5
from bench.data.registry import DatasetError
from bench.data.store import corrupt_archive_message
from bench.data.text import IMDB_OFFICIAL_MD5, IMDB_OFFICIAL_TARBALL, IMDB_URL, SST2_FILES, SST2_URL


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
