"""onnxruntime sessions of an export's graphs, each checked against its manifest entry before use.

`Graph` loads one graph and refuses it, naming the mismatch, unless its inputs and outputs
(names in order, dtypes, every dimension both sides know) and its ONNX opset are the ones the
manifest declares: a graph from another export would otherwise run and answer wrongly.
The opset is read from the file's protobuf directly (`onnx_opsets`), as onnxruntime does not
report it and the runner does not depend on the ``onnx`` package. Like the runner, this module
imports only the standard library and numpy, and is shipped in ``bofexits_deploy/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._entries import GraphEntry, TensorEntry
from .errors import DeployError, ManifestError

__all__ = ["NAMES", "Graph", "onnx_opsets", "session_options"]

#: Per role: (required inputs, allowed inputs, required outputs, allowed outputs).
NAMES: dict[str, tuple[set[str], set[str], set[str], set[str]]] = {
    "block": ({"x"}, {"x", "state"}, {"features", "logits"}, {"features", "logits", "next_state"}),
    "stage": ({"x"}, {"x"}, {"features"}, {"features"}),
    "exit": ({"features"}, {"features", "state"}, {"logits"}, {"logits", "next_state"}),
    "final": ({"x"}, {"x"}, {"logits"}, {"logits"}),
    "backbone": ({"x"}, {"x"}, {"logits"}, {"logits"}),
    "adaptive": (
        {"x", "thresholds"},
        {"x", "thresholds"},
        {"logits", "exit_index"},
        {"logits", "exit_index"},
    ),
    "adaptive_batched": (
        {"x", "thresholds"},
        {"x", "thresholds"},
        {"logits", "exit_index"},
        {"logits", "exit_index"},
    ),
}
_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def session_options(ort: Any, threads: int | None) -> Any:
    """Sequential execution, full graph optimisation, `threads` intra-op threads (None: all cores)."""
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise DeployError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


# ---------------------------------------------------------------- the opset, from the protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of each field of one protobuf message; nested messages as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield key >> 3, value


def onnx_opsets(path: str | Path) -> dict[str, int]:
    """The opset version of each domain an ONNX model imports ("" is the ONNX domain).

    `ModelProto.opset_import` is field 8, each an `OperatorSetIdProto` (domain: 1, version: 2).
    """
    found: dict[str, int] = {}
    for number, value in _fields(Path(path).read_bytes()):
        if number == 8:
            entry = dict(_fields(value))
            domain = bytes(entry.get(1, b"")).decode()
            found["" if domain == "ai.onnx" else domain] = int(entry.get(2, 0))
    return found


# ---------------------------------------------------------------- one graph


class Graph:
    """One ONNX session and the names the manifest gives its inputs and outputs.

    Args:
        ort: the onnxruntime module.
        root: the export directory.
        entry: the graph's manifest entry.
        options, providers: onnxruntime's session options and execution providers.
        opset: the ONNX opset the manifest's producer wrote (None: not checked).

    Raises:
        ManifestError: onnxruntime cannot load the file, or its inputs, outputs or opset are
            not the ones the manifest declares.
    """

    def __init__(
        self,
        ort: Any,
        root: Path,
        entry: GraphEntry,
        options: Any,
        providers: list[str | tuple[str, dict[str, Any]]],
        opset: int | None = None,
    ) -> None:
        self.name, self.role, self.index = entry.name, entry.role, entry.index
        self.inputs = [t.name for t in entry.inputs]
        self.outputs = [t.name for t in entry.outputs]
        path = entry.path(root, "the export's manifest")  # refused if it leaves the folder
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ManifestError(f"onnxruntime cannot load {path} ({exc}); re-export the model") from exc
        self._check(entry.inputs, self.session.get_inputs(), "inputs")
        self._check(entry.outputs, self.session.get_outputs(), "outputs")
        if opset is not None:
            try:
                got = onnx_opsets(path).get("")
            except (IndexError, ValueError) as exc:  # onnxruntime read it, so this is unlikely
                raise ManifestError(
                    f"{path} is not a readable ONNX model ({exc}); re-export the model"
                ) from exc
            if got != opset:
                raise ManifestError(
                    f"graph {self.name}: {path.name} imports ONNX opset {got}, the manifest's producer wrote "
                    f"opset {opset}; the manifest belongs to another export: re-export the model"
                )

    def _check(self, declared: Sequence[TensorEntry], actual: Sequence[Any], what: str) -> None:
        """Names in order, dtypes, ranks and every dimension both sides know must agree (batch is dynamic)."""
        want = [(t.name, list(t.shape), _ORT_TYPES.get(t.dtype, t.dtype)) for t in declared]
        got = [(a.name, list(a.shape), a.type) for a in actual]
        same = len(want) == len(got) and all(
            wn == gn
            and wt == gt
            and len(ws) == len(gs)
            and all(
                not (isinstance(w, int) and isinstance(g, int)) or w == g for w, g in zip(ws, gs, strict=True)
            )
            for (wn, ws, wt), (gn, gs, gt) in zip(want, got, strict=False)
        )
        if not same:
            raise ManifestError(
                f"graph {self.name}: the manifest declares {what} {want}, the graph has {got}; "
                "the manifest belongs to another export: re-export the model"
            )

    def __call__(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))
