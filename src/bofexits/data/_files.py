"""Find a dataset's files on disk, or download them once into the user cache with checksums.

Shared by every loader so that all datasets follow one search order and one error message:
``root`` given by the caller, ``$BOFEXITS_DATA/<name>``, the user cache, the Debian dataset
package directory, then (if allowed) a verified download into the cache.

Two environment variables make the machine's state explicit, for air-gapped hosts and for test
suites that must behave the same on a new machine and on one where the data sets are installed:
``BOFEXITS_OFFLINE=1`` refuses every download at once with a :class:`DataError` (instead of waiting
on DNS or a connection timeout), and ``BOFEXITS_SYSTEM_DATA`` replaces ``/usr/share/datasets`` as
the system directory (for other distributions' layouts, or an empty folder to hide the system copy).

A file may be a ``.tar.gz`` archive (CIFAR): a local copy is then either the archive or the folder
it unpacks to, and :func:`read_members` reads the same members from both. A downloaded archive is
unpacked once into the cache (safely: no paths or links leading outside the target; atomically: into a temp
folder, then renamed) so later loads skip the decompression.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bofexits.errors import DataError

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "ENV_VAR",
    "OFFLINE_ENV_VAR",
    "SYSTEM_DATA_ROOT",
    "SYSTEM_ENV_VAR",
    "DatasetFiles",
    "RemoteFile",
    "cache_root",
    "candidate_dirs",
    "downloads_disabled",
    "locate",
    "read_members",
    "system_root",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a directory that holds one sub-directory per dataset.
ENV_VAR = "BOFEXITS_DATA"
#: Where Debian's ``dataset-*`` packages install their files (module-level so tests can redirect it).
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
#: Environment variable that replaces :data:`SYSTEM_DATA_ROOT` (an empty folder hides the system copy).
SYSTEM_ENV_VAR = "BOFEXITS_SYSTEM_DATA"
#: Environment variable that, set to anything but ``""``/``0``, refuses downloads at once.
OFFLINE_ENV_VAR = "BOFEXITS_OFFLINE"
#: Seconds to wait on a stalled connection before giving up; a hang is worse than a clear error.
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published upstream.

    Attributes:
        name: upstream file name, e.g. ``train-images-idx3-ubyte.gz``.
        md5: hex MD5 of the upstream file, as published by the dataset's authors.
        folder: for a tar archive, the top-level folder it unpacks to (e.g. ``cifar-10-batches-py``);
            a local copy may then be that folder instead of the archive.
    """

    name: str
    md5: str
    folder: str | None = None

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


def system_root() -> Path:
    """The system data directory: ``$BOFEXITS_SYSTEM_DATA`` when set, else :data:`SYSTEM_DATA_ROOT`."""
    env = os.environ.get(SYSTEM_ENV_VAR)
    return Path(env).expanduser() if env else SYSTEM_DATA_ROOT


def downloads_disabled() -> bool:
    """Whether ``$BOFEXITS_OFFLINE`` forbids downloads (any value but empty or ``0``)."""
    return os.environ.get(OFFLINE_ENV_VAR, "").strip() not in ("", "0")


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
    dirs.append(system_root() / spec.name)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_one(directory: Path, remote: RemoteFile) -> Path | None:
    """An existing local copy of ``remote`` in ``directory``: its unpacked folder first, then the file."""
    if remote.folder is not None:
        # ``directory`` may be the unpacked folder itself (``--data-dir .../cifar-10-batches-py``).
        for folder in (directory / remote.folder, directory):
            if folder.name == remote.folder and folder.is_dir():
                return folder
    for candidate in (directory / remote.name, directory / remote.stem):
        if candidate.is_file():
            return candidate
    return None


def _find_in(directory: Path, spec: DatasetFiles) -> dict[str, Path] | None:
    """Map each upstream name to an existing copy (``.gz`` or unpacked, archive or folder) if all exist."""
    found: dict[str, Path] = {}
    for remote in spec.files:
        path = _find_one(directory, remote)
        if path is None:
            return None
        found[remote.name] = path
    return found


def _missing(directories: Sequence[Path], spec: DatasetFiles) -> str:
    """The files none of `directories` holds, for the message when an explicit folder lacks them."""
    absent = [f.name for f in spec.files if all(_find_one(d, f) is None for d in directories)]
    return "missing: " + ", ".join(absent) if absent else "no folder holds all of them"


def _describe(spec: DatasetFiles) -> str:
    """The files to provide, for messages: ``a, b (gzipped or not)`` or ``x.tar.gz (or its folder y/)``."""
    parts = [
        f"{f.name} (or the folder {f.folder}/ it unpacks to)" if f.folder else f.name for f in spec.files
    ]
    text = ", ".join(parts)
    if all(f.name.endswith(".gz") and not f.folder for f in spec.files):
        text += " (gzipped or not)"
    return text


