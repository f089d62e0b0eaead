"""Adaptive inference on an exported model with onnxruntime and numpy only: no torch at run time.

`bofexits.deploy.onnx.export_onnx` writes one ONNX graph per stage+exit pair, the final stage, the
plain backbone, a `manifest.json` and a copy of this file (`bofexits_deploy.py`), so an export
directory runs anywhere numpy and onnxruntime install::

    import sys; sys.path.insert(0, "export_dir")
    from bofexits_deploy import OnnxAdaptiveRunner
    runner = OnnxAdaptiveRunner("export_dir", threads=1)
    result = runner(runner.preprocess(uint8_images))   # (N, H, W[, C]) at the model's size
    result.predictions, result.exit_index

The stopping rule is the calibrated one of `bofexits.policies` (scores in `confidence`,
thresholds in `calibrated_thresholds`), written again in numpy with the same float32
arithmetic; `tests/deploy/test_runner.py` checks both against the PyTorch functions, names
included. The manifest's schema is declared here once (`Manifest` and its entries): the
exporters write it, this runner reads it, and `Manifest.from_dict` refuses a malformed one
naming the field. This module imports only the standard library, numpy and (when a runner
is built) onnxruntime, because it is copied alone into every export directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import numpy as np

try:  # inside the package: the library's error types, so `bofexits` callers catch one family
    from bofexits.errors import BofexitsError as _Base
    from bofexits.errors import CheckpointError as _BadFile
    from bofexits.errors import InputError as _BadInput
except ImportError:  # the standalone copy in an export directory

    class _Base(Exception):  # type: ignore[no-redef]
        """Base class of every error raised here."""

    class _BadFile(_Base):  # type: ignore[no-redef]
        """A file is missing, corrupt or inconsistent."""

    class _BadInput(_Base, ValueError):  # type: ignore[no-redef]
        """An array has the wrong shape, dtype or non-finite values."""


__all__ = [
    "CONTENT_SHA256",
    "FORMAT",
    "LAYOUTS",
    "MANIFEST",
    "RUNNER_FILE",
    "SCORES",
    "TORCHSCRIPT_FORMAT",
    "VARIANTS",
    "VERSION",
    "CalibrationEntry",
    "DeployError",
    "FileEntry",
    "GraphEntry",
    "Manifest",
    "ManifestError",
    "MissingDependencyError",
    "OnnxAdaptiveRunner",
    "OnnxManifest",
    "PolicyEntry",
    "PreprocessingEntry",
    "ProducerEntry",
    "RunResult",
    "RunnerInputError",
    "TensorEntry",
    "TorchScriptManifest",
    "calibrated_thresholds",
    "confidence",
    "load_manifest",
    "manifest_digest",
    "preprocess",
    "read_manifest",
    "sha256_file",
]

FORMAT = "bofexits-onnx"
TORCHSCRIPT_FORMAT = "bofexits-torchscript"
VERSION = 1  # of the manifest's schema, both formats; bump it when a key changes meaning or goes
MANIFEST = "manifest.json"
RUNNER_FILE = "bofexits_deploy.py"
LAYOUTS: tuple[str, ...] = ("fused", "separate")
# The same names as bofexits.policies (scores.SCORES, calibrated.VARIANTS); a test compares them.
SCORES: tuple[str, ...] = ("max_logit", "max_prob", "margin", "neg_entropy")
VARIANTS: tuple[str, ...] = ("mean", "quantile", "conditional")
_GRID = 1001  # quantile levels 0, 0.001, ..., 1, as in bofexits.policies.calibrated
NAN_MESSAGE = "an exit produced NaN or inf logits; the weights are broken (re-export from a good checkpoint)"
PREPROCESSING_STEPS = (
    "convert to color_mode; resize to exactly (H, W), bilinear; x = (pixels / 255 - mean) / std per channel; "
    "float32 NCHW"
)
_REEXPORT = "re-export the model (`bofexits export`)"


class DeployError(_Base):
    """Base class of the runner's errors."""


class ManifestError(DeployError, _BadFile):
    """The export directory is incomplete, corrupt or its manifest does not match its graphs."""


class RunnerInputError(DeployError, _BadInput):
    """An input array has the wrong type, shape or dtype, or holds NaN/inf."""


class MissingDependencyError(DeployError, ImportError):
    """onnxruntime is not installed."""


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "running an ONNX export needs onnxruntime: `pip install onnxruntime` "
            "(or `pip install bofexits[deploy]`)"
        ) from exc
    return onnxruntime


