"""The hand-made results of `tests/evaluation/conftest.py`, for the report's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "evaluation_results", Path(__file__).resolve().parents[1] / "evaluation" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_results)

sweep_result = _results.sweep_result
comparison_result = _results.comparison_result
make_sweep = _results.make_sweep
make_comparison = _results.make_comparison
