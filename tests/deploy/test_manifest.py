"""The typed manifest: version-1 files read and written back key for key, malformed ones refused by field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bofexits._io import jsonable
from bofexits.deploy.runner import (
    Manifest,
    ManifestError,
    OnnxManifest,
    TorchScriptManifest,
    load_manifest,
    read_manifest,
)
from bofexits.errors import CheckpointError

INF = float("inf")


def _tensor(name: str, *shape: int) -> dict[str, Any]:
    return {"name": name, "shape": ["batch", *shape], "dtype": "float32"}


def _graph(name: str, role: str, index: int, inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "index": index,
        "file": f"{name}.onnx",
        "inputs": inputs,
        "outputs": outputs,
        "sha256": name[0] * 64,
    }


def v1_onnx() -> dict[str, Any]:
    """A version-1 ONNX manifest (3 exits, fused), key for key as the exporter has written it so far.

    The reference for the on-disk format: written out here, not by the code under test.
    """
    table = [[i / 1000 + row for i in range(1001)] for row in range(2)]
    carried = [_tensor("logits", 4), _tensor("next_state", 4)]  # the exits carry a (B, 4) state
    return {
        "format": "bofexits-onnx",
        "version": 1,
        "producer": {"bofexits": "0.1.0", "torch": "2.13.0+cpu", "exporter": "legacy", "opset": 17},
        "layout": "fused",
        "num_exits": 3,
        "num_classes": 4,
        "graphs": [
            _graph("block_0", "block", 0, [_tensor("x", 1, 8, 8)], [_tensor("features", 4, 8, 8), *carried]),
            _graph(
                "block_1",
                "block",
                1,
                [_tensor("x", 4, 8, 8), _tensor("state", 4)],
                [_tensor("features", 6, 4, 4), *carried],
            ),
            _graph("final", "final", 2, [_tensor("x", 6, 4, 4)], [_tensor("logits", 4)]),
        ],
        "backbone": _graph("backbone", "backbone", -1, [_tensor("x", 1, 8, 8)], [_tensor("logits", 4)]),
        "policy": {
            "name": "calibrated",
            "score": "max_prob",
            "variant": "conditional",
            "beta": 0.0,
            "beta_source": "argument",
            "thresholds": ["-inf", "-inf"],  # how strict JSON stores beta = 0
        },
        "calibration": {
            "score": "max_prob",
            "means": [0.5, 1.5],  # each between its quantile table's first and last entry
            "quantiles": table,
            "num_samples": 128,
            "conditional": [[*row[:-1], "inf"] for row in table],
        },
        "classes": ["T-shirt", "Trouser", "Bag", "Boot"],
        "preprocessing": {
            "input_shape": [1, 8, 8],
            "color_mode": "L",
            "scale": 255.0,
            "mean": [0.286],
            "std": [0.353],
            "steps": "convert to color_mode; resize to exactly (H, W), bilinear; x = (pixels / 255 - mean) / std "
            "per channel; float32 NCHW",
        },
        "runner": "bofexits_deploy.py",  # exports before the runner became a package; still read
    }


def v1_torchscript() -> dict[str, Any]:
    """The same network's version-1 TorchScript manifest."""
    data = v1_onnx()
    for key in ("layout", "graphs", "backbone", "runner"):
        del data[key]
    data.update(
        format="bofexits-torchscript",
        producer={"bofexits": "0.1.0", "torch": "2.13.0+cpu"},
        files={
            "adaptive": {"file": "adaptive.pt", "sha256": "a" * 64},
            "backbone": {"file": "backbone.pt", "sha256": "b" * 64},
        },
        signature="adaptive.pt: x (B, C, H, W) float32 -> (logits (B, classes), exit_index (B,) int64); "
        "backbone.pt: x -> logits",
    )
    return data