# ---------------------------------------------------------------- the rule, in numpy


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def confidence(logits: np.ndarray, score: str) -> np.ndarray:
    """Per-sample confidence of an exit: `bofexits.policies.confidence` in numpy.

    Args:
        logits: (B, classes) float32.
        score: "max_logit", "max_prob", "margin" (top-1 minus top-2 probability) or
            "neg_entropy" (minus the softmax entropy).

    Returns:
        (B,) scores, larger meaning more confident.

    >>> confidence(np.array([[2.0, 0.0]], dtype=np.float32), "max_logit").tolist()
    [2.0]
    """
    if score == "max_logit":
        return logits.max(1)
    if score == "max_prob":
        return _softmax(logits).max(1)
    if score == "margin":
        top2 = np.partition(_softmax(logits), -2, axis=1)[:, -2:]  # (B, 2): second, first
        return top2[:, 1] - top2[:, 0]
    if score == "neg_entropy":
        shifted = logits - logits.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return (np.exp(logp) * logp).sum(1)
    raise DeployError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def _score_one(logits: np.ndarray, score: str) -> float:
    """`confidence` of a (1, classes) row as a float, in fewer numpy calls for the common scores.

    The top softmax probability is exp(0) / sum = 1 / sum(exp(x - max)), the same float32 value.
    """
    row = logits[0]
    if score == "max_logit":
        return float(row.max())
    if score == "max_prob":
        return float(np.float32(1.0) / np.exp(row - row.max()).sum())
    return float(confidence(logits, score)[0])


