"""The parts of a manifest: frozen dataclasses whose field names are the JSON keys, each read by `_read`.

`TensorEntry` (a graph input or output), `FileEntry` (a file and its SHA-256), `GraphEntry` (an
ONNX graph), `ProducerEntry`, `PolicyEntry`, `CalibrationEntry` and `PreprocessingEntry`; the
whole manifest (`bofexits.deploy.manifest.Manifest`) is made of them. Each ``_read`` checks its
object field by field (`Fields`), so a malformed manifest is refused naming the field.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._fields import Fields, show
from .errors import ManifestError
from .rule import _GRID, SCORES, VARIANTS

__all__ = [
    "PREPROCESSING_STEPS",
    "ROLES",
    "CalibrationEntry",
    "Entry",
    "FileEntry",
    "GraphEntry",
    "PolicyEntry",
    "PreprocessingEntry",
    "ProducerEntry",
    "TensorEntry",
    "file_name",
    "inside",
    "sha256_file",
]

#: Graph roles: stage+exit fused, stage, exit, the final stage with the head, the plain network,
#: and adaptive inference in one graph, for batch 1 (nested If) and for batches (compaction).
ROLES: tuple[str, ...] = ("block", "stage", "exit", "final", "backbone", "adaptive", "adaptive_batched")
PREPROCESSING_STEPS = (
    "convert to color_mode; resize to exactly (H, W), bilinear; x = (pixels / 255 - mean) / std per channel; "
    "float32 NCHW"
)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (how the manifest pins each graph)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_name(f: Fields, key: str) -> str:
    """A file name of the export: relative, inside the folder (no absolute path, no ``..``, no
    drive or backslash), so that an edited (and resealed) manifest cannot point the runner at
    ``/etc/passwd`` or ``../../other/adaptive.onnx``."""
    name = f.text(key)
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or "\0" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise f.error(key, f"is {name!r}; files of an export are plain relative names inside its folder")
    return name


def inside(root: Path, name: str, source: str) -> Path:
    """`root / name` with symlinks resolved, which must stay inside `root` (also resolved)."""
    base = Path(root).resolve()
    path = (base / name).resolve()
    if path != base and base not in path.parents:
        raise ManifestError(
            f"{source} names {name!r}, which resolves to {path}, outside the export folder {base} (a symlink "
            "or an edited manifest); an export reads only its own files: re-export the model"
        )
    return path


class Entry:
    """A part of the manifest: a frozen dataclass whose field names are its JSON keys."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (tuples as lists, entries as objects)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, Entry):
        return value.to_dict()
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class TensorEntry(Entry):
    """A graph input or output: name, shape ("batch" for the dynamic first axis) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @classmethod
    def _read(cls, f: Fields) -> TensorEntry:
        shape = f.items("shape")
        for i, d in enumerate(shape):
            if not (isinstance(d, str) or (type(d) is int and d >= 0)):
                raise f.error("shape", f"entry {i} must be a size or an axis name, got {show(d)}")
        return cls(f.text("name"), tuple(shape), f.text("dtype"))


@dataclass(frozen=True)
class FileEntry(Entry):
    """A file of the export and the SHA-256 of its bytes, checked before the file is loaded."""

    file: str
    sha256: str

    @classmethod
    def _read(cls, f: Fields) -> FileEntry:
        return cls(file_name(f, "file"), f.text("sha256"))

    def path(self, root: Path, source: str) -> Path:
        """`root / file`, resolved; refused (`ManifestError`) if it lands outside `root`.

        Names are checked when read (`file_name`); this also catches a symlink inside the
        export that points out of it, so a manifest never makes the runner read, hash or load
        a file elsewhere on the machine.
        """
        return inside(root, self.file, source)

    def verify(self, root: Path, source: str) -> None:
        """Raise `ManifestError` unless `root / file` exists inside `root` with the recorded SHA-256."""
        file = self.path(root, source)
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
    backbone's head), "backbone" (the plain network), "adaptive" and "adaptive_batched" (the
    whole rule in one graph, `bofexits.deploy._compose`); `index` is i (-1 for the last three).
    """

    name: str
    role: str
    index: int
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]

    @classmethod
    def _read(cls, f: Fields) -> GraphEntry:
        return cls(
            file=file_name(f, "file"),
            sha256=f.text("sha256"),
            name=f.text("name"),
            role=f.text("role", ROLES),
            index=f.integer("index", minimum=-1),
            inputs=tuple(TensorEntry._read(t) for t in f.objs("inputs")),
            outputs=tuple(TensorEntry._read(t) for t in f.objs("outputs")),
        )


