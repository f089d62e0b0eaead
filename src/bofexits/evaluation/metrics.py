"""Pure metrics of adaptive inference: accuracy, exit distribution, balance, relative compute."""

from __future__ import annotations

import math

import torch

from bofexits.errors import InputError

__all__ = ["accuracy", "balance", "exit_distribution", "relative_compute"]


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1].

    >>> accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0]))
    0.6666666865348816
    """
    if predictions.shape != labels.shape:
        raise InputError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ")
    return float((predictions == labels).float().mean()) if labels.numel() else float("nan")


def exit_distribution(exit_index: torch.Tensor, num_exits: int) -> list[float]:
    """Fraction of samples leaving at each exit.

    >>> exit_distribution(torch.tensor([0, 0, 2, 3]), 4)
    [0.5, 0.0, 0.25, 0.25]
    """
    counts = torch.bincount(exit_index.long(), minlength=num_exits).double()
    return (counts / counts.sum().clamp_min(1)).tolist()


def balance(fractions: list[float]) -> float:
    """Normalised entropy H / log S of the exit distribution: 1 = uniform, 0 = one exit.

    >>> round(balance([0.25, 0.25, 0.25, 0.25]), 6), balance([1.0, 0.0, 0.0, 0.0])
    (1.0, 0.0)
    """
    if len(fractions) < 2:
        return 0.0
    h = -sum(p * math.log(p) for p in fractions if p > 0)
    return max(0.0, h / math.log(len(fractions)))  # no -0.0 for a single exit


def relative_compute(sample_macs: torch.Tensor, backbone_macs: int) -> float:
    """Mean per-sample MACs as a fraction of the plain backbone's.

    >>> relative_compute(torch.tensor([50.0, 100.0]), 100)
    0.75
    """
    return float(sample_macs.double().mean()) / backbone_macs
