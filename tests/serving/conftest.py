"""A small run for the serving tests: a calibrated checkpoint on fake data, its ONNX export, PNGs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import tiny_run_with_export

N_TEST = 48


@pytest.fixture(scope="session")
def small_run(
    tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]
) -> dict[str, Any]:
    """checkpoint.pt (small vgg28, calibrated, untrained), its export, the test set and a few PNGs."""
    root = tmp_path_factory.mktemp("serving")
    data = write_fake_data(root / "data", n_train=64, n_test=N_TEST)
    return tiny_run_with_export(root, data, 4)