@dataclass(frozen=True)
class ProducerEntry(Entry):
    """What wrote the export: versions, and for ONNX the exporter and opset (left out when None)."""

    bofexits: str
    torch: str
    exporter: str | None = None
    opset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}

    @classmethod
    def _read(cls, f: Fields) -> ProducerEntry:
        exporter, opset = f.optional("exporter", f.text), f.optional("opset", f.integer)
        return cls(f.text("bofexits"), f.text("torch"), exporter, opset)


@dataclass(frozen=True)
class PolicyEntry(Entry):
    """The calibrated rule: score, variant, knob and its origin, and the knob's (S-1,) thresholds."""

    name: str
    score: str
    variant: str
    beta: float
    beta_source: str
    thresholds: tuple[float, ...]

    @classmethod
    def _read(cls, f: Fields, num_exits: int) -> PolicyEntry:
        return cls(
            name=f.text("name", ("calibrated",)),
            score=f.text("score", SCORES),
            variant=f.text("variant", VARIANTS),
            beta=f.number("beta"),
            beta_source=f.text("beta_source"),
            thresholds=f.numbers("thresholds", num_exits - 1, "early exit"),
        )


@dataclass(frozen=True)
class CalibrationEntry(Entry):
    """The score's per-exit statistics, as `bofexits.policies.ExitCalibration.to_dict` writes them.

    Attributes:
        means: (S-1,) mean score per early exit.
        quantiles: (S-1, 1001) score quantiles at levels 0, 0.001, ..., 1.
        conditional: (S-1, 1001) thresholds of the conditional variant, or None (older exports).
        accuracy: (S-1, 1001) thresholds of the accuracy variant, or None (older exports).
    """

    score: str
    means: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    num_samples: int
    conditional: tuple[tuple[float, ...], ...] | None = None
    accuracy: tuple[tuple[float, ...], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Without `accuracy` when absent, so files written before it round-trip unchanged."""
        out = super().to_dict()
        if out["accuracy"] is None:
            del out["accuracy"]
        return out

    @classmethod
    def _read(cls, f: Fields, num_exits: int) -> CalibrationEntry:
        rows = num_exits - 1
        quantiles = f.table("quantiles", rows, _GRID)
        for i, row in enumerate(quantiles):
            if any(b < a for a, b in itertools.pairwise(row)):  # a reversed table would invert the knob
                raise f.error("quantiles", f"decreases with the level at early exit {i}")
        means = f.numbers("means", rows, "early exit")
        for i, (mean, row) in enumerate(zip(means, quantiles, strict=True)):
            slack = 1e-5 * max(1.0, abs(row[0]), abs(row[-1]))  # means in float64, quantiles in float32
            if not row[0] - slack <= mean <= row[-1] + slack:  # a mean lies between its minimum and maximum
                raise f.error(
                    "means", f"at early exit {i} is {mean:g}, outside the score's range [{row[0]:g}, {row[-1]:g}]"
                )
        return cls(
            score=f.text("score", SCORES),
            means=means,
            quantiles=quantiles,
            num_samples=f.integer("num_samples", minimum=1),
            conditional=f.optional("conditional", lambda key: f.table(key, rows, _GRID)),
            accuracy=f.optional("accuracy", lambda key: f.table(key, rows, _GRID)),
        )


@dataclass(frozen=True)
class PreprocessingEntry(Entry):
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
    def _read(cls, f: Fields) -> PreprocessingEntry:
        shape = f.items("input_shape", 3, "axis of (C, H, W)")
        if not all(type(d) is int and d > 0 for d in shape):
            raise f.error("input_shape", f"must be three positive integers (C, H, W), got {show(shape)}")
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
