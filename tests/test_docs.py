"""The docs stay true to the code: the architecture tree lists every module, method.md has the
sections the code cites, and nothing points outside the repository for its explanation."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "architecture_tree.py"
METHOD_SECTIONS = [
    "1. Multi-exit network",
    "2. The BoF exit layer",
    "3. Hierarchical exits: shared histogram space, one classifier",
    "4. Training",
    "5. Adaptive inference: the one-knob rule and the baselines",
    "6. What is measured",
    "7. Where the time goes",
    "8. Runtime efficiency",
]
REGENERATE = ".venv/bin/python benchmarks/architecture_tree.py --write"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("architecture_tree", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["architecture_tree"] = module
    spec.loader.exec_module(module)
    return module


tree = _load()


def _text_files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        path = ROOT / part
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        out += [f for f in files if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return out


# --- docs/architecture.md -------------------------------------------------------------------------


def test_architecture_tree_lists_exactly_the_modules() -> None:
    listed = tree.parse_tree(tree.read_block(tree.DOC.read_text()))
    listed_files = {p for p in listed if not p.endswith("/")}
    on_disk = set(tree.scan())
    missing, gone = sorted(on_disk - listed_files), sorted(listed_files - on_disk)
    assert not missing and not gone, (
        f"docs/architecture.md is stale: not listed {missing}, no longer in src/ {gone}; run `{REGENERATE}`"
    )


def test_architecture_tree_is_in_the_generated_form() -> None:
    # Regenerating from its own lines changes nothing: order, indent and columns are the script's,
    # so `--write` only ever adds or drops the lines of files that changed.
    block = tree.read_block(tree.DOC.read_text())
    listed = tree.parse_tree(block)
    files = [p for p in listed if not p.endswith("/")]
    assert tree.render_tree(files, listed) == block, f"hand-edited out of form; run `{REGENERATE}`"
    assert all(listed[p] for p in files), "every module needs a few words on what it owns"


def test_the_generator_adds_new_modules_and_drops_gone_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""The package."""\n')
    (pkg / "kept.py").write_text('"""Docstring not used: the doc has words for it."""\n')
    (pkg / "sub" / "new.py").write_text('"""A new module: with more after the colon.\n\nBody."""\n')
    (pkg / "sub" / "bare.py").write_text("x = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "stale.py").write_text("")
    old = "pkg/                              top words\n    gone.py                       deleted file\n"
    old += "    kept.py                       hand-written words\n"
    files = tree.scan(pkg)
    assert files == ["pkg/__init__.py", "pkg/kept.py", "pkg/sub/bare.py", "pkg/sub/new.py"]
    block = tree.render_tree(files, tree.parse_tree(old), pkg)
    assert block == (
        "pkg/                            top words\n"
        "    __init__.py                 The package\n"
        "    kept.py                     hand-written words\n"
        "    sub/\n"
        "        bare.py\n"
        "        new.py                  A new module\n"
    )
    assert tree.parse_tree(block)["pkg/sub/new.py"] == "A new module"
    doc = f"intro\n{tree.BEGIN}\n```text\n{old}```\n{tree.END}\nafter\n"
    assert tree.read_block(tree.replace_block(doc, block)) == block
    assert tree.replace_block(doc, block).endswith(f"{tree.END}\nafter\n")


@pytest.mark.parametrize(
    "block",
    [
        "pkg/\n   a.py  three spaces\n",
        "pkg/\n        a.py  skips a level\n",
        "pkg/\n    a.py  x\n        b.py  y\n",
    ],
)
def test_malformed_trees_are_refused(block: str) -> None:
    with pytest.raises(ValueError, match="tree line"):
        tree.parse_tree(block)


# --- docs/method.md -------------------------------------------------------------------------------


def test_method_has_the_numbered_sections_the_code_cites() -> None:
    headings = re.findall(r"(?m)^## (.+)$", (ROOT / "docs" / "method.md").read_text())
    assert headings == METHOD_SECTIONS
    cited = {
        (f.relative_to(ROOT).as_posix(), int(n))
        for f in _text_files("src", "docs", "benchmarks", "README.md")
        for n in re.findall(r"method\.md §(\d+)", f.read_text(errors="replace"))
    }
    assert cited, "nothing cites docs/method.md any more"
    assert all(1 <= n <= len(METHOD_SECTIONS) for _, n in cited), sorted(cited)


def test_docs_link_only_to_files_that_exist() -> None:
    for doc in _text_files("docs"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text()):
            assert (doc.parent / target).is_file(), f"{doc.name} links to missing {target}"


# --- the repository explains itself ---------------------------------------------------------------


def test_nothing_points_to_notes_outside_the_repository() -> None:
    # The repository carries its own explanation (docs/method.md): no pointers to an internal
    # design note or to the shared folder it was written in.
    forbidden = ["METHOD" + " §", "METHOD" + ".md", "shared" + "/"]
    hits = [
        f"{f.relative_to(ROOT)}: {word}"
        for f in _text_files("src", "docs", "benchmarks", "tests", "README.md", "Makefile", "pyproject.toml")
        for word in forbidden
        if word in f.read_text(errors="replace")
    ]
    assert hits == []
