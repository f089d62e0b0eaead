"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

The IDX header is two zero bytes, a dtype code byte, a dimension-count byte, then one big-endian
``uint32`` per dimension, then the payload in C order and big-endian byte order. Files are often
stored gzip-compressed; both forms are accepted so users can unpack the archives or not.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from bofexits.errors import DataError, InputError

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype, as defined by the IDX specification.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 16


def _redownload_hint(path: Path) -> str:
    return f"delete {path} and download or copy it again"


def _read_bytes(path: Path) -> bytes:
    """Return the decompressed bytes; gzip is detected by its magic, not trusted from the name."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist; check the path or download the dataset") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path} ({exc.strerror}); check its permissions") from exc
    if raw[:2] != _GZIP_MAGIC:
        if path.name.endswith(".gz"):
            raise DataError(f"{path} is named .gz but is not gzip data; {_redownload_hint(path)}")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated gzip ({exc}); {_redownload_hint(path)}") from exc


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a native-byte-order numpy array.

    Every header field and the payload length are checked, because a half-downloaded dataset
    otherwise shows up much later as a baffling shape error or silently wrong labels.

    Args:
        path: the ``.gz`` or uncompressed IDX file.

    Returns:
        A writable array of shape ``dims`` from the header, e.g. ``(N, 28, 28)`` uint8 for images
        and ``(N,)`` uint8 for labels.

    Raises:
        DataError: the file is missing, unreadable, not IDX, or its payload size disagrees with the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is too short for an IDX file ({len(data)} bytes); {_redownload_hint(path)}")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        raise DataError(
            f"{path} has magic number 0x{data[:4].hex()}, not an IDX header; {_redownload_hint(path)}"
        )
    if not 1 <= ndim <= _MAX_DIMS:
        raise DataError(f"{path} declares {ndim} dimensions, not 1..{_MAX_DIMS}; {_redownload_hint(path)}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path} ends inside its IDX header; {_redownload_hint(path)}")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: 3 x 2**31 overflows int64
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header {tuple(dims)} needs {expected} payload bytes, found {actual}; "
            f"{_redownload_hint(path)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _idx_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    supported = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
    raise InputError(f"IDX cannot store dtype {dtype}; convert the array to one of: {supported}")


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends with ``.gz``.

    The file is written to a temporary name in the same directory and renamed into place, so a
    crash never leaves a truncated file that later reads as a valid but short dataset.

    Args:
        path: destination; parent directory must exist.
        array: at least 1-D, dtype uint8, int8, int16, int32, float32 or float64.

    Raises:
        InputError: the dtype or shape cannot be stored in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    if not 1 <= array.ndim <= _MAX_DIMS:
        raise InputError(f"IDX needs an array with 1..{_MAX_DIMS} dimensions, got shape {array.shape}")
    if any(d >= 2**32 for d in array.shape):
        raise InputError(f"IDX dimensions must be < 2**32, got shape {array.shape}")
    code = _idx_code(array.dtype)
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
