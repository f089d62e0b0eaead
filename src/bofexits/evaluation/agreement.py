"""Where a simulated rule and the real runtime disagree on an image's exit, and why.

The offline simulation (`bofexits.inference.offline.simulate`) replays a rule on stored exit
outputs; a sweep checks it image by image against the runtime's real early exit. The two can
part only where a score sits within float rounding of its threshold and the two computations
round differently, or through a defect. `Mismatch` records, per knob value, how many images
differ and how far from its threshold the deciding score was, which tells the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bofexits.evaluation.schema import SCHEMA_VERSION, from_fields, to_fields
from bofexits.policies import CalibratedThreshold
from bofexits.policies.scores import confidence

__all__ = ["ROUNDING_GAP", "Mismatch", "mismatch"]

ROUNDING_GAP = 1e-5
"""The largest score-to-threshold gap, relative to the threshold, that float32 rounding explains
(a few ulps, and the ulps of two differently fused computations): a wider gap is a defect."""


@dataclass
class Mismatch:
    """The images whose real exit differs from the simulated one at one knob value.

    Attributes:
        beta: the knob value.
        images: images that took another exit in the runtime than in the simulation.
        largest_gap: the largest |score - threshold| / max(1, |threshold|) at the first exit where
            the two part (the exit one of them left at), over those images.
    """

    beta: float
    images: int
    largest_gap: float
    schema_version: int = SCHEMA_VERSION

    @property
    def rounding(self) -> bool:
        """Whether float rounding explains every differing image (`ROUNDING_GAP`).

        >>> Mismatch(0.875, 1, 1.2e-7).rounding, Mismatch(0.5, 3, 0.02).rounding
        (True, False)
        """
        return self.largest_gap <= ROUNDING_GAP

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mismatch:
        return from_fields(cls, data, "simulation mismatch")


def mismatch(
    policy: CalibratedThreshold,
    real_exit: torch.Tensor,
    simulated_exit: torch.Tensor,
    logits: Sequence[torch.Tensor],
) -> Mismatch | None:
    """The images where `real_exit` and `simulated_exit` (N,) differ under `policy`, or None if none do.

    Args:
        policy: the calibrated rule both ran (its thresholds decide).
        real_exit, simulated_exit: (N,) 0-based exits from the runtime and the simulation.
        logits: the S exits' (N, classes) outputs the simulation read.
    """
    differ = (real_exit.cpu() != simulated_exit.cpu()).nonzero().flatten()
    if differ.numel() == 0:
        return None
    first = torch.minimum(real_exit.cpu()[differ], simulated_exit.cpu()[differ])  # the exit where they part
    gaps = []
    for j, e in zip(differ.tolist(), first.tolist(), strict=True):
        threshold = policy.thresholds[e] if e < len(policy.thresholds) else float("inf")
        score = float(confidence(logits[e][j : j + 1], policy.score)[0])
        gaps.append(abs(score - threshold) / max(1.0, abs(threshold)))
    return Mismatch(policy.beta, int(differ.numel()), max(gaps))