@pytest.mark.parametrize("make, kind", [(v1_onnx, OnnxManifest), (v1_torchscript, TorchScriptManifest)])
def test_version_1_files_read_typed_and_write_back_unchanged(
    make: Callable[[], dict[str, Any]], kind: type[Manifest]
) -> None:
    data = make()
    manifest = Manifest.from_dict(copy.deepcopy(data))
    assert type(manifest) is kind and kind.from_dict(data) == manifest
    assert jsonable(manifest.to_dict()) == data  # the same keys and values on disk
    assert manifest.policy.thresholds == (-INF, -INF) and manifest.calibration.conditional is not None
    assert manifest.calibration.conditional[1][-1] == INF and len(manifest.calibration.quantiles[0]) == 1001
    assert manifest.preprocessing.input_shape == (1, 8, 8) and manifest.classes[2] == "Bag"


def test_round_trip_through_strict_json() -> None:
    manifest = OnnxManifest.from_dict(v1_onnx())
    text = json.dumps(jsonable(manifest.to_dict()), allow_nan=False)
    assert OnnxManifest.from_dict(json.loads(text)) == manifest
    assert manifest.graphs[1].inputs[1].shape == ("batch", 4) and manifest.backbone.index == -1
    assert [e.file for e in manifest.file_entries()] == [
        "block_0.onnx",
        "block_1.onnx",
        "final.onnx",
        "backbone.onnx",
    ]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets (or, with value `_DROP`, deletes) the entry at a dotted path like ``graphs.1.inputs``."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        index: Any = int(last) if isinstance(node, list) else last
        if value is _DROP:
            del node[index]
        else:
            node[index] = value

    return edit


_DROP = object()


@pytest.mark.parametrize(
    "edit, message",
    [
        # a wrong type
        (_set("policy.beta", "half"), r"field 'policy\.beta' must be a number, got 'half' \(string\)"),
        (_set("num_exits", "3"), r"field 'num_exits' must be an integer >= 1, got '3'"),
        (_set("num_classes", True), r"field 'num_classes' must be an integer >= 1, got True \(boolean\)"),
        (_set("classes.1", 7), r"field 'classes' entry 1 must be a string, got 7 \(number\)"),
        (_set("preprocessing", []), r"field 'preprocessing' must be a JSON object, got \[\] \(array\)"),
        (
            _set("calibration.quantiles.1.5", "x"),
            r"field 'calibration\.quantiles' entry \[1\]\[5\] must be a number",
        ),
        (_set("calibration.means.0", "nan"), r"field 'calibration\.means' entry 0 must be a number"),
        (_set("graphs.1.inputs.0.shape", ["batch", 1.5]), r"field 'graphs\[1\]\.inputs\[0\]\.shape' entry 1"),
        (_set("graphs.0.index", "0"), r"field 'graphs\[0\]\.index' must be an integer"),
        (
            _set("policy.variant", "median"),
            r"field 'policy\.variant' is 'median'; this runner knows mean, quantile",
        ),
        (_set("layout", "stacked"), r"field 'layout' is 'stacked'; this runner knows fused, separate"),
        (
            _set("calibration.score", "margin"),
            r"field 'calibration\.score' is 'margin' but 'policy\.score' is 'max_prob'",
        ),
        # a wrong length
        (
            _set("policy.thresholds", [0.5]),
            r"field 'policy\.thresholds' has 1 entries, expected 2 \(one per early exit\)",
        ),
        (_set("classes", ["a", "b", "c"]), r"field 'classes' has 3 entries, expected 4 \(one per class\)"),
        (_set("graphs.1", _DROP), r"field 'graphs' has 2 entries, expected 3 \(one per stage\+exit pair"),
        (
            _set("calibration.conditional.0", [0.0] * 1000),
            r"field 'calibration\.conditional' has calibration shape",
        ),
        (
            _set("preprocessing.input_shape", [1, 8]),
            r"field 'preprocessing\.input_shape' has 2 entries, expected 3",
        ),
        (
            _set("preprocessing.std", [0.3, 0.3]),
            r"field 'preprocessing\.std' has 2 entries, but preprocessing says",
        ),
        # a missing key
        (_set("policy.score", _DROP), r"lacks \['policy\.score'\]"),
        (_set("graphs.0.sha256", _DROP), r"lacks \['graphs\[0\]\.sha256'\]"),
        (_set("backbone.outputs.0.name", _DROP), r"lacks \['backbone\.outputs\[0\]\.name'\]"),
        (_set("layout", _DROP), r"lacks \['layout'\]"),
        (_set("preprocessing.steps", _DROP), r"lacks \['preprocessing\.steps'\]"),
    ],
)
def test_malformed_fields_are_named(edit: Callable[[dict[str, Any]], None], message: str) -> None:
    data = v1_onnx()
    edit(data)
    with pytest.raises(ManifestError, match=message) as info:
        OnnxManifest.from_dict(data, source="export/manifest.json")
    assert str(info.value).startswith("export/manifest.json") and "re-export" in str(info.value)
    assert isinstance(info.value, CheckpointError)  # one error family inside the package


