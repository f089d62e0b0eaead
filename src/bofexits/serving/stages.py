"""The step protocol the engine drives, and its onnxruntime form (numpy only, no torch).

A `StageBackend` is "run stage i and its exit on these samples" (`step`, the same step as
`bofexits.inference.AdaptiveRuntime.step` and `bofexits.deploy.runner.OnnxAdaptiveRunner.step`)
plus the decision at exit i (`decide`: the policy's `stop`, its mask on the host) and the
few array operations re-batching needs: concatenate the samples of several groups (`cat`,
`join_states`) and take some of them (`take`, `keep_states`). The engine never looks inside
the arrays, so the same engine runs PyTorch stages from a checkpoint
(`bofexits.serving.torch_stages.TorchStages`) and onnxruntime's staged graphs from an export
(`OnnxStages`), and they give the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bofexits.deploy.runner import OnnxAdaptiveRunner, RunnerInputError
from bofexits.errors import ConfigError, InputError

__all__ = ["ModelFacts", "OnnxStages", "StageBackend", "expected_accuracy"]


@dataclass
class ModelFacts:
    """What a server says about the model it serves and needs to read requests.

    Attributes:
        backend: "pytorch" or "onnxruntime".
        device: where it runs ("cpu", a GPU's name, or onnxruntime's execution provider).
        classes: class names, index i names class i.
        input_shape: (C, H, W).
        mean, std: per-channel normalisation of ``images / 255``.
        color_mode: "L", "RGB", or None (images cannot be read for other channel counts).
        score, variant: the calibrated rule's confidence score and variant.
        beta_range: the knob's allowed range for the variant (high None: unbounded).
    """

    backend: str
    device: str
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    color_mode: str | None
    score: str
    variant: str
    beta_range: tuple[float, float | None] = field(default=(0.0, 1.0))


def expected_accuracy(variant: str, beta: float) -> float | None:
    """The calibration's promise at knob `beta`: the accuracy an early answer has at least, or None.

    Under the accuracy variant, exit i stops a sample only where its isotonic accuracy on the
    calibration split reaches beta (`bofexits.policies.calibrated.accuracy_thresholds`), so
    beta is the expected accuracy of every early answer. The other variants' knobs are
    quantiles or multiples of mean scores, which promise no accuracy: None.

    >>> expected_accuracy("accuracy", 0.9), expected_accuracy("quantile", 0.9)
    (0.9, None)
    """
    return float(beta) if variant == "accuracy" else None


class StageBackend(Protocol):
    """What the engine needs from a model: the step protocol, the decision and array plumbing.

    Arrays (inputs, features, exit states) are the backend's own type (torch tensors or numpy
    arrays); the engine only passes them back. Masks and index arrays are numpy.
    """

    facts: ModelFacts
    num_exits: int
    beta: float

    def step(self, i: int, x: Any, state: Any) -> tuple[Any, Any, Any]:
        """Stage i and its exit: (features or None at the final stage, logits, exit state)."""
        ...

    def decide(self, i: int, logits: Any, pstate: Any) -> tuple[np.ndarray, Any]:
        """(B,) bool numpy mask of the samples that stop at early exit i, and the policy state."""
        ...

    def begin(self, n: int) -> Any:
        """A fresh policy state for n samples."""
        ...

    def keep_states(self, pstate: Any, mask: np.ndarray) -> Any: ...

    def join_states(self, pstates: Sequence[Any]) -> Any: ...

    def from_numpy(self, x: np.ndarray) -> Any:
        """(B, C, H, W) float32 preprocessed inputs -> the backend's input array."""
        ...

    def to_numpy(self, logits: Any) -> np.ndarray:
        """(B, classes) logits as float32 numpy (finite-checked by the engine)."""
        ...

    def cat(self, arrays: Sequence[Any]) -> Any: ...

    def take(self, array: Any, index: np.ndarray) -> Any: ...

    def set_beta(self, beta: float) -> None:
        """Use knob `beta` from the next batch on (the SLO controller turns it)."""
        ...


class OnnxStages:
    """The staged graphs of an ONNX export as a `StageBackend` (numpy; stateless threshold rule).

    Args:
        runner: an `OnnxAdaptiveRunner` on the export (its staged graphs, rule and facts).
    """

    def __init__(self, runner: OnnxAdaptiveRunner) -> None:
        self.runner = runner
        self.num_exits = runner.num_exits
        self.beta = runner.beta
        c, h, w = (int(d) for d in runner.input_shape)
        self.facts = ModelFacts(
            "onnxruntime",
            runner.backbone.session.get_providers()[0],
            list(runner.classes),
            (c, h, w),
            [float(v) for v in runner.mean],
            [float(v) for v in runner.std],
            runner.color_mode,
            runner.score,
            runner.variant,
            (0.0, None) if runner.variant == "mean" else (0.0, 1.0),
        )

    def step(self, i: int, x: np.ndarray, state: Any) -> tuple[Any, Any, Any]:
        return self.runner.step(i, x, state)

    def decide(self, i: int, logits: np.ndarray, pstate: Any) -> tuple[np.ndarray, Any]:
        return self.runner.stops(i, logits), pstate

    def begin(self, n: int) -> Any:
        return None

    def keep_states(self, pstate: Any, mask: np.ndarray) -> Any:
        return None

    def join_states(self, pstates: Sequence[Any]) -> Any:
        return None

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_numpy(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float32)

    def cat(self, arrays: Sequence[Any]) -> Any:
        if arrays[0] is None:
            return None
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def take(self, array: Any, index: np.ndarray) -> Any:
        return None if array is None else np.ascontiguousarray(array[index])

    def set_beta(self, beta: float) -> None:
        try:
            self.runner.set_beta(beta)
        except (RunnerInputError, ValueError) as exc:
            raise ConfigError(
                f"beta {beta!r} is not valid for the {self.runner.variant} rule: {exc}"
            ) from exc
        self.beta = float(beta)


def check_sample(x: Any, input_shape: Sequence[int]) -> np.ndarray:
    """One request's preprocessed input as a (1, C, H, W) float32 array; refuses wrong shapes and NaN/inf.

    >>> check_sample(np.zeros((1, 2, 2), np.float32), (1, 2, 2)).shape
    (1, 1, 2, 2)
    """
    a = np.asarray(x)
    shape = tuple(int(d) for d in input_shape)
    if a.shape == shape:
        a = a[None]
    if a.shape != (1, *shape):
        raise InputError(
            f"expected a tensor of shape {shape} or {(1, *shape)}, got {tuple(a.shape)}; "
            "resize the image to the model's input size"
        )
    if a.dtype.kind not in "fiu":
        raise InputError(f"expected a numeric tensor, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not bool(np.isfinite(a).all()):
        raise InputError("the tensor contains NaN or inf values; send finite, normalised inputs")
    return a
