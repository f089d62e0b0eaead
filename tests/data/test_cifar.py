"""CIFAR-10/100 loaders on small files in the official format: pickled batches, meta files, tar.gz archives."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bofexits.data import _files, cifar
from bofexits.data._files import DOWNLOAD_TIMEOUT_S, DatasetFiles, RemoteFile
from bofexits.data.cifar import load_cifar10, load_cifar100
from bofexits.data.registry import dataset_info, list_datasets, load_dataset
from bofexits.errors import DataError

CLASSES10 = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]
PER_BATCH = 4


def py2_pickle(obj: object) -> bytes:
    """Protocol 2, with numpy's array rebuild under its numpy-1 name, as in the files the authors ship."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def batch(data: np.ndarray, labels: list[int], label_key: bytes = b"labels", **extra: object) -> bytes:
    content: dict[bytes, object] = {
        b"batch_label": b"training batch 1 of 5",
        label_key: labels,
        b"data": data,
        b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
    }
    content.update({k.encode(): v for k, v in extra.items()})
    return py2_pickle(content)


def make_cifar10(directory: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write cifar-10-batches-py/ under ``directory``; return train/test images (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(seed)
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, PER_BATCH).tolist()
        (folder / name).write_bytes(batch(data, labels))
        arrays.append((data, np.array(labels)))
    meta = {b"label_names": CLASSES10, b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    train_x = np.concatenate([a[0] for a in arrays[:5]]).reshape(-1, 3, 32, 32)
    train_y = np.concatenate([a[1] for a in arrays[:5]])
    return train_x, train_y, arrays[5][0].reshape(-1, 3, 32, 32), arrays[5][1]


def make_cifar100(directory: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write cifar-100-python/ under ``directory``; return the train fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = directory / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = coarse = np.zeros(0)
    for name, n in (("train", 6), ("test", 3)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        coarse = fine // 5
        content = batch(data, fine.tolist(), b"fine_labels", coarse_labels=coarse.tolist())
        (folder / name).write_bytes(content)
        if name == "train":
            train_fine, train_coarse = fine, coarse
    meta = {
        b"fine_label_names": [b"fine%d" % i for i in range(100)],
        b"coarse_label_names": [b"coarse%d" % i for i in range(20)],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))
    return train_fine, train_coarse


def make_archive(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """Pack ``folder`` as the authors do (one top-level folder, gzip); ``extra`` adds raw members."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        for name, payload in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive.read_bytes()


def test_cifar10_from_folder(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = make_cifar10(tmp_path / "d")
    train, test = load_cifar10(tmp_path / "d", download=False)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32) and test.labels.dtype == torch.int64
    assert torch.equal(train.images, torch.from_numpy(train_x)) and torch.equal(
        test.images, torch.from_numpy(test_x)
    )
    assert train.labels.tolist() == train_y.tolist() and test.labels.tolist() == test_y.tolist()
    assert train.classes == tuple(c.decode() for c in CLASSES10)
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    assert (train.name, test.name) == ("cifar10/train", "cifar10/test")


def test_row_layout_is_red_green_blue_planes(tmp_path: Path) -> None:
    """Row bytes 0..1023 are the red plane in row-major order, then green, then blue."""
    make_cifar10(tmp_path)
    row = np.zeros(3072, dtype=np.uint8)
    row[1024 + 32 * 2 + 5] = 200  # green, row 2, column 5
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch_file.write_bytes(batch(np.stack([row] * PER_BATCH), [3] * PER_BATCH))
    _, test = load_cifar10(tmp_path, download=False)
    assert test.images[0, 1, 2, 5] == 200 and int(test.images[0].sum()) == 200


def test_archive_equals_folder_and_other_places(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "src")
    make_archive(
        tmp_path / "src" / "cifar-10-batches-py", tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    )
    from_archive = load_cifar10(tmp_path / "data", download=False)  # root/<name>/archive
    from_folder = load_cifar10(tmp_path / "src", download=False)
    from_inside = load_cifar10(tmp_path / "src" / "cifar-10-batches-py", download=False)  # root = the folder
    for a, b, c in zip(from_archive, from_folder, from_inside, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes
        assert torch.equal(c.images, b.images)
    assert not (tmp_path / "data" / "cifar10" / "cifar-10-batches-py").exists()  # read in place, not unpacked


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    fine, coarse = make_cifar100(tmp_path / "cifar100")
    make_archive(
        tmp_path / "cifar100" / "cifar-100-python",
        tmp_path / "system" / "cifar100" / "cifar-100-python.tar.gz",
    )
    for root in (tmp_path, None):  # extracted under root/cifar100, then the archive in the system dir
        train, test = load_cifar100(root, download=False)
        assert train.labels.tolist() == fine.tolist() and train.labels.tolist() != coarse.tolist()
        assert train.images.shape == (6, 3, 32, 32) and len(test) == 3
        assert len(train.classes) == 100 and train.classes[7] == "fine7"
        assert train.name == "cifar100/train" and train.mean == (0.5071, 0.4865, 0.4409)


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar10(None, download=False)
    message = str(info.value)
    assert "\n" not in message and "download=False" in message
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/" in message
    assert "--data-dir" in message and "internet" in message and str(tmp_path / "xdg") in message
    assert "gzipped or not" not in message and "apt-get" not in message


def test_explicit_data_dir_without_the_files_is_an_error(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "xdg" / "bofexits" / "cifar10")  # a copy elsewhere must not be read instead
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path / "empty", download=True)
    message = str(info.value)
    assert "\n" not in message and f"--data-dir {tmp_path / 'empty'} lacks the CIFAR-10 files" in message
    assert "missing: cifar-10-python.tar.gz" in message and "drop --data-dir" in message and "internet" in message


def test_missing_member_is_named(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_3.*download"):
        load_cifar10(tmp_path, download=False)


@pytest.mark.parametrize("where", ["root", "cache"])
def test_truncated_archive(tmp_path: Path, where: str) -> None:
    make_cifar10(tmp_path / "src")
    target = tmp_path / ("root" if where == "root" else "xdg/bofexits/cifar10") / "cifar-10-python.tar.gz"
    payload = make_archive(tmp_path / "src" / "cifar-10-batches-py", target)
    target.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*corrupt or truncated.*download it again"):
        load_cifar10(tmp_path / "root" if where == "root" else None, download=False)


def test_truncated_batch_names_the_file(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_2 is not a CIFAR pickle.*download"):
        load_cifar10(tmp_path, download=False)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2, 3], "holds a list, not the dict"),
        ({b"labels": [0] * PER_BATCH}, r"no b'data' entry"),
        ({b"data": np.zeros((PER_BATCH, 3072), np.uint8)}, r"no b'labels' entry"),
        (
            {b"data": np.zeros((PER_BATCH, 784), np.uint8), b"labels": [0] * PER_BATCH},
            r"expected uint8 \(N, 3072\)",
        ),
        ({b"data": np.zeros((PER_BATCH, 3072), np.float32), b"labels": [0] * PER_BATCH}, "float32"),
        ({b"data": np.zeros((PER_BATCH, 3072), np.uint8), b"labels": [0] * 3}, "4 images but labels"),
        (
            {b"data": np.zeros((PER_BATCH, 3072), np.uint8), b"labels": [0, 1, 2, 10]},
            r"span \[0, 10\].*10 classes",
        ),
    ],
)
def test_unexpected_structure_is_rejected(tmp_path: Path, content: object, match: str) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(py2_pickle(content))
    with pytest.raises(DataError, match=match) as info:
        load_cifar10(tmp_path, download=False)
    assert "data_batch_1" in str(info.value) and "download" in str(info.value)


def test_meta_must_name_every_class(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(
        py2_pickle({b"label_names": CLASSES10[:9]})
    )
    with pytest.raises(DataError, match=r"batches\.meta.*9 entries, expected 10"):
        load_cifar10(tmp_path, download=False)


class Exploit:
    """Unpickling this would create a folder: a stand-in for arbitrary code in a planted file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.makedirs, (self.path,)


def test_pickle_cannot_run_code(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": Exploit(marker), b"labels": [0]}, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(payload)
    with pytest.raises(DataError, match="makedirs"):
        load_cifar10(tmp_path, download=False)
    assert not marker.exists()


def use_checksum_of(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> None:
    """Make CIFAR-10's published MD5 that of ``payload`` so a small archive passes the download check."""
    spec = cifar.CIFAR10_FILES
    remote = dataclasses.replace(spec.files[0], md5=hashlib.md5(payload).hexdigest())
    layout = dataclasses.replace(cifar._CIFAR10, spec=dataclasses.replace(spec, files=(remote,)))
    monkeypatch.setattr(cifar, "_CIFAR10", layout)


def test_download_verifies_and_unpacks_once(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_x, *_ = make_cifar10(tmp_path / "src")
    payload = make_archive(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "a.tar.gz")
    use_checksum_of(monkeypatch, payload)
    seen: list[tuple[str, float]] = []
    serve({"cifar-10-python.tar.gz": payload}, seen)
    train, _ = load_cifar10()
    assert torch.equal(train.images, torch.from_numpy(train_x))
    assert seen == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", DOWNLOAD_TIMEOUT_S)]
    cache = tmp_path / "xdg" / "bofexits" / "cifar10"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-py"]  # unpacked; no archive or temp left
    seen.clear()
    load_cifar10()
    assert seen == []


def test_download_checksum_mismatch(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cifar10(tmp_path / "src")
    payload = make_archive(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "a.tar.gz")
    serve({"cifar-10-python.tar.gz": payload}, [])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*MD5.*c58f30108f718f92721af3b95e74349a"):
        load_cifar10()
    assert list((tmp_path / "xdg" / "bofexits" / "cifar10").iterdir()) == []


def test_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts: list[float | None] = []

    def offline(url: str, timeout: float | None = None) -> None:
        timeouts.append(timeout)
        raise urllib.error.URLError(OSError("Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        load_cifar100()
    message = str(info.value)
    assert (
        "name resolution" in message
        and "cifar-100-python.tar.gz" in message
        and "cifar-100-python/" in message
    )
    assert "--data-dir" in message and timeouts == [DOWNLOAD_TIMEOUT_S]


@pytest.mark.parametrize("data_filter", [True, False], ids=["filter", "old-python"])
def test_unsafe_archive_is_not_unpacked(
    serve: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool
) -> None:
    if not data_filter:
        monkeypatch.delattr(
            tarfile, "data_filter"
        )  # the manual member check of Pythons without filter="data"
    make_cifar10(tmp_path / "src")
    payload = make_archive(
        tmp_path / "src" / "cifar-10-batches-py", tmp_path / "a.tar.gz", extra={"../../escaped.txt": b"x"}
    )
    use_checksum_of(monkeypatch, payload)
    serve({"cifar-10-python.tar.gz": payload}, [])
    with pytest.raises(
        DataError, match=r"cannot unpack .*escaped\.txt.*not the official one.*download it again"
    ):
        load_cifar10()
    cache = tmp_path / "xdg" / "bofexits"
    assert not (cache / "escaped.txt").exists() and not (tmp_path / "xdg" / "escaped.txt").exists()
    assert [p.name for p in (cache / "cifar10").iterdir()] == [
        "cifar-10-python.tar.gz"
    ]  # no half-unpacked folder


@pytest.mark.parametrize("data_filter", [True, False], ids=["filter", "old-python"])
def test_unpack_helper_refuses_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool
) -> None:
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    make_cifar10(tmp_path / "src")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        link = tarfile.TarInfo("cifar-10-batches-py/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match=r"cannot unpack .*passwd"):
        _files._extract(archive, "cifar-10-batches-py", dest)
    assert list(dest.iterdir()) == []


def test_registry(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar10")
    assert {"cifar10", "cifar100"} <= set(list_datasets())
    train, _ = load_dataset("cifar10", tmp_path, download=False)
    assert dataset_info("cifar10") == (tuple(train.images.shape[1:]), len(train.classes))
    assert dataset_info("cifar100") == ((3, 32, 32), 100)


def test_spec_without_folder_keeps_old_message() -> None:
    spec = DatasetFiles("x", "X", (RemoteFile("a.gz", "0"), RemoteFile("b.gz", "1")), ("http://h/",))
    assert "put a.gz, b.gz (gzipped or not) in a directory" in _files._help(spec)
