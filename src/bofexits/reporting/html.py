"""A self-contained HTML page from the report's markdown, plots embedded as data URIs.

It handles the subset of markdown the report writes (headings, paragraphs, bullets, tables,
images), so a report opens anywhere without a markdown renderer or the plot files beside it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["render_html"]


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(markdown: str, run_dir: Path, title: str) -> str:
    """A self-contained HTML page from the report's markdown (plots embedded as data URIs).

    Handles the subset `render_markdown` writes: headings, paragraphs, bullets, tables, images.

    >>> "<h1>Title</h1>" in render_html("# Title", Path("."), "t")
    True
    """
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|(---\|)+", lines[i]):
                    rows.append([c.strip() for c in lines[i].strip("|").split(" | ")])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            cells = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            continue
        elif m := re.fullmatch(r"!\[(.*)\]\((.+)\)", line):
            img = run_dir / m.group(2)
            if img.is_file():
                data = base64.b64encode(img.read_bytes()).decode("ascii")
                body.append(
                    f'<p><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"></p>'
                )
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
        "font-size:.9em}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
