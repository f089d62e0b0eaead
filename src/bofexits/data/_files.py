"""Find a dataset's files on disk, or download them once into the user cache with checksums.

Shared by every loader so that all datasets follow one search order and one error message:
``root`` given by the caller, ``$BOFEXITS_DATA/<name>``, the user cache, the Debian dataset
package directory, then (if allowed) a verified download into the cache.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bofexits.errors import DataError

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "ENV_VAR",
    "SYSTEM_DATA_ROOT",
    "DatasetFiles",
    "RemoteFile",
    "cache_root",
    "candidate_dirs",
    "locate",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a directory that holds one sub-directory per dataset.
ENV_VAR = "BOFEXITS_DATA"
#: Where Debian's ``dataset-*`` packages install their files (module-level so tests can redirect it).
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
#: Seconds to wait on a stalled connection before giving up; a hang is worse than a clear error.
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published upstream.

    Attributes:
        name: upstream file name, e.g. ``train-images-idx3-ubyte.gz``.
        md5: hex MD5 of the upstream file, as published by the dataset's authors.
    """

    name: str
    md5: str

    @property
    def stem(self) -> str:
        """The name without ``.gz``; a local copy may be stored either way."""
        return self.name.removesuffix(".gz")


@dataclass(frozen=True)
class DatasetFiles:
    """Everything needed to find or fetch one dataset.

    Attributes:
        name: directory name used under roots and the cache, e.g. ``fashion-mnist``.
        title: human name for messages, e.g. ``Fashion-MNIST``.
        files: the upstream files.
        mirrors: base URLs (ending in ``/``), tried in order.
        debian_package: the Debian package that installs the files, if one exists.
    """

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    debian_package: str | None = None


def cache_root() -> Path:
    """Return ``$XDG_CACHE_HOME/bofexits`` (default ``~/.cache/bofexits``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bofexits"


def candidate_dirs(spec: DatasetFiles, root: str | Path | None) -> list[Path]:
    """Directories searched, in order; ``root/<name>`` is accepted too for a shared data dir."""
    dirs: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        dirs += [root, root / spec.name]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser() / spec.name)
    dirs.append(cache_root() / spec.name)
    dirs.append(SYSTEM_DATA_ROOT / spec.name)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_in(directory: Path, spec: DatasetFiles) -> dict[str, Path] | None:
    """Map each upstream name to an existing file (``.gz`` or unpacked) if all are present."""
    found: dict[str, Path] = {}
    for remote in spec.files:
        for candidate in (directory / remote.name, directory / remote.stem):
            if candidate.is_file():
                found[remote.name] = candidate
                break
        else:
            return None
    return found


def _help(spec: DatasetFiles) -> str:
    names = ", ".join(f.name for f in spec.files)
    options = []
    if spec.debian_package:
        options.append(f"run `sudo apt-get install {spec.debian_package}`")
    options.append(f"put {names} (gzipped or not) in a directory and pass it as --data-dir (root=...)")
    options.append("connect to the internet so the download can run")
    return "fix: " + "; or ".join(options)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download_one(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` into ``dest`` via a temp file, renaming only after the MD5 matches."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"downloaded {dest.name} from {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                "the download was corrupted or the mirror changed: retry, or fetch the file by hand "
                "and pass its directory as --data-dir"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(spec: DatasetFiles, dest_dir: Path) -> dict[str, Path]:
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the download directory {dest_dir} ({exc.strerror}); set XDG_CACHE_HOME to a "
            f"writable directory or {_help(spec)}"
        ) from exc
    found: dict[str, Path] = {}
    for remote in spec.files:
        dest = dest_dir / remote.name
        if dest.is_file():
            found[remote.name] = dest
            continue
        failures: list[str] = []
        for mirror in spec.mirrors:
            url = mirror + remote.name
            logger.info("downloading %s to %s", url, dest)
            try:
                _download_one(url, dest, remote.md5)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                logger.warning("download of %s failed: %s", url, reason)
                failures.append(f"{url}: {reason}")
                continue
            found[remote.name] = dest
            break
        else:
            raise DataError(
                f"{spec.title} is not on this machine and downloading {remote.name} failed "
                f"({'; '.join(failures)}); {_help(spec)}"
            )
    return found


def locate(spec: DatasetFiles, root: str | Path | None = None, *, download: bool = True) -> dict[str, Path]:
    """Return a path for every file of ``spec``, downloading into the cache as the last resort.

    Args:
        spec: the dataset's files.
        root: directory given by the user (``--data-dir``); searched first.
        download: whether the network may be used when no complete local copy exists.

    Returns:
        Upstream file name (e.g. ``train-images-idx3-ubyte.gz``) -> existing local path.

    Raises:
        DataError: no complete copy exists and downloading is disabled or failed, or a download
            failed its checksum.
    """
    searched = candidate_dirs(spec, root)
    root_dirs = searched[:2] if root is not None else []
    for directory in searched:
        found = _find_in(directory, spec)
        if found is not None:
            if root_dirs and directory not in root_dirs:
                logger.warning("%s files not found in %s; using %s instead", spec.title, root, directory)
            logger.debug("using %s files from %s", spec.title, directory)
            return found
    if download:
        return _download(spec, cache_root() / spec.name)
    looked = ", ".join(str(d) for d in searched)
    raise DataError(f"{spec.title} files not found (looked in {looked}) and download=False; {_help(spec)}")