def calibrated_thresholds(
    means: Sequence[float],
    quantiles: np.ndarray,
    beta: float,
    variant: str,
    conditional: np.ndarray | None = None,
) -> list[float]:
    """Threshold per early exit for knob `beta`: `bofexits.policies.calibrated_thresholds` in numpy.

    "mean": beta * mean_i; "quantile": the beta-quantile of exit i's calibration scores;
    "conditional": the beta-quantile over the calibration samples that reach exit i (the
    precomputed `conditional` table). Both tables are interpolated linearly on their 1001-level
    grid (beta = 0: -inf, every sample stops at exit 1). Computed in float32 like the PyTorch
    version, so both give the same floats.

    >>> calibrated_thresholds([2.0, 4.0], np.zeros((2, 1001), np.float32), 1.5, "mean")
    [3.0, 6.0]
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta != beta:
        raise DeployError(f"beta must be a number, got {beta!r}")
    if variant == "mean":
        m = np.asarray(means, dtype=np.float32)
        if beta < 0:
            raise DeployError(f"beta must be >= 0 for the mean variant, got {beta}")
        if bool((m <= 0).any()):
            raise DeployError(f"the mean variant needs positive mean scores, got {m.tolist()}")
        return [float(v) for v in np.float32(beta) * m]
    if variant not in VARIANTS:
        raise DeployError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0.0 <= beta <= 1.0:
        raise DeployError(f"beta must be in [0, 1] for the {variant} variant, got {beta}")
    table = quantiles if variant == "quantile" else conditional
    if table is None:
        raise DeployError(
            "the export has no statistics for the conditional variant; re-export with a newer bofexits"
        )
    q = np.asarray(table, dtype=np.float32)
    if beta == 0.0:
        return [float("-inf")] * q.shape[0]
    pos = beta * (_GRID - 1)
    lo = int(pos)
    hi = min(lo + 1, _GRID - 1)
    frac = pos - lo
    return [float(v) for v in q[:, lo] * np.float32(1 - frac) + q[:, hi] * np.float32(frac)]


# ---------------------------------------------------------------- the manifest


#: The manifest's own checksum: tamper evidence (not a signature) for hand edits of thresholds,
#: class names or preprocessing, which would change answers without any error.
CONTENT_SHA256 = "content_sha256"


def manifest_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a manifest's JSON object without its `content_sha256` key, in canonical form.

    >>> manifest_digest({"a": 1, "content_sha256": "x"}) == manifest_digest({"a": 1})
    True
    """
    body = {k: v for k, v in data.items() if k != CONTENT_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (how the manifest pins each graph)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_T = TypeVar("_T")
_M = TypeVar("_M", bound="Manifest")
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def _show(value: Any) -> str:
    """A JSON value for an error message: short, with its JSON type."""
    text = repr(value)
    kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def _as_float(value: Any) -> float | None:
    """A JSON number, or "inf" / "-inf" (how strict JSON stores infinite thresholds); None if neither or NaN."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or value in ("inf", "-inf")):
        return None
    number = float(value)
    return None if number != number else number


class _Fields:
    """One JSON object of a manifest, read a typed field at a time; every error names the field.

    `path` is where the object sits ("" for the top level, "policy", "graphs[2]", ...) and
    `source` the file, both for messages.
    """

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            where = f"field {path!r}" if path else "the manifest"
            raise ManifestError(f"{source}: {where} must be a JSON object, got {_show(data)}; {_REEXPORT}")
        self.data, self.path, self.source = data, path, source

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: field {self.at(key)!r} {problem}; {_REEXPORT}")

    def raw(self, key: str) -> Any:
        if key not in self.data:
            raise ManifestError(
                f"{self.source} lacks [{self.at(key)!r}]; it is truncated or hand-edited: {_REEXPORT}"
            )
        return self.data[key]

    def optional(self, key: str, read: Callable[[str], _T]) -> _T | None:
        """`read(key)`, or None when the key is absent or null."""
        return None if self.data.get(key) is None else read(key)

    def text(self, key: str, choices: Sequence[str] = ()) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_show(value)}")
        if choices and value not in choices:
            raise self.error(key, f"is {value!r}; this runner knows {', '.join(choices)}")
        return value

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.raw(key)
        if type(value) is not int or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, got {_show(value)}")
        return value

    def number(self, key: str) -> float:
        return self._numbers(key, [self.raw(key)], "")[0]

    def items(self, key: str, length: int | None = None, per: str = "") -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {_show(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"has {len(value)} entries, expected {length} (one per {per})")
        return value

    def numbers(self, key: str, length: int | None = None, per: str = "") -> tuple[float, ...]:
        return self._numbers(key, self.items(key, length, per), "entry {} ")

    def texts(self, key: str, length: int | None = None, per: str = "") -> tuple[str, ...]:
        values = self.items(key, length, per)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(key, f"entry {i} must be a string, got {_show(v)}")
        return tuple(values)

    def table(self, key: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
        """A (rows, cols) table of numbers: the calibration's quantile tables."""
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise self.error(key, f"must be a list of lists of numbers, got {_show(value)}")
        if len(value) != rows or any(len(r) != cols for r in value):
            got = (len(value), *sorted({len(r) for r in value}))
            raise self.error(key, f"has calibration shape {got}; {rows} early exits need ({rows}, {cols})")
        return tuple(self._numbers(key, row, f"entry [{i}][{{}}] ") for i, row in enumerate(value))

    def _numbers(self, key: str, values: list[Any], where: str) -> tuple[float, ...]:
        out = [_as_float(v) for v in values]
        if None in out:
            i = out.index(None)
            raise self.error(key, f"{where.format(i)}must be a number, got {_show(values[i])}")
        return cast(tuple[float, ...], tuple(out))

    def obj(self, key: str) -> _Fields:
        return _Fields(self.raw(key), self.at(key), self.source)

    def objs(self, key: str, length: int | None = None, per: str = "") -> list[_Fields]:
        items = self.items(key, length, per)
        return [_Fields(v, f"{self.at(key)}[{i}]", self.source) for i, v in enumerate(items)]


class _Entry:
    """A part of the manifest: a frozen dataclass whose field names are its JSON keys."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (tuples as lists, entries as objects)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, _Entry):
        return value.to_dict()
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class TensorEntry(_Entry):
    """A graph input or output: name, shape ("batch" for the dynamic first axis) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @classmethod
    def _read(cls, f: _Fields) -> TensorEntry:
        shape = f.items("shape")
        for i, d in enumerate(shape):
            if not (isinstance(d, str) or (type(d) is int and d >= 0)):
                raise f.error("shape", f"entry {i} must be a size or an axis name, got {_show(d)}")
        return cls(f.text("name"), tuple(shape), f.text("dtype"))


@dataclass(frozen=True)
class FileEntry(_Entry):
    """A file of the export and the SHA-256 of its bytes, checked before the file is loaded."""

    file: str
    sha256: str

    @classmethod
    def _read(cls, f: _Fields) -> FileEntry:
        return cls(f.text("file"), f.text("sha256"))

    def verify(self, root: Path, source: str) -> None:
        """Raise `ManifestError` unless `root / file` exists with the recorded SHA-256."""
        file = root / self.file
        if not file.is_file():
            raise ManifestError(f"file {file} named in {source} is missing; re-export the model")
        digest = sha256_file(file)
        if digest != self.sha256:
            raise ManifestError(
                f"{file} does not match {source} (sha256 {digest[:12]}... vs {self.sha256[:12]}...); "
                "the file or the manifest was replaced: re-export the model"
            )


@dataclass(frozen=True)
class GraphEntry(FileEntry):
    """One ONNX graph: its role, its place in the chain and the tensors it reads and writes.

    Roles: "block" (stage i and exit i fused), "stage", "exit", "final" (last stage and the
    backbone's head), "backbone" (the plain network); `index` is i (-1 for the backbone).
    """

    name: str
    role: str
    index: int
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]

    @classmethod
    def _read(cls, f: _Fields) -> GraphEntry:
        return cls(
            file=f.text("file"),
            sha256=f.text("sha256"),
            name=f.text("name"),
            role=f.text("role", tuple(_NAMES)),
            index=f.integer("index", minimum=-1),
            inputs=tuple(TensorEntry._read(t) for t in f.objs("inputs")),
            outputs=tuple(TensorEntry._read(t) for t in f.objs("outputs")),
        )


@dataclass(frozen=True)
class ProducerEntry(_Entry):
    """What wrote the export: versions, and for ONNX the exporter and opset (left out when None)."""

    bofexits: str
    torch: str
    exporter: str | None = None
    opset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}

    @classmethod
    def _read(cls, f: _Fields) -> ProducerEntry:
        exporter, opset = f.optional("exporter", f.text), f.optional("opset", f.integer)
        return cls(f.text("bofexits"), f.text("torch"), exporter, opset)


