"""The package root: every public name resolves, lazily, and `import bofexits` alone needs no torch."""

from __future__ import annotations

import subprocess
import sys

import bofexits


def test_every_public_name_resolves() -> None:
    for name in bofexits.__all__:
        assert getattr(bofexits, name) is not None, name
    assert "AdaptiveRuntime" in dir(bofexits)


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        bofexits.not_a_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_alone_loads_no_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import bofexits, bofexits.deploy.runner; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_type_checking_imports_match_the_exports() -> None:
    # The names type checkers see are the names `__getattr__` serves, from the same modules.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(bofexits.__file__).read_text())
    guard = next(n for n in tree.body if isinstance(n, ast.If))
    seen = {
        alias.name: node.module
        for node in guard.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == bofexits._HOME
