"""Atomic file writes (a temp file in the target folder, fsync, then rename over the target) and
the run-folder lock that keeps two runs from writing one folder.

Both act on the resolved target: a symlink to a checkpoint is written through (the file it
points to is replaced, the link stays a link) and locked where that file lives. A write that
runs out of disk (ENOSPC, EDQUOT, or torch.save's "unexpected pos") raises `DiskFullError`
naming the disk, after removing its temp file; the file it would have replaced is untouched.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bofexits.errors import BofexitsError

__all__ = [
    "DiskFullError",
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "clean_stale_temps",
    "disk_full",
    "real_path",
    "jsonable",
    "write_json",
    "write_text",
]

log = logging.getLogger(__name__)
LOCK_FILE = ".bofexits.lock"


class DiskFullError(BofexitsError):
    """The disk an output goes to is full (or over quota); nothing half-written is left."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
#: How libraries report a full disk without an OSError: torch.save (PyTorchStreamWriter).
_FULL_WORDS = ("unexpected pos", "no space left on device", "disk quota exceeded", "failed writing file")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or any exception it was raised from, is a full disk."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        if isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _FULL_WORDS):
            return True
        stack += [e.__cause__, e.__context__]
    return False


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(target: str | Path) -> DiskFullError:
    """The one-line error for a full disk under `target`: which disk, and how much is free."""
    mount = _mount_point(Path(target))
    try:
        st = os.statvfs(mount)
        free = f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"no space left on the disk mounted at {mount} ({free}) while writing {target}; partial files were "
        "removed and earlier files are intact: free space there or write to another disk",
    )


@contextmanager
def disk_full_as_error(target: str | Path) -> Iterator[None]:
    """Turn a full disk raised in the block (by any writer) into `DiskFullError` naming the disk."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        if disk_full(exc):
            raise disk_full_error(target) from None
        raise


def real_path(target: str | Path) -> Path:
    """`target` with every symlink resolved (the file a link points to; `target` when none)."""
    return Path(os.path.realpath(target))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path to write to; it replaces `target` only if the block succeeds.

    A symlink is written through: the temp file sits beside the file the link resolves to and
    replaces that file, so the link stays a link (never a separate copy).
    """
    target = real_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with disk_full_as_error(target):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file a plain open()'s mode
    try:
        with disk_full_as_error(target):
            yield Path(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(target: str | Path, writer: Callable[[Path], Any]) -> None:
    with atomic_path(target) as tmp:
        writer(tmp)


def write_text(target: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _write(target, lambda p: p.write_text(text, encoding="utf-8"))


def jsonable(data: Any) -> Any:
    """Replace non-finite floats by the strings "inf", "-inf", "nan" (strict JSON has none).

    >>> jsonable({"t": [float("-inf"), 1.0]})
    {'t': ['-inf', 1.0]}
    """
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {k: jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [jsonable(v) for v in data]
    return data


def write_json(target: str | Path, data: Any) -> None:
    """Write strict JSON atomically (indented; infinities written as strings, see `jsonable`)."""
    write_text(target, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files that `atomic_path` left when a process was killed mid-write.

    Only call this while holding the folder's `RunLock`: another live run's temp file would
    otherwise vanish under it. Returns the files removed.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d temp file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


class UnwritableOutputError(BofexitsError):
    """An output folder cannot be created or written."""


def ensure_writable_dir(folder: str | Path, option: str = "--out") -> Path:
    """Create `folder` if needed and prove it writable, before any expensive work.

    A read-only folder, or a file where a folder is wanted, would otherwise fail only when the
    first result is written, after a full training or evaluation.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnwritableOutputError(f"{option} {folder} is a file, not a folder; choose a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UnwritableOutputError(
            f"cannot write to {option} {folder} ({exc.strerror or exc}); choose a writable folder"
        ) from None
    return folder


class RunLockedError(BofexitsError):
    """Another live process holds the run folder."""


class RunLock:
    """An exclusive lock on a run folder, held for the life of a run (`with RunLock(out): ...`).

    Two `train` runs on one `--out` would otherwise both finish "successfully" while one
    silently overwrites the other's checkpoint and config. The lock is an OS advisory lock
    (`fcntl.flock`) on `.bofexits.lock`, so the kernel drops it when the holder dies, even by
    kill -9: a lock file left by a dead process is stale, and the next run takes it over and
    says whose it was. The file records pid, host, start time and command for that message.
    """

    def __init__(
        self, folder: str | Path, *, busy_hint: str = "wait for that run to finish or pick another --out"
    ) -> None:
        self.folder = real_path(folder)  # one lock however the folder is reached (symlinks resolved)
        self.path = self.folder / LOCK_FILE
        self.busy_hint = busy_hint
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; run unlocked rather than refuse
            log.warning("cannot lock %s on this platform; do not run two commands on it at once", self.folder)
            return self
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        ensure_writable_dir(self.folder)
        self._created = missing  # removed again if the run leaves nothing but the lock in them
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(f"{self.folder} is in use by {holder}; {self.busy_hint}") from None
        previous = _read_holder(fd)
        if previous != "an unknown process":
            log.warning(
                "took over a stale lock on %s left by %s, which is no longer running", self.folder, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record().encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file reads as "no previous holder"
        try:
            if [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                # The run wrote nothing (refused, or failed early): leave no folder holding only a
                # lock. Unlinked while still held, so no other run can have taken it meanwhile.
                self.path.unlink()
                for folder in self._created:  # innermost first; stops at the first that is not empty
                    folder.rmdir()
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def _holder_record() -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command}
    )


def _read_holder(fd: int) -> str:
    """The lock file's record as words for a message, e.g. "process 123 on host (bofexits train, ...)"."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"process {data['pid']} on {data['host']} (`{data['command']}`, started {data['started']})"
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return "an unknown process"