@dataclass(frozen=True)
class PolicyEntry(_Entry):
    """The calibrated rule: score, variant, knob and its origin, and the knob's (S-1,) thresholds."""

    name: str
    score: str
    variant: str
    beta: float
    beta_source: str
    thresholds: tuple[float, ...]

    @classmethod
    def _read(cls, f: _Fields, num_exits: int) -> PolicyEntry:
        return cls(
            name=f.text("name", ("calibrated",)),
            score=f.text("score", SCORES),
            variant=f.text("variant", VARIANTS),
            beta=f.number("beta"),
            beta_source=f.text("beta_source"),
            thresholds=f.numbers("thresholds", num_exits - 1, "early exit"),
        )


@dataclass(frozen=True)
class CalibrationEntry(_Entry):
    """The score's per-exit statistics, as `bofexits.policies.ExitCalibration.to_dict` writes them.

    Attributes:
        means: (S-1,) mean score per early exit.
        quantiles: (S-1, 1001) score quantiles at levels 0, 0.001, ..., 1.
        conditional: (S-1, 1001) thresholds of the conditional variant, or None (older exports).
    """

    score: str
    means: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    num_samples: int
    conditional: tuple[tuple[float, ...], ...] | None = None

    @classmethod
    def _read(cls, f: _Fields, num_exits: int) -> CalibrationEntry:
        rows = num_exits - 1
        return cls(
            score=f.text("score", SCORES),
            means=f.numbers("means", rows, "early exit"),
            quantiles=f.table("quantiles", rows, _GRID),
            num_samples=f.integer("num_samples", minimum=1),
            conditional=f.optional("conditional", lambda key: f.table(key, rows, _GRID)),
        )


@dataclass(frozen=True)
class PreprocessingEntry(_Entry):
    """How images become the network's input: ``(pixels / scale - mean) / std``, float32 NCHW.

    Attributes:
        input_shape: (C, H, W).
        color_mode: "L" (1 channel) or "RGB" (3), or None for other channel counts.
        mean, std: (C,) statistics of ``pixels / scale``.
    """

    input_shape: tuple[int, int, int]
    color_mode: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0
    steps: str = PREPROCESSING_STEPS

    @classmethod
    def _read(cls, f: _Fields) -> PreprocessingEntry:
        shape = f.items("input_shape", 3, "axis of (C, H, W)")
        if not all(type(d) is int and d > 0 for d in shape):
            raise f.error("input_shape", f"must be three positive integers (C, H, W), got {_show(shape)}")
        mean, std = f.numbers("mean"), f.numbers("std")
        for key, values in (("mean", mean), ("std", std)):
            if len(values) != shape[0]:  # which of the two is wrong is not known: name both
                raise f.error(
                    key,
                    f"has {len(values)} entries, but preprocessing says inputs have {shape[0]} channel(s) "
                    f"(input_shape {shape}); one entry per channel",
                )
        if not all(0 < s < float("inf") for s in std):
            raise f.error("std", f"must be positive and finite, got {list(std)}")
        return cls(
            input_shape=(shape[0], shape[1], shape[2]),
            color_mode=f.optional("color_mode", f.text),
            mean=mean,
            std=std,
            scale=f.number("scale"),
            steps=f.text("steps"),
        )


@dataclass(frozen=True)
class Manifest(_Entry):
    """`manifest.json`, declared once: the exporters write it, the runner and `predict` read it.

    These are the fields of every format; `OnnxManifest` and `TorchScriptManifest` add their
    files. ``from_dict(to_dict())`` gives the same manifest back, and `from_dict` checks types,
    lengths, the format and the schema `VERSION`, raising `ManifestError` naming the bad field.

    Attributes:
        producer: versions of what wrote the export.
        num_exits: S, the number of exits (S-1 early ones and the final classifier).
        num_classes: the length of `classes`.
        policy: the rule and its knob.
        calibration: the statistics the rule's thresholds are computed from.
        classes: class names, index i names class i.
        preprocessing: how images become the network's input.
    """

    producer: ProducerEntry
    num_exits: int
    num_classes: int
    policy: PolicyEntry
    calibration: CalibrationEntry
    classes: tuple[str, ...]
    preprocessing: PreprocessingEntry

    format: ClassVar[str] = ""
    version: ClassVar[int] = VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `manifest.json`; writers store its infinite floats as "inf" / "-inf"."""
        return {"format": self.format, "version": self.version, **super().to_dict()}

    @classmethod
    def from_dict(cls: type[_M], data: Any, *, source: str = MANIFEST) -> _M:
        """Parse and check a manifest; `Manifest.from_dict` takes any format, a subclass its own only.

        Args:
            data: the parsed JSON.
            source: how error messages name the file.

        Raises:
            ManifestError: another format or version, a missing key, a value of the wrong type,
                or a list of the wrong length; the message names the field and says to re-export.
        """
        kind = _manifest_kind(cls, data, source)
        return cast(_M, kind(**kind._read(_Fields(data, "", source))))

    @classmethod
    def _read(cls, f: _Fields) -> dict[str, Any]:
        """The constructor's arguments, read from the top-level object."""
        num_exits = f.integer("num_exits", minimum=1)
        num_classes = f.integer("num_classes", minimum=1)
        policy = PolicyEntry._read(f.obj("policy"), num_exits)
        calibration = CalibrationEntry._read(f.obj("calibration"), num_exits)
        if calibration.score != policy.score:
            raise f.error(
                "calibration.score", f"is {calibration.score!r} but 'policy.score' is {policy.score!r}"
            )
        return {
            "producer": ProducerEntry._read(f.obj("producer")),
            "num_exits": num_exits,
            "num_classes": num_classes,
            "policy": policy,
            "calibration": calibration,
            "classes": f.texts("classes", num_classes, "class"),
            "preprocessing": PreprocessingEntry._read(f.obj("preprocessing")),
        }

    def file_entries(self) -> tuple[FileEntry, ...]:
        """Every file the manifest pins with a SHA-256."""
        return ()


