"""SVHN loader on small .mat files written like the official ones: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from bofexits.data._files import DOWNLOAD_TIMEOUT_S, DatasetFiles, RemoteFile
from bofexits.data.registry import dataset_info, list_datasets, load_dataset
from bofexits.data.svhn import SVHN_CLASSES, SVHN_FILES, load_svhn
from bofexits.errors import DataError

NAMES = ("train_32x32.mat", "test_32x32.mat")


def make_mat(path: Path, n: int, seed: int = 0, **override: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write one SVHN-format file; labels cycle through 1..10 so the 10 (= digit 0) case is always there."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n, dtype=np.uint8) % 10 + 1).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": x, "y": y, **override})
    return x, y


def make_files(directory: Path, n_train: int = 12, n_test: int = 5) -> tuple[np.ndarray, np.ndarray]:
    make_mat(directory / NAMES[1], n_test, seed=1)
    return make_mat(directory / NAMES[0], n_train)


def test_loads_transposes_and_maps_ten_to_zero(tmp_path: Path) -> None:
    x, y = make_files(tmp_path / "d")
    train, test = load_svhn(tmp_path / "d", download=False)
    assert train.images.shape == (12, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (5, 3, 32, 32) and train.labels.dtype == torch.int64
    for i, c, h, w in [(0, 0, 0, 0), (3, 2, 5, 17), (11, 1, 31, 2)]:
        assert int(train.images[i, c, h, w]) == int(x[h, w, c, i])
    assert train.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # file labels 1..10, 10 -> 0
    assert train.classes == SVHN_CLASSES == tuple("0123456789")
    assert train.mean == (0.4377, 0.4438, 0.4728) and train.std == (0.1980, 0.2010, 0.1970)
    assert (train.name, test.name) == ("svhn/train", "svhn/test")


def test_float_labels_and_search_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mat(tmp_path / "env" / "svhn" / NAMES[1], 3, y=np.array([[10.0], [1.0], [2.0]]))
    make_mat(tmp_path / "env" / "svhn" / NAMES[0], 4)
    monkeypatch.setenv("BOFEXITS_DATA", str(tmp_path / "env"))
    _, test = load_svhn(download=False)
    assert test.labels.tolist() == [0, 1, 2]


def test_missing_files_message(tmp_path: Path) -> None:
    make_mat(tmp_path / "d" / NAMES[0], 2)  # test file missing: the folder is incomplete
    with pytest.raises(DataError) as info:
        load_svhn(tmp_path / "d", download=False)
    message = str(info.value)
    assert "\n" not in message and "train_32x32.mat, test_32x32.mat" in message
    assert "--data-dir" in message and "internet" in message and str(tmp_path / "d") in message
    assert "gzipped" not in message


@pytest.mark.parametrize("cut", [100, 1000, -10])
def test_truncated_file_is_named(tmp_path: Path, cut: int) -> None:
    make_files(tmp_path)
    bad = tmp_path / NAMES[0]
    bad.write_bytes(bad.read_bytes()[:cut])
    with pytest.raises(DataError, match=r"train_32x32\.mat.*(corrupt|damaged).*download it again"):
        load_svhn(tmp_path, download=False)


def test_not_a_mat_file(tmp_path: Path) -> None:
    make_files(tmp_path)
    (tmp_path / NAMES[1]).write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(DataError, match=r"test_32x32\.mat is not a readable SVHN \.mat file"):
        load_svhn(tmp_path, download=False)


@pytest.mark.parametrize(
    ("variables", "match"),
    [
        ({"images": np.zeros((32, 32, 3, 2), np.uint8)}, "lacks the variables X and y"),
        ({"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))}, r"expected uint8 \(32, 32, 3, N\)"),
        ({"X": np.zeros((32, 32, 3, 2), np.float64), "y": np.ones((2, 1))}, "float64"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))}, "2 images but y"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]])}, r"integers 1\.\.10.*\[0, 1\]"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[11], [1]])}, r"integers 1\.\.10"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.5], [1]])}, r"integers 1\.\.10"),
    ],
)
def test_unexpected_content_is_rejected(tmp_path: Path, variables: dict[str, np.ndarray], match: str) -> None:
    make_files(tmp_path)
    savemat(tmp_path / NAMES[0], variables)
    with pytest.raises(DataError, match=match) as info:
        load_svhn(tmp_path, download=False)
    assert "train_32x32.mat" in str(info.value)


def test_without_scipy_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import loadmat` fail
    with pytest.raises(DataError) as info:
        load_svhn(tmp_path, download=True)  # before looking for (or downloading) files
    assert "pip install scipy" in str(info.value) and "pip install bofexits[svhn]" in str(info.value)


def test_download_with_good_checksums(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_files(tmp_path / "src")
    payloads = {name: (tmp_path / "src" / name).read_bytes() for name in NAMES}
    files = tuple(RemoteFile(name, hashlib.md5(payloads[name]).hexdigest()) for name in NAMES)
    monkeypatch.setattr(
        "bofexits.data.svhn.SVHN_FILES", DatasetFiles("svhn", "SVHN", files, SVHN_FILES.mirrors)
    )
    seen: list[tuple[str, float]] = []
    serve(payloads, seen)
    train, test = load_svhn()
    assert (len(train), len(test)) == (12, 5)
    assert seen == [(f"http://ufldl.stanford.edu/housenumbers/{n}", DOWNLOAD_TIMEOUT_S) for n in NAMES]
    assert sorted(p.name for p in (tmp_path / "xdg" / "bofexits" / "svhn").iterdir()) == sorted(NAMES)
    seen.clear()
    load_svhn()
    assert seen == []


def test_download_checksum_mismatch(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_files(tmp_path / "src")
    serve({name: (tmp_path / "src" / name).read_bytes() for name in NAMES}, [])
    with pytest.raises(DataError, match=r"train_32x32\.mat.*MD5.*e26dedcc434d2e4c54c9b2d4a06d8373"):
        load_svhn()
    assert list((tmp_path / "xdg" / "bofexits" / "svhn").iterdir()) == []


def test_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float | None = None) -> None:
        raise urllib.error.URLError(OSError("Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(
        DataError, match=r"SVHN is not on this machine.*train_32x32\.mat.*unreachable.*--data-dir"
    ):
        load_svhn()


def test_registry(tmp_path: Path) -> None:
    make_files(tmp_path / "svhn")
    assert "svhn" in list_datasets()
    train, _ = load_dataset("svhn", tmp_path, download=False)
    assert dataset_info("svhn") == (tuple(train.images.shape[1:]), len(train.classes))
