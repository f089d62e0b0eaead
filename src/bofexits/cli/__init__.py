"""Command line: `bofexits train | sweep | compare | tune | demo | report | export | predict | ...`.

A thin layer over the library: `_parser` holds the grammar (flags, allowed values from the
library's registries), `commands` one function per verb that calls one library function and
prints a table for people (JSON for programs goes to the run folder); errors are one line.
Config resolution lives in `bofexits.config`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from bofexits._io import disk_full, disk_full_error
from bofexits.cli._parser import build_parser
from bofexits.cli.commands import config_from_args
from bofexits.errors import BofexitsError

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("bofexits")


def _warn_if_deprecated(args: argparse.Namespace) -> None:
    """One line on stderr when a verb was called by its old name (quiet or not: it is a warning)."""
    replaced_by = getattr(args, "replaced_by", None)
    if replaced_by:
        print(
            f"bofexits: warning: `{args.command}` is deprecated and will be removed in the next release; "
            f"use `bofexits {replaced_by}` (same options)",
            file=sys.stderr,
        )


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise, or when RANK is garbage)."""
    rank = os.environ.get("RANK", "0")
    return int(rank) if rank.isdigit() else 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` runs (temp files and staging folders go)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


#: Verbs whose interrupted run `--resume` continues; the others leave their outputs as they were.
_RESUMABLE = {"train": "`bofexits train --resume` (same options)", "demo": "running `bofexits demo` again"}


def _interrupted(args: argparse.Namespace | None, exc: KeyboardInterrupt) -> int:
    what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
    command = getattr(args, "command", None)
    if command in _RESUMABLE:
        print(f"bofexits: {what}; {_RESUMABLE[command]} continues from the last checkpoint", file=sys.stderr)
    else:
        print(f"bofexits: {what}; nothing was written (earlier outputs are as they were)", file=sys.stderr)
    return 143 if isinstance(exc, _Terminated) else 130


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return _main(argv)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, or a one-line usage error: its exit code, as a return value
            return exc.code if isinstance(exc.code, int) else 2
        logging.basicConfig(  # under torchrun the other ranks only warn: rank 0 tells the story
            level=logging.WARNING if args.quiet or _rank() else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        _warn_if_deprecated(args)
        return int(args.func(args))
    except BofexitsError as exc:
        where = f"rank {_rank()}: " if "WORLD_SIZE" in os.environ and not str(exc).startswith("rank ") else ""
        print(f"bofexits: error: {where}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(args, exc)
    except (OSError, RuntimeError) as exc:  # a full disk where no writer of ours saw it
        if not disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or getattr(args, "out", None) or "."
        print(f"bofexits: error: {disk_full_error(where)}", file=sys.stderr)
        return 2