@dataclass(frozen=True)
class OnnxManifest(Manifest):
    """The ONNX export's manifest (`bofexits.deploy.onnx.export_onnx`), read by `OnnxAdaptiveRunner`.

    Attributes:
        layout: "fused" (one graph per stage+exit pair) or "separate" (one per stage, one per exit).
        graphs: the chain in execution order, ending with the final stage.
        backbone: the plain network in one graph.
        runner: the copy of this module in the directory.
    """

    layout: str
    graphs: tuple[GraphEntry, ...]
    backbone: GraphEntry
    runner: str = RUNNER_FILE

    format: ClassVar[str] = FORMAT

    @classmethod
    def _read(cls, f: _Fields) -> dict[str, Any]:
        fields = super()._read(f)
        layout, s = f.text("layout", LAYOUTS), fields["num_exits"]
        if layout == "fused":
            count, per = s, "stage+exit pair and the final stage"
        else:
            count, per = 2 * s - 1, "stage, early exit and the final stage"
        return {
            **fields,
            "layout": layout,
            "graphs": tuple(GraphEntry._read(g) for g in f.objs("graphs", count, per)),
            "backbone": GraphEntry._read(f.obj("backbone")),
            "runner": f.text("runner"),
        }

    def file_entries(self) -> tuple[FileEntry, ...]:
        return (*self.graphs, self.backbone)


@dataclass(frozen=True)
class TorchScriptManifest(Manifest):
    """The TorchScript export's manifest (`bofexits.deploy.torchscript.export_torchscript`).

    Attributes:
        adaptive: ``adaptive.pt``, the scripted adaptive loop (JSON: ``files.adaptive``).
        backbone: ``backbone.pt``, the traced plain network (JSON: ``files.backbone``).
        signature: how to call both, in words.
    """

    adaptive: FileEntry
    backbone: FileEntry
    signature: str

    format: ClassVar[str] = TORCHSCRIPT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["files"] = {"adaptive": data.pop("adaptive"), "backbone": data.pop("backbone")}
        return data

    @classmethod
    def _read(cls, f: _Fields) -> dict[str, Any]:
        files = f.obj("files")
        return {
            **super()._read(f),
            "adaptive": FileEntry._read(files.obj("adaptive")),
            "backbone": FileEntry._read(files.obj("backbone")),
            "signature": f.text("signature"),
        }

    def file_entries(self) -> tuple[FileEntry, ...]:
        return (self.adaptive, self.backbone)


def _manifest_kind(cls: type[Manifest], data: Any, source: str) -> type[Manifest]:
    """The manifest class `data` declares, if `cls` reads it and its version is this one."""
    kinds: dict[Any, type[Manifest]] = {k.format: k for k in (OnnxManifest, TorchScriptManifest)}
    found = data.get("format") if isinstance(data, dict) else None
    kind = kinds.get(found) if cls is Manifest else (cls if found == cls.format else None)
    if kind is None:
        expected = " or ".join(repr(k) for k in (kinds if cls is Manifest else [cls.format]))
        raise ManifestError(
            f"{source} has format {found!r}, expected {expected}; re-export with `bofexits export`"
        )
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise ManifestError(
            f"{source} has version {version!r}; this runner reads version {VERSION}: re-export the model with "
            "this bofexits, or run it with the bofexits_deploy.py in its own folder"
        )
    return kind