def _help(spec: DatasetFiles, root: str | Path | None = None) -> str:
    """What to do when no complete copy was found; `root` is the explicit --data-dir, if any."""
    options = []
    if root is not None:
        options.append(f"put {_describe(spec)} in {root}")
        options.append(
            f"drop --data-dir so the loader searches $BOFEXITS_DATA/{spec.name}/, {cache_root() / spec.name}/ "
            "and the system copy, then downloads when connected to the internet"
        )
    else:
        options.append(
            f"put {_describe(spec)} in a directory and pass it as --data-dir (root=...), "
            f"or put them in $BOFEXITS_DATA/{spec.name}/ or {cache_root() / spec.name}/"
        )
        options.append("connect to the internet so the download can run")
    if spec.debian_package:
        options.append(f"run `sudo apt-get install {spec.debian_package}`")
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


def _safe_members(archive: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders that stay inside ``dest`` (for Pythons without ``filter="data"``)."""
    members = []
    for member in archive.getmembers():
        inside = (dest / member.name).resolve().is_relative_to(dest.resolve())
        if not (member.isfile() or member.isdir()) or not inside or Path(member.name).is_absolute():
            raise tarfile.TarError(
                f"member {member.name!r} is a link, a device or points outside the archive"
            )
        members.append(member)
    return members


def _extract(archive_path: Path, folder: str, dest_dir: Path) -> Path:
    """Unpack ``folder`` of a verified archive into ``dest_dir`` safely and atomically; return it.

    Members go into a temp folder next to the target (``filter="data"``: no absolute paths, ``..``,
    links out of the tree or device files), and only the finished folder is renamed into place, so an
    interrupted extraction never leaves a half-filled folder that a later search would accept.
    """
    target = dest_dir / folder
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".tmp", dir=dest_dir))
        with tarfile.open(archive_path, "r:*") as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp, filter="data")
            else:  # Python < 3.10.12 / 3.11.4
                archive.extractall(tmp, members=_safe_members(archive, tmp))
        unpacked = tmp / folder
        if not unpacked.is_dir():
            raise DataError(
                f"{archive_path} does not contain the folder {folder}/; the mirror serves another file: "
                f"delete it and fetch {archive_path.name} by hand"
            )
        try:
            os.rename(unpacked, target)
        except OSError:
            if not target.is_dir():  # else another process finished the same extraction first
                raise
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot unpack {archive_path} ({exc}); the archive is damaged or not the official one: delete it "
            "and download it again"
        ) from exc
    except OSError as exc:
        raise DataError(
            f"cannot unpack {archive_path} into {dest_dir} ({exc}); free some disk space or make the folder "
            "writable, then run again"
        ) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


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
        if remote.folder is not None:
            logger.info("unpacking %s", dest)
            found[remote.name] = _extract(dest, remote.folder, dest_dir)
            dest.unlink()  # the folder is what later searches find; the archive would only take space
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
    if root is not None:
        # An explicit --data-dir is the user's statement of where the data is: reading another
        # copy (or downloading) instead would train on data they did not choose.
        searched = searched[:2]
    for directory in searched:
        found = _find_in(directory, spec)
        if found is not None:
            logger.debug("using %s files from %s", spec.title, directory)
            return found
    if root is not None:
        missing = _missing(searched, spec)
        raise DataError(f"--data-dir {root} lacks the {spec.title} files ({missing}); {_help(spec, root)}")
    if download and downloads_disabled():
        looked = ", ".join(str(d) for d in searched)
        raise DataError(
            f"{spec.title} files not found (looked in {looked}) and downloads are off "
            f"(${OFFLINE_ENV_VAR} is set); unset {OFFLINE_ENV_VAR} to download, or {_help(spec)}"
        )
    if download:
        return _download(spec, cache_root() / spec.name)
    looked = ", ".join(str(d) for d in searched)
    raise DataError(f"{spec.title} files not found (looked in {looked}) and download=False; {_help(spec)}")


def read_members(path: Path, folder: str, names: Sequence[str]) -> dict[str, bytes]:
    """Read the files ``names`` of an archive's ``folder``, from the archive or from the unpacked folder.

    A ``.tar.gz`` is read in one streaming pass (its member index is never built, which would
    decompress it once per member); nothing is written to disk, so a read-only archive works too.

    Args:
        path: the unpacked folder (holding ``names``) or the archive (holding ``folder/<name>``).
        folder: the archive's top-level folder, e.g. ``cifar-10-batches-py``.
        names: file names inside ``folder``, e.g. ``data_batch_1``.

    Returns:
        Each name -> the file's bytes.

    Raises:
        DataError: a member is missing, or the archive or a file cannot be read.
    """
    wanted = set(names)
    data: dict[str, bytes] = {}
    if path.is_dir():
        for name in names:
            try:
                data[name] = (path / name).read_bytes()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise DataError(f"cannot read {path / name} ({exc.strerror}); check its permissions") from exc
    else:
        try:
            with tarfile.open(path, "r|*") as archive:
                for member in archive:
                    parent, _, base = member.name.removeprefix("./").rpartition("/")
                    if parent == folder and base in wanted and member.isfile():
                        handle = archive.extractfile(member)
                        if handle is not None:
                            data[base] = handle.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path} is not a readable tar archive ({exc}); it is corrupt or truncated: delete it and "
                "download it again"
            ) from exc
    missing = [name for name in names if name not in data]
    if missing:
        where = str(path) if path.is_dir() else f"{path} (folder {folder}/)"
        raise DataError(
            f"{where} lacks {', '.join(missing)}; the copy is incomplete or another dataset's: delete it and "
            "download or unpack it again"
        )
    return data
