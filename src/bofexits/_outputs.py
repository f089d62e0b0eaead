"""Multi-file outputs replaced as one set: a folder holds the old run's files or the new run's, never a mix.

Each file bofexits writes is atomic (`bofexits._io.atomic_path`), but `compare` writes seven
(policies.json and .csv, report.md and .html, three plots) and `sweep` with a report five: an
interrupt between two of them left the new results beside the old report, every file parsing,
the folder looking complete. Here a verb writes its whole set into a staging folder inside the
output folder (same disk, so moving is a rename), and only when every file is written:

1. with SIGINT and SIGTERM held back (`signals_deferred`), each file is renamed over its old
   version, and
2. the folder's record of members, ``.bofexits-members.json`` (each file's SHA-256 and the verb
   that wrote it), is rewritten last.

A signal during the build removes the staging folder and leaves the old set as it was; a
signal during the commit (a few renames) waits until it is done. Only a hard kill in that
window could leave a mix, and the record catches it: `check_members` (run by the readers of a
run folder, `bofexits.reporting.report.read_results`) refuses a folder whose files differ from
the record. See docs/decisions.md, "Multi-file outputs".

The export folder is the exception: it belongs to the export alone, so it is built aside and
swapped in whole (`bofexits.deploy._export.staging_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bofexits._io import disk_full_as_error, real_path, write_json
from bofexits.errors import BofexitsError

__all__ = ["MEMBERS", "MixedOutputError", "check_members", "output_set", "signals_deferred"]

log = logging.getLogger(__name__)
MEMBERS = ".bofexits-members.json"
_STAGE = ".bofexits-stage."


class MixedOutputError(BofexitsError):
    """A run folder's files are not the set its record says were written together."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(caught):  # each once, in the order they came
            held = previous[signal.Signals(signum)]
            if callable(held):
                held(signum, None)
            elif held == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / MEMBERS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise MixedOutputError(
            f"{path} is unreadable ({type(exc).__name__}); the folder's files cannot be checked: "
            "rerun the command that wrote them"
        ) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise MixedOutputError(f"{path} is not a record of members; rerun the command that wrote the folder")
    return files


def _remove_dead_stages(folder: Path) -> None:
    """Staging folders whose process is gone (killed hard): nothing will commit them."""
    for stage in folder.glob(f"{_STAGE}*"):
        pid = stage.name[len(_STAGE) :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # alive: another run's stage
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def output_set(folder: str | Path, verb: str) -> Iterator[Path]:
    """Yield an empty staging folder; the files written there replace their namesakes in `folder`
    as one set when the block succeeds (see the module docstring), and vanish when it fails.

    Args:
        folder: the output folder (created if needed; a symlink is followed).
        verb: what writes the set, recorded beside each member ("compare", "sweep", ...).
    """
    folder = real_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_dead_stages(folder)
    with disk_full_as_error(folder):
        stage = Path(tempfile.mkdtemp(prefix=f"{_STAGE}{os.getpid()}.", dir=folder))
    try:
        with disk_full_as_error(folder):
            yield stage
            names = sorted(p.name for p in stage.iterdir())
            if any((stage / n).is_dir() for n in names):
                raise ValueError("an output set holds files only")
            hashes = {n: _sha256(stage / n) for n in names}
            record = _read_record(folder)
            for n in names:
                record[n] = {"sha256": hashes[n], "written_by": verb}
            with signals_deferred():
                for n in names:
                    os.replace(stage / n, folder / n)
                write_json(folder / MEMBERS, {"version": 1, "files": record})
        log.info("wrote %s into %s as one set (%s)", ", ".join(names), folder, verb)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_members(folder: str | Path, names: tuple[str, ...] = ()) -> None:
    """Refuse a folder whose recorded files differ from the record (a mix of two runs).

    Args:
        folder: a run folder.
        names: the files about to be read (default: every recorded file that exists). A file
            the record does not list was not written by bofexits as part of a set and is not
            checked; a listed file that is missing is not a mix either (deleted by hand).

    Raises:
        MixedOutputError: naming the files that changed since their set was written.
    """
    folder = Path(folder)
    record = _read_record(folder)
    wanted = names or tuple(record)
    changed = [
        n
        for n in wanted
        if n in record
        and (folder / n).is_file()
        and isinstance(record[n], dict)
        and _sha256(folder / n) != record[n].get("sha256")
    ]
    if changed:
        raise MixedOutputError(
            f"{folder} mixes two runs: {', '.join(changed)} differ from the files its last run wrote together "
            f"(recorded in {MEMBERS}; a run was killed while replacing them, or they were edited): rerun "
            "the command that writes them"
        )