def _load(export_dir: str | Path, kind: type[_M], verify_files: bool) -> _M:
    root = Path(export_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{root} is not a bofexits export directory (no {MANIFEST}); create one with `bofexits export`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is unreadable or not JSON ({exc}); re-export the model") from exc
    _check_digest(data, path)
    manifest = kind.from_dict(data, source=str(path))
    if verify_files:
        for entry in manifest.file_entries():
            entry.verify(root, str(path))
    return manifest


def _check_digest(data: Any, path: Path) -> None:
    """Refuse a manifest edited after export; exports older than the checksum carry none."""
    if not isinstance(data, dict) or CONTENT_SHA256 not in data:
        return
    if data[CONTENT_SHA256] != manifest_digest(data):
        raise ManifestError(
            f"{path} was edited after export (its {CONTENT_SHA256} does not match its content): edited "
            "thresholds, classes or preprocessing would change answers silently; re-export with "
            "`bofexits export` (to change the knob, pass beta to the runner or --beta to predict instead)"
        )


def read_manifest(export_dir: str | Path, *, verify_files: bool = True) -> Manifest:
    """The manifest of any bofexits export, ONNX or TorchScript (`OnnxManifest`, `TorchScriptManifest`)."""
    return _load(export_dir, Manifest, verify_files)


def load_manifest(export_dir: str | Path, *, verify_files: bool = True) -> OnnxManifest:
    """Read and check an ONNX export's `manifest.json`: format, version, every field, every graph's SHA-256.

    Raises:
        ManifestError: the directory or manifest is missing, malformed (the message names the
            field), from another format or version, or a graph file is missing or differs from
            the one the manifest describes.
    """
    return _load(export_dir, OnnxManifest, verify_files)


# ---------------------------------------------------------------- the runner


def preprocess(
    images: np.ndarray,
    input_shape: Sequence[int],
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """uint8 images already at the model's size and colour mode -> the network's float32 input.

    The same arithmetic as training batches (`ImageDataset.batches`): ``(images / 255 - mean) / std``
    per channel, in float32.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 1) grey, (N, H, W, 3) RGB; or one image without N.
        input_shape: the model's (C, H, W).
        mean, std: per-channel statistics of ``images / 255``.

    Returns:
        (N, C, H, W) float32, C-contiguous.

    >>> preprocess(np.full((2, 2), 255, np.uint8), (1, 2, 2), [0.5], [0.25])[0, 0].tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise RunnerInputError(f"preprocess takes uint8 images (0..255), got {a.dtype}")
    c, h, w = (int(d) for d in input_shape)
    if a.ndim == (2 if c == 1 else 3):  # one image
        a = a[None]
    if c == 1 and a.ndim == 3:  # grey images without a channel axis
        a = a[..., None]
    if a.ndim != 4 or a.shape[1:] != (h, w, c):
        raise RunnerInputError(
            f"expected images of {h}x{w} with {c} channel(s), got an array of shape {tuple(np.shape(images))}; "
            "resize and convert them first"
        )
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    x: np.ndarray = (a.astype(np.float32) / np.float32(255.0) - m) / s  # channel axis last here
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class RunResult:
    """Outputs of adaptive inference.

    Attributes:
        logits: (B, classes) float32 logits of the exit each sample took.
        exit_index: (B,) int64, 0-based exit taken (num_exits - 1 = the final classifier).
    """

    logits: np.ndarray
    exit_index: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """(B,) predicted classes."""
        return self.logits.argmax(1)


# Per role: (required inputs, allowed inputs, required outputs, allowed outputs).
_NAMES: dict[str, tuple[set[str], set[str], set[str], set[str]]] = {
    "block": ({"x"}, {"x", "state"}, {"features", "logits"}, {"features", "logits", "next_state"}),
    "stage": ({"x"}, {"x"}, {"features"}, {"features"}),
    "exit": ({"features"}, {"features", "state"}, {"logits"}, {"logits", "next_state"}),
    "final": ({"x"}, {"x"}, {"logits"}, {"logits"}),
    "backbone": ({"x"}, {"x"}, {"logits"}, {"logits"}),
}


class _Graph:
    """One ONNX session and the names the manifest gives its inputs and outputs."""

    def __init__(self, ort: Any, root: Path, entry: GraphEntry, options: Any, providers: list[str]) -> None:
        self.name, self.role, self.index = entry.name, entry.role, entry.index
        self.inputs = [t.name for t in entry.inputs]
        self.outputs = [t.name for t in entry.outputs]
        try:
            self.session = ort.InferenceSession(str(root / entry.file), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ManifestError(
                f"onnxruntime cannot load {root / entry.file} ({exc}); re-export the model"
            ) from exc
        self._check(entry.inputs, self.session.get_inputs(), "inputs")
        self._check(entry.outputs, self.session.get_outputs(), "outputs")

    def _check(self, declared: Sequence[TensorEntry], actual: Sequence[Any], what: str) -> None:
        """Names in order, ranks and every dimension both sides know must agree (batch is dynamic)."""
        want = [(t.name, list(t.shape)) for t in declared]
        got = [(a.name, list(a.shape)) for a in actual]
        same = len(want) == len(got) and all(
            wn == gn
            and len(ws) == len(gs)
            and all(
                not (isinstance(w, int) and isinstance(g, int)) or w == g for w, g in zip(ws, gs, strict=True)
            )
            for (wn, ws), (gn, gs) in zip(want, got, strict=False)
        )
        if not same or any(a.type != "tensor(float)" for a in actual):
            raise ManifestError(
                f"graph {self.name}: the manifest declares {what} {want}, the graph has {got}; "
                "the manifest belongs to another export: re-export the model"
            )

    def __call__(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))


_Step = Callable[[np.ndarray, "np.ndarray | None"], tuple[Any, ...]]


def _session_options(ort: Any, threads: int | None) -> Any:
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


class OnnxAdaptiveRunner:
    """Real adaptive inference on an export directory: later graphs never run for samples that stop.

    Batch 1 returns at the first exit whose score passes its threshold; in batches, samples
    that stop leave the batch and later graphs only see the rest (outputs in input order).

    Args:
        export_dir: a directory written by `bofexits.deploy.onnx.export_onnx`.
        threads: onnxruntime intra-op threads of each graph's session (default 1). Every stage
            graph has its own session and thread pool; with two threads per pool the pools
            contend for the cores (demo network, 2-core CPU, batch 1: 475 us per image with 2,
            239 us with 1). None: onnxruntime's default, all cores.
        beta: override the manifest's knob (thresholds recomputed from its calibration).
        check_inputs: validate type, shape, dtype and finiteness of every input.
        providers: onnxruntime execution providers (default CPU).
    """

    def __init__(
        self,
        export_dir: str | Path,
        *,
        threads: int | None = 1,
        beta: float | None = None,
        check_inputs: bool = True,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        ort = _onnxruntime()
        self.export_dir = Path(export_dir)
        self.manifest = m = load_manifest(self.export_dir)
        self.num_exits, self.classes = m.num_exits, list(m.classes)
        pre = m.preprocessing
        self.input_shape: tuple[int, ...] = pre.input_shape
        self.mean = np.asarray(pre.mean, dtype=np.float32)
        self.std = np.asarray(pre.std, dtype=np.float32)
        self.color_mode = pre.color_mode  # "L", "RGB", or None (other channel counts)
        self.score, self.variant = m.policy.score, m.policy.variant
        cal = m.calibration
        self._means = list(cal.means)
        self._quantiles = np.asarray(cal.quantiles, dtype=np.float32)
        self._conditional = None if cal.conditional is None else np.asarray(cal.conditional, dtype=np.float32)
        options = _session_options(ort, threads)
        self.graphs = [_Graph(ort, self.export_dir, g, options, list(providers)) for g in m.graphs]
        self.backbone = _Graph(ort, self.export_dir, m.backbone, options, list(providers))
        self._check_graphs()
        self._steps = self._build_steps(m.layout)
        self.check_inputs = check_inputs
        self.set_beta(m.policy.beta)
        self._check_thresholds(m.policy.thresholds)
        if beta is not None:
            self.set_beta(beta)

    def _check_thresholds(self, stored: Sequence[float]) -> None:
        """The manifest's thresholds must be the ones its calibration gives at its beta.

        The runner computes thresholds from the calibration, so an edited threshold would
        otherwise be ignored without a word (and an edited table would act unseen).
        """
        ours = np.asarray(self.thresholds, dtype=np.float64)
        theirs = np.asarray(stored, dtype=np.float64)
        same = (ours == theirs) | np.isclose(ours, theirs, rtol=1e-5, atol=1e-6)
        if not bool(same.all()):
            raise self._error(
                f"policy.thresholds {list(theirs)} disagree with the thresholds its calibration gives at "
                f"beta {self.beta:g} ({list(ours)}): the manifest was edited"
            )

    def _error(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.export_dir / MANIFEST}: {problem}; re-export the model")

    def _check_graphs(self) -> None:
        """Each graph reads and writes what its role needs, and the first ones read the preprocessed input."""
        for g in [*self.graphs, self.backbone]:
            need_in, allow_in, need_out, allow_out = _NAMES[g.role]
            if not (need_in <= set(g.inputs) <= allow_in and need_out <= set(g.outputs) <= allow_out):
                raise self._error(
                    f"graph {g.name} (role {g.role!r}) has inputs {g.inputs} and outputs {g.outputs}, "
                    "which this runner cannot drive"
                )
        for g in (self.graphs[0], self.backbone):
            if list(g.session.get_inputs()[0].shape[1:]) != list(self.input_shape):
                raise self._error(
                    f"preprocessing says inputs are {list(self.input_shape)}, graph {g.name} reads "
                    f"{g.session.get_inputs()[0].shape[1:]}"
                )

    def _build_steps(self, layout: str) -> list[_Step]:
        """One callable per early exit, ``(x, state) -> (features, logits, next_state)``, and `self.final`."""
        by_role: dict[tuple[str, int], _Graph] = {(g.role, g.index): g for g in self.graphs}
        last = self.num_exits - 1
        final = by_role.get(("final", last))
        if final is None:
            raise self._error(f"no final graph (role 'final', index {last})")
        self.final = final
        steps = []
        for i in range(last):
            if layout == "fused":
                block = by_role.get(("block", i))
                if block is None:
                    raise self._error(f"no graph for stage+exit {i}")
                steps.append(self._fused_step(block))
            else:
                stage, head = by_role.get(("stage", i)), by_role.get(("exit", i))
                if stage is None or head is None:
                    raise self._error(f"no graph for stage {i} or exit {i}")
                steps.append(self._separate_step(stage, head))
        return steps

    @staticmethod
    def _fused_step(block: _Graph) -> _Step:
        takes_state = "state" in block.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            out = block(x=x, state=state) if takes_state and state is not None else block(x=x)
            return out["features"], out["logits"], out.get("next_state")

        return step

    @staticmethod
    def _separate_step(stage: _Graph, head: _Graph) -> _Step:
        takes_state = "state" in head.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            f = stage(x=x)["features"]
            out = head(features=f, state=state) if takes_state and state is not None else head(features=f)
            return f, out["logits"], out.get("next_state")

        return step

    # ------------------------------------------------------------ policy

    def set_beta(self, beta: float) -> None:
        """Use knob `beta` from now on (thresholds from the manifest's calibration statistics)."""
        self.thresholds = calibrated_thresholds(
            self._means, self._quantiles, beta, self.variant, self._conditional
        )
        self.beta = float(beta)

    def with_beta(self, beta: float) -> OnnxAdaptiveRunner:
        """A runner sharing these sessions under another knob value."""
        other = copy.copy(self)
        other.set_beta(beta)
        return other

    # ------------------------------------------------------------ inputs

    def check(self, x: Any) -> None:
        """Reject what would fail inside onnxruntime or be silently mis-routed."""
        if not isinstance(x, np.ndarray):
            raise RunnerInputError(f"expected a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise RunnerInputError(
                f"expected float32 input, got {x.dtype}; convert with x.astype(np.float32) after normalising "
                "(runner.preprocess does both for uint8 images)"
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise RunnerInputError(
                f"expected input of shape (B, {', '.join(map(str, self.input_shape))}) with B >= 1, "
                f"got {tuple(x.shape)}; resize the images to the model's input size"
            )
        if not bool(np.isfinite(x).all()):
            raise RunnerInputError("input contains NaN or inf values; clean or re-normalise the images first")

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the model's size and colour mode -> the normalised float32 batch (`preprocess`)."""
        return preprocess(images, self.input_shape, self.mean, self.std)

    # ------------------------------------------------------------ inference

    def __call__(self, x: np.ndarray) -> RunResult:
        """Adaptive inference on a (B, C, H, W) float32 batch; B == 1 takes the scalar fast path."""
        if self.check_inputs:
            self.check(x)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            return RunResult(logits, np.array([index], dtype=np.int64))
        return self.run_batched(x)

    def run_single(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One sample: (1, classes) logits and the 0-based exit it took. No input checks."""
        state = None
        for i, step in enumerate(self._steps):
            x, logits, state = step(x, state)
            _finite(logits)
            if _score_one(logits, self.score) >= self.thresholds[i]:
                return logits, i
        return _finite(self.final(x=x)["logits"]), len(self._steps)

    def run_batched(self, x: np.ndarray) -> RunResult:
        """A batch where stopped samples leave and the rest go on. No input checks."""
        n, last = x.shape[0], len(self._steps)
        out: np.ndarray | None = None
        exit_index = np.full(n, last, dtype=np.int64)
        alive = np.arange(n)
        state: np.ndarray | None = None
        for i, step in enumerate(self._steps):
            x, logits, state = step(x, state)
            _finite(logits)
            if out is None:
                out = np.empty((n, logits.shape[1]), dtype=logits.dtype)
            stop = confidence(logits, self.score) >= self.thresholds[i]
            n_stop = int(stop.sum())
            if n_stop == 0:
                continue
            out[alive[stop]] = logits[stop]
            exit_index[alive[stop]] = i
            if n_stop == alive.shape[0]:
                return RunResult(out, exit_index)
            go_on = ~stop
            alive, x = alive[go_on], np.ascontiguousarray(x[go_on])
            state = np.ascontiguousarray(state[go_on]) if state is not None else None
        final = _finite(self.final(x=x)["logits"])
        if out is None:
            out = np.empty((n, final.shape[1]), dtype=final.dtype)
        out[alive] = final
        return RunResult(out, exit_index)

    def run_backbone(self, x: np.ndarray) -> np.ndarray:
        """The plain backbone (all stages in one graph, no exits): the full network and speed baseline."""
        if self.check_inputs:
            self.check(x)
        return _finite(self.backbone(x=x)["logits"])


def _finite(logits: np.ndarray) -> np.ndarray:
    # A NaN score compares False and would be silently routed onwards; refuse it instead.
    if not bool(np.isfinite(logits).all()):
        raise RunnerInputError(NAN_MESSAGE)
    return logits
