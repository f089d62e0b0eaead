"""The README's Python example runs as written, and the README opens with the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("## ")[0]
    assert "make demo" in head and "make test" in head


def test_readme_python_example_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    lines = [ln for ln in code.group(1).splitlines() if ln.strip()]
    assert len(lines) <= 10
    torch.manual_seed(0)
    exec(compile(code.group(1), str(README), "exec"), {})
    assert "tensor(" in capsys.readouterr().out
