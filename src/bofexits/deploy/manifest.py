"""The export's `manifest.json`, declared once: its schema, reading it and checking it.

The exporters (`bofexits.deploy.onnx`, `bofexits.deploy.torchscript`) write a `Manifest`, the
runner (`bofexits.deploy.runner`) and `predict` read it back with `load_manifest` /
`read_manifest`, which check the format, the schema `VERSION`, every field (`Manifest.from_dict`
names the bad one), the manifest's own checksum (`CONTENT_SHA256`) and the SHA-256 of every
file it pins. The parts (`TensorEntry`, `GraphEntry`, `PolicyEntry`, ...) are declared in
`_entries` and read field by field with `_fields`; this module re-exports them. Like the
runner, it imports only the standard library and numpy, because an ONNX export ships a copy
(`bofexits_deploy/manifest.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from ._entries import (
    PREPROCESSING_STEPS,
    ROLES,
    CalibrationEntry,
    Entry,
    FileEntry,
    GraphEntry,
    PolicyEntry,
    PreprocessingEntry,
    ProducerEntry,
    TensorEntry,
    sha256_file,
)
from ._fields import Fields
from .errors import ManifestError

__all__ = [
    "CONTENT_SHA256",
    "FORMAT",
    "LAYOUTS",
    "MANIFEST",
    "PREPROCESSING_STEPS",
    "ROLES",
    "RUNNER_FILE",
    "TORCHSCRIPT_FORMAT",
    "VERSION",
    "CalibrationEntry",
    "FileEntry",
    "GraphEntry",
    "Manifest",
    "OnnxManifest",
    "PolicyEntry",
    "PreprocessingEntry",
    "ProducerEntry",
    "TensorEntry",
    "TorchScriptManifest",
    "load_manifest",
    "manifest_digest",
    "read_manifest",
    "sha256_file",
]

FORMAT = "bofexits-onnx"
TORCHSCRIPT_FORMAT = "bofexits-torchscript"
VERSION = 1  # of the manifest's schema, both formats; bump it when a key changes meaning or goes
MANIFEST = "manifest.json"
#: The runner an ONNX export ships: a package folder, imported as `bofexits_deploy`. Exports
#: before the manifest split shipped one file, "bofexits_deploy.py", imported the same way; the
#: manifest's `runner` field only records which, so both load.
RUNNER_FILE = "bofexits_deploy"
LAYOUTS: tuple[str, ...] = ("fused", "separate")

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


_M = TypeVar("_M", bound="Manifest")


@dataclass(frozen=True)
class Manifest(Entry):
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
        return cast(_M, kind(**kind._read(Fields(data, "", source))))

    @classmethod
    def _read(cls, f: Fields) -> dict[str, Any]:
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
        runner: the runner shipped in the directory, for information only: `RUNNER_FILE`, the
            package folder ``bofexits_deploy/``, or "bofexits_deploy.py" in older exports.
        adaptive: ``adaptive.onnx``, the whole batch-1 rule in one graph (nested If), or None
            (exports before it; the runner then drives the staged graphs).
        adaptive_batched: ``adaptive_batched.onnx``, the rule on a batch in one graph, or None.
    """

    layout: str
    graphs: tuple[GraphEntry, ...]
    backbone: GraphEntry
    runner: str = RUNNER_FILE
    adaptive: GraphEntry | None = None
    adaptive_batched: GraphEntry | None = None

    format: ClassVar[str] = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """As `Manifest.to_dict`, without the optional graphs this export lacks."""
        return {k: v for k, v in super().to_dict().items() if k not in _OPTIONAL_GRAPHS or v is not None}

    @classmethod
    def _read(cls, f: Fields) -> dict[str, Any]:
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
            **{key: _optional_graph(f, key) for key in _OPTIONAL_GRAPHS},
        }

    def file_entries(self) -> tuple[FileEntry, ...]:
        optional = (self.adaptive, self.adaptive_batched)
        return (*self.graphs, self.backbone, *(g for g in optional if g is not None))


#: The graphs an ONNX manifest may lack (older exports), keyed by field: each has the role of its name.
_OPTIONAL_GRAPHS = ("adaptive", "adaptive_batched")


def _optional_graph(f: Fields, key: str) -> GraphEntry | None:
    """The graph entry under `key`, None if absent; its role must be `key`."""
    entry = f.optional(key, lambda k: GraphEntry._read(f.obj(k)))
    if entry is not None and entry.role != key:
        raise f.error(f"{key}.role", f"is {entry.role!r}, expected {key!r}")
    return entry


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
    def _read(cls, f: Fields) -> dict[str, Any]:
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
            "this bofexits, or run it with the bofexits_deploy runner shipped in its own folder"
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
    except RecursionError:  # json recurses once per level: deep nesting overflows it
        raise ManifestError(f"{path} is nested too deeply to be a manifest; re-export the model") from None
    _check_digest(data, path)
    manifest = kind.from_dict(data, source=str(path))
    if verify_files:
        for entry in manifest.file_entries():
            entry.verify(root, str(path))
    return manifest


#: The first bofexits release whose exports carry `content_sha256`: from it on, a manifest
#: without one had it deleted (older exports load as before).
CHECKSUM_SINCE = (0, 2)


def _release(version: Any) -> tuple[int, ...]:
    """(major, minor) of a "0.2.0"-style version string; (0,) when unreadable."""
    try:
        return tuple(int(part) for part in str(version).split(".")[:2])
    except ValueError:
        return (0,)


def _check_digest(data: Any, path: Path) -> None:
    """Refuse a manifest edited after export, or one whose checksum was deleted."""
    if not isinstance(data, dict):
        return
    if CONTENT_SHA256 not in data:
        producer = data.get("producer")
        version = producer.get("bofexits") if isinstance(producer, dict) else None
        if _release(version) >= CHECKSUM_SINCE:
            raise ManifestError(
                f"{path} lacks its {CONTENT_SHA256}, which bofexits {version} writes: the manifest was edited; "
                "re-export with `bofexits export`"
            )
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
