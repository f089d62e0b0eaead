"""IDX reading/writing against the real on-disk format, including damaged files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bofexits.data.idx import read_idx, write_idx
from bofexits.errors import DataError, InputError


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left behind


def test_writes_big_endian_spec_header(tmp_path: Path) -> None:
    write_idx(tmp_path / "a", np.array([1, 258], dtype=np.int16))
    raw = (tmp_path / "a").read_bytes()
    assert raw == b"\x00\x00\x0b\x01" + struct.pack(">I", 2) + b"\x00\x01\x01\x02"
    write_idx(tmp_path / "a.gz", np.array([1, 258], dtype=np.int16))
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == raw


def test_reads_gzip_named_without_gz(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    (tmp_path / "a.gz").rename(tmp_path / "plain")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), np.arange(5))


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((50, 28, 28), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x\.gz.*(corrupt|truncated).*delete"):
        read_idx(path)
    path.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:]))
    with pytest.raises(DataError, match=r"x\.gz"):
        read_idx(path)


def test_gz_name_but_not_gzip(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint8))
    (tmp_path / "x").rename(tmp_path / "x.gz")
    with pytest.raises(DataError, match="not gzip"):
        read_idx(tmp_path / "x.gz")


@pytest.mark.parametrize("name", ["t", "t.gz"])
def test_truncated_payload(tmp_path: Path, name: str) -> None:
    raw = b"\x00\x00\x08\x03" + struct.pack(">III", 4, 28, 28) + bytes(4 * 28 * 28 - 1)
    (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(DataError, match=r"truncated.*3136.*3135.*delete"):
        read_idx(tmp_path / name)


def test_trailing_bytes(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02\x03")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(tmp_path / "t")


@pytest.mark.parametrize(
    "header",
    [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x0a\x01", b"PK\x03\x04"],
    ids=["nonzero", "code07", "code0a", "zip"],
)
def test_wrong_magic(tmp_path: Path, header: bytes) -> None:
    (tmp_path / "m").write_bytes(header + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="magic number"):
        read_idx(tmp_path / "m")


def test_bad_dimension_count_and_short_files(tmp_path: Path) -> None:
    (tmp_path / "d0").write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="dimensions"):
        read_idx(tmp_path / "d0")
    (tmp_path / "h").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 1))
    with pytest.raises(DataError, match="header"):
        read_idx(tmp_path / "h")
    (tmp_path / "s").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "s")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


def test_write_rejects_unsupported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.uint16))
    with pytest.raises(InputError, match="dimensions"):
        write_idx(tmp_path / "a", np.array(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_header_dimensions_that_overflow_int64_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 2**31))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
