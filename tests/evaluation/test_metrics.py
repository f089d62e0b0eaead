"""Accuracy, exit distribution, balance and relative compute."""

from __future__ import annotations

import math

import pytest
import torch

from bofexits.errors import InputError
from bofexits.evaluation.metrics import accuracy, balance, exit_distribution, relative_compute


def test_accuracy() -> None:
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])) == pytest.approx(0.5)
    assert accuracy(torch.tensor([1]), torch.tensor([1])) == 1.0
    assert accuracy(torch.tensor([0, 0]), torch.tensor([1, 1])) == 0.0


def test_accuracy_empty_is_nan() -> None:
    assert math.isnan(accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)))


def test_accuracy_shape_mismatch() -> None:
    with pytest.raises(InputError, match="differ"):
        accuracy(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_exit_distribution() -> None:
    assert exit_distribution(torch.tensor([0, 0, 2, 3, 3, 3, 3, 3]), 4) == [0.25, 0.0, 0.125, 0.625]
    assert exit_distribution(torch.tensor([1, 1]), 3) == [0.0, 1.0, 0.0]
    got = exit_distribution(torch.randint(0, 5, (37,), generator=torch.Generator().manual_seed(0)), 5)
    assert len(got) == 5 and sum(got) == pytest.approx(1.0)


def test_exit_distribution_empty() -> None:
    assert exit_distribution(torch.tensor([], dtype=torch.long), 3) == [0.0, 0.0, 0.0]


def test_balance() -> None:
    assert balance([0.25] * 4) == pytest.approx(1.0)
    assert balance([0.2] * 5) == pytest.approx(1.0)
    assert balance([1.0, 0.0, 0.0, 0.0]) == 0.0
    assert balance([0.0, 0.0, 1.0]) == 0.0
    assert balance([0.5, 0.5, 0.0, 0.0]) == pytest.approx(0.5)  # log 2 / log 4
    p = [0.1, 0.2, 0.7]
    assert balance(p) == pytest.approx(-sum(v * math.log(v) for v in p) / math.log(3))
    assert 0.0 < balance([0.9, 0.05, 0.05]) < balance([0.4, 0.3, 0.3]) < 1.0


def test_balance_single_exit() -> None:
    assert balance([1.0]) == 0.0
    assert balance([]) == 0.0


def test_relative_compute() -> None:
    assert relative_compute(torch.tensor([50.0, 100.0]), 100) == pytest.approx(0.75)
    assert relative_compute(torch.tensor([100, 100]), 100) == pytest.approx(1.0)
    assert relative_compute(torch.tensor([10.0, 20.0, 30.0]), 40) == pytest.approx(0.5)
