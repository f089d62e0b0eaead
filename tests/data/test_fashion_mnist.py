"""Loader search order, download with checksums, and error messages, on small real-format files."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bofexits.data._files import DatasetFiles, RemoteFile, cache_root, candidate_dirs
from bofexits.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    load_fashion_mnist,
    load_mnist,
)
from bofexits.data.idx import write_idx
from bofexits.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def make_files(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0) -> None:
    """Write the four IDX files exactly as the dataset ships them (optionally unpacked)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        np.arange(n_train, dtype=np.uint8) % 10,
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        np.arange(n_test, dtype=np.uint8) % 10,
    )
    for stem, array in zip(STEMS, arrays, strict=True):
        write_idx(directory / (stem + suffix), array)


@pytest.mark.parametrize("gz", [True, False])
def test_loads_from_root(tmp_path: Path, gz: bool) -> None:
    make_files(tmp_path / "d", gz=gz)
    train, test = load_fashion_mnist(tmp_path / "d", download=False)
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (5, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [i % 10 for i in range(12)]
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    assert train.mean == (0.2860,) and train.std == (0.3530,)
    assert (train.name, test.name) == ("fashion-mnist/train", "fashion-mnist/test")


def test_root_subdirectory_and_str_root(tmp_path: Path) -> None:
    make_files(tmp_path / "data" / "fashion-mnist")
    train, _ = load_fashion_mnist(str(tmp_path / "data"), download=False)
    assert len(train) == 12


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_files(tmp_path / "system" / "fashion-mnist", n_train=11)
    assert len(load_fashion_mnist(download=False)[0]) == 11
    make_files(tmp_path / "xdg" / "bofexits" / "fashion-mnist", n_train=13)
    assert len(load_fashion_mnist(download=False)[0]) == 13
    make_files(tmp_path / "env" / "fashion-mnist", n_train=14)
    monkeypatch.setenv("BOFEXITS_DATA", str(tmp_path / "env"))
    assert len(load_fashion_mnist(download=False)[0]) == 14
    make_files(tmp_path / "root", n_train=15)
    assert len(load_fashion_mnist(tmp_path / "root", download=False)[0]) == 15


def test_incomplete_root_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    # An explicit --data-dir is where the user says the data is: reading the system copy instead
    # would train on other data without a word.
    make_files(tmp_path / "system" / "fashion-mnist", n_train=11)
    make_files(tmp_path / "root")
    (tmp_path / "root" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"--data-dir .*root lacks the Fashion-MNIST files \(missing: t10k-labels"):
        load_fashion_mnist(tmp_path / "root", download=True)


def test_cache_dir_default_and_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "bofexits"
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert candidate_dirs(FASHION_MNIST_FILES, None)[0] == Path("/x/bofexits/fashion-mnist")


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "empty", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "train-images-idx3-ubyte.gz" in message and "t10k-labels" in message
    assert "internet" in message
    assert str(tmp_path / "empty") in message


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    make_files(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-6])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path, download=False)


def test_mismatched_counts_and_bad_labels(tmp_path: Path) -> None:
    make_files(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_fashion_mnist(tmp_path, download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="label 10"):
        load_fashion_mnist(tmp_path, download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((5, 1), dtype=np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_fashion_mnist(tmp_path, download=False)


def tiny_spec(tmp_path: Path) -> tuple[DatasetFiles, dict[str, bytes]]:
    """A Fashion-MNIST-like spec whose checksums match small generated files."""
    make_files(tmp_path / "src")
    payloads = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    files = tuple(RemoteFile(s + ".gz", hashlib.md5(payloads[s + ".gz"]).hexdigest()) for s in STEMS)
    spec = DatasetFiles(
        FASHION_MNIST_FILES.name, FASHION_MNIST_FILES.title, files, FASHION_MNIST_FILES.mirrors, "dataset-x"
    )
    return spec, payloads


def test_download_with_good_checksums(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, payloads = tiny_spec(tmp_path)
    monkeypatch.setattr("bofexits.data.fashion_mnist.FASHION_MNIST_FILES", spec)
    seen: list[tuple[str, float]] = []
    serve(payloads, seen)
    train, test = load_fashion_mnist()
    assert (len(train), len(test)) == (12, 5)
    assert [u for u, _ in seen] == [
        f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{s}.gz" for s in STEMS
    ]
    assert all(0 < t <= 600 for _, t in seen)
    cache = tmp_path / "xdg" / "bofexits" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)
    seen.clear()
    load_fashion_mnist()  # second call uses the cache, no network
    assert seen == []


def test_download_checksum_mismatch(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, payloads = tiny_spec(tmp_path)  # served files do not match the real published MD5s
    serve(payloads, [])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz.*MD5.*8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    ):
        load_fashion_mnist()
    cache = tmp_path / "xdg" / "bofexits" / "fashion-mnist"
    assert list(cache.iterdir()) == []  # nothing half-written or unverified left behind


def test_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float | None = None) -> None:
        raise urllib.error.URLError(OSError("Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        load_fashion_mnist()
    message = str(info.value)
    assert "name resolution" in message and "\n" not in message
    assert "apt-get install" in message and "--data-dir" in message and "internet" in message
    assert list((tmp_path / "xdg" / "bofexits" / "fashion-mnist").iterdir()) == []


def test_timeout_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(url: str, timeout: float | None = None) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(DataError, match="timed out"):
        load_mnist()


def test_mnist_from_root(tmp_path: Path) -> None:
    make_files(tmp_path / "mnist")
    train, test = load_mnist(tmp_path, download=False)
    assert train.classes == tuple("0123456789") and train.mean == (0.1307,) and train.std == (0.3081,)
    assert train.name == "mnist/train" and len(test) == 5


def test_mnist_message_has_no_apt_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_mnist(download=False)
    assert "apt-get" not in str(info.value) and "--data-dir" in str(info.value)


def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    if not all((DEBIAN_DIR / (s + ".gz")).is_file() for s in STEMS):
        pytest.skip(
            "Debian dataset-fashion-mnist files not installed (apt-get install dataset-fashion-mnist)"
        )
    start = time.perf_counter()
    train, test = load_fashion_mnist(DEBIAN_DIR, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert time.perf_counter() - start < 10
