"""Imports point down: no cycle between subpackages, none between modules as they load.

Every `import` under `src/bofexits` is read with `ast` (module level, inside functions and
under `if TYPE_CHECKING:`), so a cycle that only a type checker or one code path would hit
is found too. Two graphs are checked:

* subpackages (`models`, `training`, ...; a top-level module such as `config` is a node of
  its own), with every import, wherever it is written;
* modules, with the imports that run when a module loads (module level and TYPE_CHECKING
  blocks; an import inside a function is how an optional dependency or a late registry
  entry is reached on purpose, and is left to the subpackage check).

An import of one's own parent package is no edge: Python has always started loading it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bofexits"

# Known cycles, each edge named by the module that makes it. Empty since the claims moved to
# reporting (their sentences are English) and Check/Claim beside the comparison; nothing may be
# added here.
ALLOWED_SUBPACKAGE_EDGES: set[tuple[str, str, str]] = set()
ALLOWED_MODULE_EDGES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One imported module, where it is written (`where`: "module", "function" or "type-checking")."""

    source: str
    target: str
    where: str


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _resolve(name: str) -> str | None:
    """The module `name` is, or is inside of (`pkg.mod.Class` -> `pkg.mod`); None outside bofexits."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node: ast.AST, where: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function"
            elif isinstance(child, ast.If) and _is_type_checking(child.test) and where == "module":
                yield from _names(child.body, "type-checking")
                for other in child.orelse:
                    yield from visit(other, where)
                continue
            yield from _import(child, inner)
            yield from visit(child, inner)

    def _names(body: list[ast.stmt], where: str) -> Iterator[Import]:
        for stmt in body:
            yield from _import(stmt, where)
            yield from visit(stmt, where)

    def _import(node: ast.AST, where: str) -> Iterator[Import]:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import sub` imports the submodule; `from mod import name`, the module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and not module.startswith(f"{target}."):
                yield Import(module, target, where)

    yield from visit(ast.parse(path.read_text(), str(path)), "module")


IMPORTS = [imp for module in MODULES for imp in _imports_of(module)]


def _node(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to: `bofexits.models.bof` -> "models"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _explain(cycle: list[str], edges: dict[tuple[str, str], set[str]]) -> str:
    inside = [f"{a} -> {b} ({', '.join(sorted(edges[a, b]))})" for a in cycle for b in cycle if (a, b) in edges]
    return "; ".join(inside)


def subpackage_edges() -> dict[tuple[str, str], set[str]]:
    """(from, to) between subpackages -> "module (where)" strings that make the edge."""
    edges: dict[tuple[str, str], set[str]] = {}
    for imp in IMPORTS:
        a, b = _node(imp.source), _node(imp.target)
        if a != b and imp.source != "bofexits" and (imp.source, a, b) not in ALLOWED_SUBPACKAGE_EDGES:
            edges.setdefault((a, b), set()).add(f"{imp.source} [{imp.where}]")
    return edges


def module_edges() -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for imp in IMPORTS:
        if imp.where != "function" and imp.source != "bofexits":
            if (imp.source, imp.target) not in ALLOWED_MODULE_EDGES:
                edges.setdefault((imp.source, imp.target), set()).add(imp.where)
    return edges


def test_no_import_cycle_between_subpackages() -> None:
    edges = subpackage_edges()
    cycles = _cycles(set(edges))
    assert not cycles, "import cycles between subpackages: " + " | ".join(_explain(c, edges) for c in cycles)


def test_no_import_cycle_between_modules_as_they_load() -> None:
    edges = module_edges()
    cycles = _cycles(set(edges))
    assert not cycles, "import cycles between modules: " + " | ".join(_explain(c, edges) for c in cycles)


def test_the_allow_list_names_edges_that_exist() -> None:
    """An allowed edge that is gone must leave the list, so the list can only shrink."""
    made = {(i.source, _node(i.source), _node(i.target)) for i in IMPORTS}
    assert ALLOWED_SUBPACKAGE_EDGES <= made, ALLOWED_SUBPACKAGE_EDGES - made
    loads = {(i.source, i.target) for i in IMPORTS if i.where != "function"}
    assert ALLOWED_MODULE_EDGES <= loads, ALLOWED_MODULE_EDGES - loads


@pytest.mark.parametrize(
    "source, target",
    [
        ("bofexits.config", "training"),  # the recipes live beside the config now
        ("bofexits.data.registry", "models"),  # a run's splits are training.splits
        ("bofexits.data.registry", "config"),
        ("bofexits.options", "policies"),  # the option names are torch-free
        ("bofexits.evaluation.comparison", "reporting"),  # the claims' sentences are reporting's
        ("bofexits.evaluation.compare", "reporting"),
    ],
)
def test_moved_pieces_stay_moved(source: str, target: str) -> None:
    assert not [i for i in IMPORTS if i.source == source and _node(i.target) == target]


def test_the_walk_sees_function_and_type_checking_imports() -> None:
    wheres = {(i.source, i.target): i.where for i in IMPORTS}
    assert wheres[("bofexits.models.backbones", "bofexits.models.vision")] == "function"
    assert wheres[("bofexits.reporting", "bofexits.reporting.html")] == "type-checking"
    assert wheres[("bofexits.training.loop", "bofexits.training.run")] == "module"
    # the graph a cycle needs is detected: a two-node loop and a three-node loop
    assert _cycles({("a", "b"), ("b", "a")}) == [["a", "b"]]
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
