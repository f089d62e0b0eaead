"""The README's generated blocks: text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.

Every benchmark that regenerates part of the README (readme_table.py, runtimes.py,
scaling.py) replaces its block through here, so a missing or doubled marker is refused the
same way everywhere instead of silently writing nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["replace_block", "write_block"]


def replace_block(text: str, name: str, block: str) -> str:
    """`text` with the block `name` replaced by `block`; exits with a message unless it has exactly one.

    >>> replace_block("a\\n<!-- x:begin -->\\nold\\n<!-- x:end -->\\nb", "x", "new")
    'a\\n<!-- x:begin -->\\nnew\\n<!-- x:end -->\\nb'
    """
    new, n = re.subn(
        rf"<!-- {name}:begin -->.*<!-- {name}:end -->",
        lambda _: f"<!-- {name}:begin -->\n{block}\n<!-- {name}:end -->",
        text,
        flags=re.S,
    )
    if n != 1:
        raise SystemExit(f"README.md has no single <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return new


def write_block(name: str, block: str, readme: Path = Path("README.md")) -> None:
    """Replace the block `name` of `readme` in place."""
    readme.write_text(replace_block(readme.read_text(), name, block))
