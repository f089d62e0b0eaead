"""Run `bofexits` and send it a signal right after a given file is written, or during a commit.

    python tests/reliability/_interrupt.py _ SIGINT|SIGTERM after|commit FILE -- [bofexits args]

`after`: the signal comes right after the file named FILE is renamed into place (by an
atomic write, inside a staging folder or not): the middle of a multi-file output. `commit`:
it comes during the first rename out of a staging folder (an output set's commit, or an
export's swap), where bofexits holds signals until the set is in place. The catalogue
(`tests.reliability.families`) then checks that the folder is the old run or the new one.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    _, name, when, file, sep, *args = argv
    assert sep == "--" and when in ("after", "commit"), argv
    signum = getattr(signal, name)
    real_replace = os.replace
    fired: list[bool] = []

    def replace(src: str, dst: str, *a: object, **k: object) -> None:
        real_replace(src, dst, *a, **k)  # type: ignore[arg-type]
        s, d = os.fspath(src), os.fspath(dst)
        if when == "after":
            hit = os.path.basename(d) == file
        else:
            hit = ".bofexits-stage." in s or d.endswith(".old")
        if hit and not fired:
            fired.append(True)
            os.kill(os.getpid(), signum)

    os.replace = replace  # type: ignore[assignment]
    from bofexits.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
