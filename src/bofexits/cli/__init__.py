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
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("bofexits: interrupted; `--resume` continues from the last checkpoint", file=sys.stderr)
        return 130