def test_torchscript_fields_are_checked_too() -> None:
    data = v1_torchscript()
    del data["files"]["backbone"]
    with pytest.raises(ManifestError, match=r"lacks \['files\.backbone'\]"):
        Manifest.from_dict(data)


def test_conditional_may_be_absent_and_optional_producer_fields_stay_out() -> None:
    data = v1_torchscript()
    data["calibration"].pop("conditional")  # calibrations made before the conditional variant
    manifest = TorchScriptManifest.from_dict(data)
    assert manifest.calibration.conditional is None and manifest.producer.exporter is None
    assert manifest.to_dict()["producer"] == {"bofexits": "0.1.0", "torch": "2.13.0+cpu"}


@pytest.mark.parametrize(
    "kind, edit, message",
    [
        (OnnxManifest, _set("version", 2), r"has version 2; this runner reads version 1: re-export"),
        (OnnxManifest, _set("version", True), r"has version True; this runner reads version 1"),
        (Manifest, _set("version", _DROP), r"has version None; this runner reads version 1"),
        (
            OnnxManifest,
            _set("format", "bofexits-torchscript"),
            r"format 'bofexits-torchscript', expected 'bofexits-onnx'",
        ),
        (
            Manifest,
            _set("format", "other"),
            r"format 'other', expected 'bofexits-onnx' or 'bofexits-torchscript'",
        ),
    ],
)
def test_other_formats_and_versions_are_refused(
    kind: type[Manifest], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = v1_onnx()
    edit(data)
    with pytest.raises(ManifestError, match=message):
        kind.from_dict(data)
    with pytest.raises(ManifestError, match="must be a JSON object"):
        kind.from_dict(
            {"format": "bofexits-onnx", "version": 1, "policy": None, "num_exits": 3, "num_classes": 4}
        )


def test_files_on_disk_name_the_file_and_the_field(tmp_path: Path) -> None:
    data = v1_torchscript()
    data["num_classes"] = "four"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        ManifestError, match=rf"^{tmp_path}/manifest.json: field 'num_classes' must be an integer"
    ):
        read_manifest(tmp_path, verify_files=False)
    with pytest.raises(ManifestError, match="format 'bofexits-torchscript', expected 'bofexits-onnx'"):
        load_manifest(tmp_path, verify_files=False)  # the runner reads ONNX exports only
    (tmp_path / "manifest.json").write_text(json.dumps(v1_torchscript()))
    with pytest.raises(ManifestError, match="adaptive.pt named in .* is missing"):
        read_manifest(tmp_path)
    assert isinstance(read_manifest(tmp_path, verify_files=False), TorchScriptManifest)


def test_reversed_quantile_table_is_refused() -> None:
    data = v1_onnx()
    data["calibration"]["quantiles"][1].reverse()
    with pytest.raises(ManifestError, match="'calibration.quantiles' decreases with the level at early exit 1"):
        OnnxManifest.from_dict(data, source="export/manifest.json")
