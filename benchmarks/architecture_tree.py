"""The package tree in docs/architecture.md, regenerated from src/bofexits.

    .venv/bin/python benchmarks/architecture_tree.py            # print the tree block
    .venv/bin/python benchmarks/architecture_tree.py --check    # exit 1 if the doc is stale
    .venv/bin/python benchmarks/architecture_tree.py --write    # rewrite the block in place

The block sits between `<!-- tree:begin -->` and `<!-- tree:end -->` as a fenced code block,
one line per folder or module, four spaces of indent per level:

    bofexits/                   the package
        __init__.py             the public API
        models/                 networks
            bof.py              the BoF layer

A line is its name (folders end in "/"), then at least two spaces, then a few words on what
it owns. Every .py file under src/bofexits is listed: modules first, then sub-packages, each
sorted by name. Descriptions already in the doc are kept; a new file gets the first sentence
of its module docstring, to be shortened by hand; a file that is gone loses its line.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bofexits"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- tree:begin -->", "<!-- tree:end -->"
INDENT = "    "
COLUMN = 30  # descriptions start two spaces after this column, aligned on every line
MAX_SUMMARY = 80

_BLOCK = re.compile(re.escape(BEGIN) + r"\n```text\n(.*?)```\n" + re.escape(END), re.S)


def scan(package: Path = PACKAGE) -> list[str]:
    """Every .py file under `package`, as paths relative to its parent ("bofexits/models/bof.py")."""
    return sorted(
        p.relative_to(package.parent).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    )


def read_block(doc: str) -> str:
    """The tree block's text (inside the fence) from the document's text."""
    m = _BLOCK.search(doc)
    if m is None:
        raise ValueError(f"no tree block ({BEGIN}, a ```text fence, {END}) in the document")
    return m.group(1)


def replace_block(doc: str, block: str) -> str:
    """The document with its tree block replaced by `block`."""
    read_block(doc)  # raises when the markers are missing
    return _BLOCK.sub(lambda _: f"{BEGIN}\n```text\n{block}```\n{END}", doc, count=1)


def parse_tree(block: str) -> dict[str, str]:
    """Path -> description for every line of a tree block; folders keep their trailing "/".

    >>> parse_tree("pkg/          the package\\n    a.py      module a\\n    sub/\\n        b.py  b\\n")
    {'pkg/': 'the package', 'pkg/a.py': 'module a', 'pkg/sub/': '', 'pkg/sub/b.py': 'b'}
    """
    out: dict[str, str] = {}
    stack: list[str] = []
    for number, line in enumerate(block.splitlines(), 1):
        if not line.strip():
            continue
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if indent % len(INDENT) or indent // len(INDENT) > len(stack):
            raise ValueError(
                f"tree line {number} is not indented by {len(INDENT)} spaces per level: {line!r}"
            )
        del stack[indent // len(INDENT) :]
        name, _, description = stripped.partition("  ")
        name = name.strip()
        parent = stack[-1] if stack else ""
        if parent and not parent.endswith("/"):
            raise ValueError(f"tree line {number} is indented under a file: {line!r}")
        path = parent + name
        out[path] = description.strip()
        stack.append(path)
    return out


def summary(path: Path) -> str:
    """The first sentence of a module's docstring, cut to a readable length ("" without one)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    if not doc:
        return ""
    text = " ".join(doc.split("\n\n")[0].split())
    first = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")
    return first if len(first) <= MAX_SUMMARY else first[: MAX_SUMMARY - 3].rstrip() + "..."


def render_tree(files: list[str], descriptions: dict[str, str], package: Path = PACKAGE) -> str:
    """The tree block for `files` (from `scan`): modules before sub-packages, each sorted by name.

    `descriptions` (from `parse_tree`) supplies the words for known paths; other files get the
    first sentence of their docstring, read under `package.parent`.
    """
    folders = {"/".join(f.split("/")[:i]) + "/" for f in files for i in range(1, f.count("/") + 1)}

    def children(folder: str) -> tuple[list[str], list[str]]:
        depth = folder.count("/")
        mods = sorted(f for f in files if f.startswith(folder) and f.count("/") == depth)
        subs = sorted(d for d in folders if d.startswith(folder) and d.count("/") == depth + 1)
        return mods, subs

    lines: list[str] = []

    def emit(path: str, level: int) -> None:
        name = path.rstrip("/").rsplit("/", 1)[-1] + ("/" if path.endswith("/") else "")
        words = descriptions.get(path)
        if words is None and not path.endswith("/"):
            words = summary(package.parent / path)
        head = INDENT * level + name
        lines.append(f"{head:<{COLUMN}}  {words}" if words else head)

    def walk(folder: str, level: int) -> None:
        emit(folder, level)
        mods, subs = children(folder)
        for m in mods:
            emit(m, level + 1)
        for s in subs:
            walk(s, level + 1)

    for top in sorted(d for d in folders if d.count("/") == 1):
        walk(top, 0)
    return "\n".join(lines) + "\n"


def current_tree(doc_path: Path = DOC, package: Path = PACKAGE) -> tuple[str, str]:
    """(the block in the doc, the block regenerated from the files with the doc's descriptions)."""
    block = read_block(doc_path.read_text())
    return block, render_tree(scan(package), parse_tree(block), package)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 (and show the diff) if the doc is stale")
    mode.add_argument("--write", action="store_true", help=f"rewrite the block in {DOC.relative_to(ROOT)}")
    args = ap.parse_args()
    old, new = current_tree()
    if args.write:
        if old != new:
            DOC.write_text(replace_block(DOC.read_text(), new))
        print(f"{DOC.relative_to(ROOT)}: {'rewritten' if old != new else 'already current'}")
        return 0
    if args.check:
        if old == new:
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "doc", "src"))
        return 1
    sys.stdout.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
