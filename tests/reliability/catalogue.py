"""A catalogue of hostile and careless inputs against the CLI and the Python API, each classified.

    make reliability          # pytest -m reliability tests/reliability: writes docs/reliability.md
    .venv/bin/python -m tests.reliability.catalogue [--out docs/reliability.md] [--jobs 2]
        [--timeout 90] [--only TEXT] [--fixtures DIR]

Trains one tiny checkpoint (generated Fashion-MNIST-format data, 300 images, one backbone and
one exit epoch) and exports it once (ONNX, legacy exporter) into a temporary folder, derives
broken copies of both, of the data files and of images, and runs every case in its own
subprocess with a timeout. Categories: checkpoints (truncated, garbage, pickles that would run
code, NaN/inf weights and BatchNorm statistics, wrong config types, broken calibration), data
files (IDX truncated or inconsistent, missing, explicit --data-dir), images for `predict`,
exports (tampered manifest fields and graph files), CLI option values on a valid checkpoint,
bad tensors handed to the Python API; and (`tests.reliability.families`, issue 21) paths and
symlinks, signals mid-write, a full disk, deep JSON, corrupt training states and every image
mode through train and predict.

Each case is classified:

- clear: exit 2 with one stderr line (or `predict`'s documented per-file error: exit 1 and one
  "FILE: error: ..." output line), or a `BofexitsError` from the Python API;
- traceback: any other exception, or a traceback on stderr;
- unclear: an error exit without a traceback that is not one line (argparse's usage block, ...);
- silent-wrong: exit 0 or a returned result where the input was broken;
- hang: the timeout ran out;
- ok: valid input that succeeded (the controls); wrongly-refused: valid input that failed;
- code-executed: a pickle payload ran (it creates a marker file); must never happen;
- lost: a file the command did not own was deleted or changed (a case's own check says which).

A case may carry a `check`, run after it on its output, that turns a verdict into silent-wrong
or lost (a mixed output folder, a symlink turned into a copy, partial files left on a full disk).

Writes --out (docs/reliability.md): counts per class and category and every case that is not
clear or ok, with its command and the first line of its output; and the same as JSON next to it
(docs/reliability.json). About 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import builtins
import copy
import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bofexits.data import write_idx

CLEAR, TRACEBACK, UNCLEAR, SILENT, HANG, OK, REFUSED, EXECUTED, LOST = (
    "clear",
    "traceback",
    "unclear",
    "silent-wrong",
    "hang",
    "ok",
    "wrongly-refused",
    "code-executed",
    "lost",
)
CLASSES = (CLEAR, OK, TRACEBACK, UNCLEAR, SILENT, HANG, REFUSED, EXECUTED, LOST)
#: The bofexits the cases run (default: this checkout's); another, to show what an older one did.
SRC = Path(os.environ.get("BOFEXITS_RELIABILITY_SRC") or Path(__file__).resolve().parents[2] / "src")
CLI = [sys.executable, "-m", "bofexits.cli", "-q"]
EVAL = ["--betas", "0.5", "--timing-samples", "0"]  # the cheapest `sweep`


@dataclass
class Case:
    """One input: a CLI command (`argv`) or a Python snippet (`code`) that should fail or succeed."""

    id: str
    category: str
    argv: list[str] | None = None
    code: str | None = None
    expect: str = "error"  # or "ok", or "interrupt" (exit 130 or 143 and one stderr line)
    note: str = ""
    copy: tuple[Path, Path] | None = None  # (source, target) copied before the case runs: what it may modify
    setup: Callable[[], None] | None = None  # run before the case (after `copy`)
    # Run after the case on its output: None if all is well, else (verdict, why).
    check: Callable[[subprocess.CompletedProcess[str]], tuple[str, str] | None] | None = None


@dataclass
class Result:
    id: str
    category: str
    command: str
    expect: str
    verdict: str
    exit: int | str
    seconds: float
    first_line: str
    note: str = ""


@dataclass
class Fixtures:
    """Paths of everything the cases use, under one temporary root."""

    root: Path
    data_dir: str | None = None  # default: the generated "valid" folder
    ckpt: Path = field(init=False)
    export: Path = field(init=False)
    marker: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ckpt = self.root / "run" / "checkpoint.pt"
        self.export = self.root / "export"
        self.marker = self.root / "PAYLOAD_RAN"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def data_args(self) -> list[str]:
        return ["--data-dir", self.data_dir or str(self.path("data", "valid"))]


# ---------------------------------------------------------------- fixtures


class _Payload:
    """Unpickling this creates the marker file: what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (self.marker, "w")


def env() -> dict[str, str]:
    """The environment of every case: this checkout's `src` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env())
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def build_fixtures(fx: Fixtures) -> None:
    """The generated data, the tiny run and export, then the broken copies the cases read."""
    _data_dirs(fx)
    train = [*CLI, "train", "--dataset", "fashion-mnist", "--limit-train", "300", "--epochs", "1"]
    train += ["--exit-epochs", "1", "--threads", "1", "--seed", "0", "--out", str(fx.ckpt.parent)]
    _run([*train, *fx.data_args()], "training the tiny checkpoint")
    _run([*CLI, "export", str(fx.ckpt), str(fx.export), "--onnx-exporter", "legacy"], "exporting it")
    _images(fx)
    _checkpoints(fx)
    _exports(fx)
    _misc_files(fx)


def _images(fx: Fixtures) -> None:
    d = fx.path("img")
    d.mkdir()
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 8:20] = 200  # a bright block, like a garment
    good = Image.fromarray(pixels, "L")
    good.save(d / "good.png")
    good.save(d / "good.jpg")
    good.convert("RGB").save(d / "rgb.png")
    good.convert("RGBA").save(d / "rgba.png")
    good.convert("CMYK").save(d / "cmyk.jpg")
    good.convert("P").save(d / "palette.png")
    good.resize((96, 60)).save(d / "other-size.png")
    Image.new("L", (1, 1), 128).save(d / "one-pixel.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(d / "sixteen-bit.png")  # mode I;16
    (d / "not-an-image.png").write_text("this is text, not a PNG\n")
    (d / "empty.png").write_bytes(b"")
    data = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "a-folder.png").mkdir()
    Image.new("L", (14000, 14000)).save(d / "bomb.png")  # 196 Mpixels: past PIL's bomb limit


def _checkpoint_variants(state: dict[str, Any], marker: Path) -> dict[str, Any]:
    """name -> the object to torch.save (None: written as raw bytes by `_checkpoints`)."""
    model = state["model"]
    conv = next(k for k in model if k.endswith("weight") and model[k].ndim == 4)
    var = next(k for k in model if k.endswith("running_var"))

    def edit(**changes: Any) -> dict[str, Any]:
        out = copy.deepcopy(state)
        for path, value in changes.items():
            target = out
            keys = path.split("__")
            for k in keys[:-1]:
                target = target[k]
            if value is _DELETE:
                del target[keys[-1]]
            else:
                target[keys[-1]] = value
        return out

    def tensor_edit(key: str, fill: float, index: int = 0) -> dict[str, Any]:
        out = copy.deepcopy(state)
        out["model"][key].view(-1)[index] = fill
        return out

    def calibration(**changes: Any) -> dict[str, Any]:
        out = copy.deepcopy(state)
        for score in out["calibration"]:
            out["calibration"][score].update(changes)
        return out

    missing_key = copy.deepcopy(state)
    del missing_key["model"][conv]
    wrong_shape = copy.deepcopy(state)
    wrong_shape["model"][conv] = torch.zeros(3, 3)
    return {
        "payload-object": _Payload(marker),
        "payload-in-config": edit(config=_Payload(marker)),
        "not-a-dict": [1, 2, 3],
        "format-tag-wrong": edit(format="something-else"),
        "version-99": edit(version=99),
        "config-missing": edit(config=_DELETE),
        "config-epochs-str": edit(config__epochs="2"),
        "config-codewords-str": edit(config__model__codewords="32"),
        "config-unknown-backbone": edit(config__model__backbone="resnet999"),
        "config-none": edit(config=None),
        "model-missing-tensor": missing_key,
        "model-shape-mismatch": wrong_shape,
        "model-not-a-dict": edit(model="weights"),
        "weight-nan": tensor_edit(conv, float("nan")),
        "weight-inf": tensor_edit(conv, float("inf")),
        "bn-running-var-nan": tensor_edit(var, float("nan")),
        "bn-running-var-inf": tensor_edit(var, float("inf")),
        "bn-running-var-negative": tensor_edit(var, -1.0),
        "calibration-means-nan": calibration(means=[float("nan")] * 3),
        "calibration-short-table": calibration(quantiles=[[0.0] * 10] * 3),
        "calibration-score-unknown": calibration(score="nope"),
        "calibration-quantiles-reversed": calibration(
            quantiles=[row[::-1] for row in state["calibration"]["max_prob"]["quantiles"]]
        ),
        "incomplete-no-calibration": edit(calibration=None, complete=False),
    }


_DELETE = object()


def _checkpoints(fx: Fixtures) -> None:
    d = fx.path("ckpt")
    d.mkdir()
    data = fx.ckpt.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "garbage.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    (d / "empty.pt").write_bytes(b"")
    (d / "payload-raw-pickle.pt").write_bytes(pickle.dumps(_Payload(fx.marker), protocol=2))
    state = torch.load(fx.ckpt, map_location="cpu", weights_only=True)
    for name, obj in _checkpoint_variants(state, fx.marker).items():
        torch.save(obj, d / f"{name}.pt")
    # A folder whose checkpoint would be resumed: the payload where `train --resume` reads it.
    resume = fx.path("resume-payload")
    resume.mkdir()
    shutil.copy(d / "payload-object.pt", resume / "checkpoint.pt")
    shutil.copy(fx.ckpt.parent / "config.json", resume / "config.json")


def _export_variants(m: dict[str, Any]) -> dict[str, Any]:
    """name -> a function editing the manifest dict in place (or a string: a file-level edit)."""

    def setter(path: str, value: Any) -> Any:
        def apply(d: dict[str, Any]) -> None:
            keys = path.split(".")
            for k in keys[:-1]:
                d = d[int(k)] if isinstance(d, list) else d[k]
            if value is _DELETE:
                del d[keys[-1]]
            else:
                d[keys[-1]] = value

        return apply

    classes = list(m["classes"])
    return {
        "thresholds-edited": setter("policy.thresholds", [0.0] * len(m["policy"]["thresholds"])),
        "beta-nan": setter("policy.beta", float("nan")),
        "beta-out-of-range": setter("policy.beta", 5.0),
        "quantiles-nan": lambda d: d["calibration"]["quantiles"][0].__setitem__(500, float("nan")),
        "quantiles-reversed": lambda d: [row.reverse() for row in d["calibration"]["quantiles"]],
        "conditional-reversed": lambda d: [row.reverse() for row in d["calibration"]["conditional"] or []],
        "means-negative": setter("calibration.means", [-1.0] * len(m["calibration"]["means"])),
        "std-negative": setter("preprocessing.std", [-0.3]),
        "std-zero": setter("preprocessing.std", [0.0]),
        "mean-nan": setter("preprocessing.mean", [float("nan")]),
        "input-shape-edited": setter("preprocessing.input_shape", [1, 32, 32]),
        "color-mode-cmyk": setter("preprocessing.color_mode", "CMYK"),
        "classes-reversed": setter("classes", classes[::-1]),
        "classes-short": setter("classes", classes[:-1]),
        "num-classes-edited": setter("num_classes", len(classes) + 1),
        "num-exits-edited": setter("num_exits", m["num_exits"] + 1),
        "graphs-a-number": setter("graphs", 3),
        "graphs-empty": setter("graphs", []),
        "graphs-strings": setter("graphs", ["x"] * len(m["graphs"])),
        "graph-file-renamed": setter("graphs.0.file", "elsewhere.onnx"),
        "layout-flipped": setter("layout", "separate" if m["layout"] == "fused" else "fused"),
        "backbone-missing": setter("backbone", _DELETE),
        "version-2": setter("version", 2),
        "format-other": setter("format", "bofexits-torchscript"),
        "policy-score-differs": setter("policy.score", "max_logit"),
        "manifest-missing": "delete manifest.json",
        "manifest-not-json": "manifest.json := {not json",
        "manifest-a-list": "manifest.json := []",
        "graph-file-missing": "delete the first graph",
        "graph-bytes-edited": "flip one byte of the first graph",
    }


# Field edits also written with the checksum left stale (the rest only resealed: the stale checksum is
# one code path), and the resealed edits that are a different valid export (nothing can tell).
STALE_KEPT = ("thresholds-edited", "classes-reversed", "quantiles-nan")
RESEALED_VALID = ("classes-reversed",)
CHECKSUM = "content_sha256"


def export_dirs(manifest: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Folder name -> (the edit, how the checksum is left: "stale", "resealed", "deleted" or "")."""
    out: dict[str, tuple[Any, str]] = {}
    for name, change in _export_variants(manifest).items():
        if not callable(change):
            out[name] = (change, "")
            continue
        if name in STALE_KEPT:
            out[name] = (change, "stale")
        out[f"{name}+resealed"] = (change, "resealed")
    out["classes-reversed+checksum-deleted"] = (_export_variants(manifest)["classes-reversed"], "deleted")
    return out


def _exports(fx: Fixtures) -> None:
    from bofexits.deploy.manifest import manifest_digest  # the library's own checksum, as an editor would

    manifest = json.loads((fx.export / "manifest.json").read_text())
    first_graph = manifest["graphs"][0]["file"]
    for name, (change, checksum) in export_dirs(manifest).items():
        d = fx.path("exports", name)
        shutil.copytree(fx.export, d)
        if callable(change):
            data = copy.deepcopy(manifest)
            change(data)
            if checksum == "resealed" and CHECKSUM in data:
                data[CHECKSUM] = manifest_digest(data)
            elif checksum == "deleted":
                data.pop(CHECKSUM, None)
            (d / "manifest.json").write_text(json.dumps(data))  # NaN written as NaN: json.loads reads it
        elif name == "manifest-missing":
            (d / "manifest.json").unlink()
        elif name == "manifest-not-json":
            (d / "manifest.json").write_text("{not json")
        elif name == "manifest-a-list":
            (d / "manifest.json").write_text("[]")
        elif name == "graph-file-missing":
            (d / first_graph).unlink()
        elif name == "graph-bytes-edited":
            raw = bytearray((d / first_graph).read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            (d / first_graph).write_bytes(bytes(raw))


def _data_dirs(fx: Fixtures) -> None:
    """Small Fashion-MNIST-format folders (300 train, 100 test images), one broken way each."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (300, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 300).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 100).astype(np.uint8),
    }

    def folder(name: str, **replace: np.ndarray) -> Path:
        d = fx.path("data", name)
        d.mkdir(parents=True)
        for stem, array in {**arrays, **replace}.items():
            write_idx(d / f"{stem}.gz", array)
        return d

    folder("valid")
    folder("labels-out-of-range", **{"t10k-labels-idx1-ubyte": np.full(100, 37, np.uint8)})
    folder("train-labels-out-of-range", **{"train-labels-idx1-ubyte": np.full(300, 37, np.uint8)})
    folder("labels-count-mismatch", **{"t10k-labels-idx1-ubyte": arrays["t10k-labels-idx1-ubyte"][:90]})
    folder("images-32x32", **{"t10k-images-idx3-ubyte": np.zeros((100, 32, 32), np.uint8)})
    folder("images-not-3d", **{"t10k-images-idx3-ubyte": np.zeros(100 * 784, np.uint8)})
    folder("images-float", **{"t10k-images-idx3-ubyte": np.zeros((100, 28, 28), np.float32)})
    folder(
        "zero-test-images",
        **{
            "t10k-images-idx3-ubyte": np.zeros((0, 28, 28), np.uint8),
            "t10k-labels-idx1-ubyte": np.zeros(0, np.uint8),
        },
    )
    d = folder("truncated-gz")
    raw = (d / "t10k-images-idx3-ubyte.gz").read_bytes()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    d = folder("garbage-gz")
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)
    d = folder("wrong-magic")
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(100)))
    d = folder("header-longer-than-data")
    body = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(body[: len(body) - 500]))
    d = folder("missing-file")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    fx.path("data", "empty-folder").mkdir()
    # CIFAR-10's batches are pickles: one whose every file would create the marker when unpickled.
    cifar = fx.path("data", "cifar-payload", "cifar-10-batches-py")
    cifar.mkdir(parents=True)
    for name in ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (cifar / name).write_bytes(pickle.dumps(_Payload(fx.marker), protocol=2))


def _misc_files(fx: Fixtures) -> None:
    d = fx.path("misc")
    d.mkdir()
    (d / "config-not-json.json").write_text("{epochs: 2")
    (d / "config-a-list.json").write_text("[1, 2]")
    (d / "config-epochs-str.json").write_text('{"epochs": "2"}')
    (d / "config-unknown-key.json").write_text('{"epochz": 2}')
    (d / "config-model-a-number.json").write_text('{"model": 3}')
    for name, text in {
        "results-not-json": "{",
        "results-a-list": "[]",
        "results-points-a-string": '{"points": "x", "variant": "quantile", "score": "max_prob"}',
        "results-empty-object": "{}",
    }.items():
        (d / name).mkdir()
        (d / name / "results.json").write_text(text)


# ---------------------------------------------------------------- the catalogue


def catalogue(fx: Fixtures) -> list[Case]:
    """Every case. The evaluation verbs read the small valid data folder (100 test images) unless
    the case gives its own --data-dir: on the 10,000 Fashion-MNIST test images a sweep takes a minute."""
    from tests.reliability import families

    cases: list[Case] = []
    cases += _checkpoint_cases(fx)
    cases += _data_cases(fx)
    cases += _image_cases(fx)
    cases += _export_cases(fx)
    cases += _option_cases(fx)
    cases += _api_cases(fx)
    cases += _config_and_report_cases(fx)
    cases += families.cases(fx)
    small = ["--data-dir", str(fx.path("data", "valid"))]
    for case in cases:
        argv = case.argv or []
        if argv[len(CLI) : len(CLI) + 1] in (["sweep"], ["compare"], ["tune"]) and "--data-dir" not in argv:
            argv += small
    return cases


def _cli(*args: str | Path) -> list[str]:
    return [*CLI, *map(str, args)]


def _checkpoint_cases(fx: Fixtures) -> list[Case]:
    d, img = fx.path("ckpt"), fx.path("img", "good.png")
    out: list[Case] = []
    for name in ("truncated", "garbage", "empty", "not-a-dict", "format-tag-wrong", "version-99"):
        out.append(Case(f"ckpt/{name}/predict", "checkpoint", _cli("predict", d / f"{name}.pt", img)))
    out.append(Case("ckpt/missing/predict", "checkpoint", _cli("predict", d / "nope.pt", img)))
    out.append(Case("ckpt/a-folder/sweep", "checkpoint", _cli("sweep", d, *EVAL)))
    for name in ("payload-object", "payload-in-config", "payload-raw-pickle"):
        p = d / f"{name}.pt"
        out += [
            Case(f"ckpt/{name}/predict", "checkpoint", _cli("predict", p, img)),
            Case(f"ckpt/{name}/sweep", "checkpoint", _cli("sweep", p, *EVAL)),
            Case(
                f"ckpt/{name}/export",
                "checkpoint",
                _cli("export", p, fx.path("out", name), "--onnx-exporter", "legacy"),
            ),
            Case(f"ckpt/{name}/tune", "checkpoint", _cli("tune", p, "--budget", "0.9")),
            Case(
                f"ckpt/{name}/api-load_model",
                "checkpoint",
                code=f"from bofexits.training.checkpoint import load_model\nresult = load_model({str(p)!r})",
            ),
        ]
    out.append(
        Case(
            "ckpt/payload-object/train-resume",
            "checkpoint",
            _cli(
                "train",
                "--out",
                fx.path("resume-payload"),
                "--resume",
                "--limit-train",
                "1000",
                "--epochs",
                "1",
                "--exit-epochs",
                "1",
                "--threads",
                "1",
                "--seed",
                "0",
                *fx.data_args(),
            ),
        )
    )
    out.append(
        Case(
            "ckpt/payload-object/train-frozen-backbone",
            "checkpoint",
            _cli(
                "train",
                "--mode",
                "frozen",
                "--backbone-checkpoint",
                d / "payload-object.pt",
                "--limit-train",
                "200",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--out",
                fx.path("out", "frozen"),
                *fx.data_args(),
            ),
        )
    )
    semantic = [
        "config-missing",
        "config-epochs-str",
        "config-codewords-str",
        "config-unknown-backbone",
        "config-none",
        "model-missing-tensor",
        "model-shape-mismatch",
        "model-not-a-dict",
        "weight-nan",
        "weight-inf",
        "bn-running-var-nan",
        "bn-running-var-inf",
        "bn-running-var-negative",
        "calibration-means-nan",
        "calibration-short-table",
        "calibration-score-unknown",
        "calibration-quantiles-reversed",
        "incomplete-no-calibration",
    ]
    for name in semantic:
        p = d / f"{name}.pt"
        out.append(Case(f"ckpt/{name}/predict", "checkpoint", _cli("predict", p, img)))
        out.append(
            Case(
                f"ckpt/{name}/export",
                "checkpoint",
                _cli("export", p, fx.path("out", f"x-{name}"), "--onnx-exporter", "legacy"),
            )
        )
    for name in ("weight-nan", "bn-running-var-inf", "calibration-quantiles-reversed"):
        out.append(
            Case(
                f"ckpt/{name}/sweep",
                "checkpoint",
                _cli("sweep", d / f"{name}.pt", *EVAL, "--out", fx.path("out", f"s-{name}")),
            )
        )
    out.append(Case("ckpt/valid/predict", "checkpoint", _cli("predict", fx.ckpt, img), expect="ok"))
    out.append(
        Case(
            "ckpt/valid/sweep",
            "checkpoint",
            _cli("sweep", fx.ckpt, *EVAL, "--out", fx.path("out", "s-valid")),
            expect="ok",
        )
    )
    return out


def _data_cases(fx: Fixtures) -> list[Case]:
    out: list[Case] = []
    train = ["train", "--mode", "joint", "--epochs", "1", "--limit-train", "200", "--batch-size", "64"]
    train += ["--threads", "1", "--widths", "4", "8", "8", "16", "--codewords", "8"]
    test_broken = [
        "labels-out-of-range",
        "labels-count-mismatch",
        "images-32x32",
        "images-not-3d",
        "images-float",
        "zero-test-images",
        "truncated-gz",
        "garbage-gz",
        "wrong-magic",
        "header-longer-than-data",
        "missing-file",
        "empty-folder",
    ]
    for name in test_broken:
        data = fx.path("data", name)
        out.append(
            Case(
                f"data/{name}/sweep",
                "data",
                _cli("sweep", fx.ckpt, "--data-dir", data, *EVAL, "--out", fx.path("out", f"d-{name}")),
            )
        )
        out.append(
            Case(
                f"data/{name}/train",
                "data",
                _cli(*train, "--data-dir", data, "--out", fx.path("out", f"t-{name}")),
            )
        )
    name = "train-labels-out-of-range"
    out.append(
        Case(
            f"data/{name}/train",
            "data",
            _cli(*train, "--data-dir", fx.path("data", name), "--out", fx.path("out", name)),
        )
    )
    out.append(
        Case(
            "data/cifar-payload/train",
            "data",
            _cli(
                *train,
                "--dataset",
                "cifar10",
                "--data-dir",
                fx.path("data", "cifar-payload"),
                "--out",
                fx.path("out", "t-cifar"),
            ),
        )
    )
    out.append(
        Case(
            "data/missing-folder/train",
            "data",
            _cli(*train, "--data-dir", fx.path("data", "nope"), "--out", fx.path("out", "t-nope")),
        )
    )
    out.append(
        Case(
            "data/valid/train",
            "data",
            _cli(*train, "--data-dir", fx.path("data", "valid"), "--out", fx.path("out", "t-valid")),
            expect="ok",
        )
    )
    return out


def _image_cases(fx: Fixtures) -> list[Case]:
    img = fx.path("img")
    valid = [
        "good.png",
        "good.jpg",
        "rgb.png",
        "rgba.png",
        "cmyk.jpg",
        "palette.png",
        "other-size.png",
    ]
    broken = [
        "not-an-image.png",
        "empty.png",
        "truncated.png",
        "a-folder.png",
        "bomb.png",
        "nope.png",
        "one-pixel.png",
    ]
    out: list[Case] = []
    for name in valid:
        out.append(Case(f"image/{name}/ckpt", "image", _cli("predict", fx.ckpt, img / name), expect="ok"))
    for name in broken:
        out.append(Case(f"image/{name}/ckpt", "image", _cli("predict", fx.ckpt, img / name)))
        out.append(Case(f"image/{name}/export", "image", _cli("predict", fx.export, img / name)))
    out.append(
        Case(
            "image/sixteen-bit.png/ckpt",
            "image",
            _cli("predict", fx.ckpt, img / "sixteen-bit.png", "--json"),
            expect="ok",
            note="a 16-bit PNG of the good image: must give the good image's class (checked below)",
        )
    )
    out.append(
        Case("image/good.png/export", "image", _cli("predict", fx.export, img / "good.png"), expect="ok")
    )
    return out


def _export_cases(fx: Fixtures) -> list[Case]:
    img = fx.path("img", "good.png")
    out = []
    manifest = json.loads((fx.export / "manifest.json").read_text())
    for n in export_dirs(manifest):
        valid = n.split("+")[0] in RESEALED_VALID and n.endswith("+resealed")
        note = "a consistent edit with a recomputed checksum is a different, valid export" if valid else ""
        variant = manifest["policy"]["variant"]
        if n == "conditional-reversed+resealed" and variant != "conditional":
            valid = True  # predict's output must then equal the untampered export's (`_silent_note`)
            note = f"the conditional table is unused by the export's {variant} rule: answers cannot change"
        argv = _cli("predict", fx.path("exports", n), img, "--json")
        case = Case(f"export/{n}/predict", "export", argv, expect="ok" if valid else "error", note=note)
        if n == "conditional-reversed+resealed":
            case.check = _same_answers_as_baseline
        out.append(case)
    runner = (
        "import numpy as np\nfrom bofexits.deploy.runner import OnnxAdaptiveRunner\n"
        "r = OnnxAdaptiveRunner({d!r})\nx = np.zeros((1, *r.input_shape), np.float32)\n"
        "result = r(x).exit_index.tolist()"
    )
    standalone = (
        "import sys, numpy as np\nsys.path.insert(0, {d!r})\nfrom bofexits_deploy import OnnxAdaptiveRunner\n"
        "r = OnnxAdaptiveRunner({d!r})\nx = np.zeros((1, *r.input_shape), np.float32)\n"
        "result = r(x).exit_index.tolist()"
    )
    for n in (
        "quantiles-nan+resealed",
        "quantiles-reversed+resealed",
        "std-negative+resealed",
        "classes-short+resealed",
        "graphs-strings+resealed",
        "graph-bytes-edited",
    ):
        d = str(fx.path("exports", n))
        out.append(Case(f"export/{n}/api-runner", "export", code=runner.format(d=d)))
        out.append(Case(f"export/{n}/standalone-runner", "export", code=standalone.format(d=d)))
    out.append(Case("export/valid/predict", "export", _cli("predict", fx.export, img, "--json"), expect="ok"))
    out.append(
        Case(
            "export/valid/standalone-runner", "export", code=standalone.format(d=str(fx.export)), expect="ok"
        )
    )
    out.append(
        Case(
            "export/out-dir-exists",
            "export",
            _cli("export", fx.ckpt, fx.export, "--onnx-exporter", "legacy"),
            note="the existing export must be kept (no --force)",
        )
    )
    out.append(
        Case(
            "export/out-dir-a-file",
            "export",
            _cli("export", fx.ckpt, fx.path("img", "good.png"), "--onnx-exporter", "legacy"),
        )
    )
    return out


def _option_cases(fx: Fixtures) -> list[Case]:
    """Bad option values on a valid checkpoint and data: nothing else stops the command."""
    ck, img, o = fx.ckpt, fx.path("img", "good.png"), fx.path("out")
    rows: list[tuple[str, list[Any]]] = [
        (
            "sweep --timing-samples -1",
            ["sweep", ck, "--betas", "0.5", "--timing-samples", "-1", "--out", o / "o1"],
        ),
        (
            "sweep --timing-rounds 0",
            [
                "sweep",
                ck,
                "--betas",
                "0.5",
                "--timing-samples",
                "5",
                "--timing-rounds",
                "0",
                "--out",
                o / "o2",
            ],
        ),
        ("sweep --threads -1", ["sweep", ck, *EVAL, "--threads", "-1", "--out", o / "o3"]),
        ("sweep --threads 0", ["sweep", ck, *EVAL, "--threads", "0", "--out", o / "o4"]),
        ("sweep --betas nan", ["sweep", ck, "--betas", "nan", "--timing-samples", "0", "--out", o / "o5"]),
        ("sweep --betas -1", ["sweep", ck, "--betas=-1", "--timing-samples", "0", "--out", o / "o6"]),
        (
            "sweep --betas 5 (quantile-type variant)",
            ["sweep", ck, "--betas", "5", "--timing-samples", "0", "--out", o / "o7"],
        ),
        ("sweep --out a file", ["sweep", ck, *EVAL, "--out", img]),
        ("compare --points 0", ["compare", ck, "--points", "0", "--timing-samples", "0", "--out", o / "c1"]),
        ("compare --points -1", ["compare", ck, "--points=-1", "--timing-samples", "0", "--out", o / "c2"]),
        (
            "compare --timed-points -1",
            ["compare", ck, "--timed-points=-1", "--timing-samples", "0", "--out", o / "c3"],
        ),
        ("tune --budget nan", ["tune", ck, "--budget", "nan"]),
        ("tune --budget 0", ["tune", ck, "--budget", "0"]),
        ("tune --max-drop nan", ["tune", ck, "--max-drop", "nan"]),
        ("tune --max-drop inf", ["tune", ck, "--max-drop", "inf"]),
        ("tune --latency-ms -1", ["tune", ck, "--latency-ms=-1"]),
        ("export --beta nan", ["export", ck, o / "e1", "--beta", "nan", "--onnx-exporter", "legacy"]),
        ("export --beta -1", ["export", ck, o / "e2", "--beta=-1", "--onnx-exporter", "legacy"]),
        ("export --beta 5", ["export", ck, o / "e3", "--beta", "5", "--onnx-exporter", "legacy"]),
        ("predict --beta nan", ["predict", ck, img, "--beta", "nan"]),
        ("predict --beta -1 (export)", ["predict", fx.export, img, "--beta=-1"]),
        ("predict --threads -1", ["predict", ck, img, "--threads=-1"]),
        ("predict --threads 0", ["predict", ck, img, "--threads", "0"]),
        ("train --epochs abc", ["train", "--epochs", "abc"]),
    ]
    train = [
        "train",
        "--data-dir",
        fx.path("data", "valid"),
        "--limit-train",
        "200",
        "--threads",
        "1",
        "--mode",
        "joint",
    ]
    train += ["--widths", "4", "8", "8", "16", "--codewords", "8"]
    for i, extra in enumerate(
        (
            ["--epochs=-1"],
            ["--batch-size", "0"],
            ["--lr", "nan"],
            ["--lr", "0"],
            ["--weight-decay", "nan"],
            ["--val-fraction", "1.5"],
            ["--val-fraction=-0.1"],
            ["--limit-train", "0"],
            ["--limit-train=-5"],
            ["--codewords", "1"],
            ["--spatial-level", "2"],
            ["--crop-padding=-1"],
            ["--exit-weights", "1", "1", "1", "nan"],
            ["--exit-weights", "-1", "1", "1", "1"],
            ["--threads", "0"],
            ["--device", "tpu"],
            ["--widths", "0", "8", "8", "16"],
            ["--exit-pools", "0", "1", "1"],
            ["--out", img],
        )
    ):
        extra_out = [] if "--out" in extra else ["--out", str(o / f"tr{i}")]
        rows.append(
            (f"train {' '.join(map(str, extra)).replace(str(img), 'FILE')}", [*train, *extra_out, *extra])
        )
    cases = []
    for i, (label, args) in enumerate(rows):
        copy_to = None
        if args[0] == "tune":  # tune writes into the checkpoint: give it its own copy
            copy_to = (ck, o / f"tune-{i}.pt")
            args = [copy_to[1] if a == ck else a for a in args]
        cases.append(Case(f"option/{label}", "cli-option", _cli(*args), copy=copy_to))
    return cases


def _api_cases(fx: Fixtures) -> list[Case]:
    setup = (
        "import torch\nfrom bofexits.training.checkpoint import load_model\n"
        "from bofexits.inference.runtime import AdaptiveRuntime\nfrom bofexits.policies import CalibratedThreshold\n"
        f"model, cals, cfg = load_model({str(fx.ckpt)!r})\n"
        "rt = AdaptiveRuntime(model, CalibratedThreshold(cals['max_prob'], 0.5, 'quantile'))\n"
    )
    tensors = {
        "nan-input": "x = torch.zeros(2, 1, 28, 28); x[0, 0, 0, 0] = float('nan')",
        "inf-input": "x = torch.full((2, 1, 28, 28), float('inf'))",
        "float64-input": "x = torch.zeros(2, 1, 28, 28, dtype=torch.float64)",
        "uint8-input": "x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)",
        "wrong-size": "x = torch.zeros(2, 1, 32, 32)",
        "no-batch-axis": "x = torch.zeros(1, 28, 28)",
        "rgb-input": "x = torch.zeros(2, 3, 28, 28)",
        "a-list": "x = [[0.0] * 28] * 28",
        "numpy-array": "import numpy as np; x = np.zeros((2, 1, 28, 28), np.float32)",
        "huge-finite-input": "x = torch.full((2, 1, 28, 28), 1e30)",
    }
    out = [
        Case(f"api/runtime/{k}", "python-api", code=f"{setup}{v}\nresult = rt(x)") for k, v in tensors.items()
    ]
    out.append(
        Case(
            "api/runtime/valid",
            "python-api",
            code=f"{setup}x = torch.zeros(2, 1, 28, 28)\nresult = rt(x)",
            expect="ok",
        )
    )
    out.append(
        Case(
            "api/runtime/empty-batch",
            "python-api",
            code=f"{setup}x = torch.zeros(0, 1, 28, 28)\nresult = rt(x)",
            expect="ok",
            note="an empty batch is valid and returns an empty result",
        )
    )
    out.append(
        Case(
            "api/forward/nan-input",
            "python-api",
            code=f"{setup}x = torch.full((2, 1, 28, 28), float('nan'))\nresult = model(x)",
        )
    )
    runner = (
        "import numpy as np\nfrom bofexits.deploy.runner import OnnxAdaptiveRunner\n"
        f"r = OnnxAdaptiveRunner({str(fx.export)!r})\n"
    )
    arrays = {
        "nan": "x = np.full((1, *r.input_shape), np.nan, np.float32)",
        "float64": "x = np.zeros((1, *r.input_shape))",
        "wrong-shape": "x = np.zeros((1, 1, 32, 32), np.float32)",
        "a-list": "x = [[0.0]]",
        "empty-batch": "x = np.zeros((0, *r.input_shape), np.float32)",
    }
    out += [
        Case(f"api/onnx-runner/{k}", "python-api", code=f"{runner}{v}\nresult = r(x)")
        for k, v in arrays.items()
    ]
    out.append(
        Case(
            "api/onnx-runner/preprocess-wrong-size",
            "python-api",
            code=f"{runner}x = np.zeros((1, 32, 32), np.uint8)\nresult = r.preprocess(x)",
        )
    )
    out.append(
        Case("api/onnx-runner/beta-nan", "python-api", code=f"{runner}result = r.with_beta(float('nan'))")
    )
    out.append(
        Case(
            "api/onnx-runner/threads-negative",
            "python-api",
            code="from bofexits.deploy.runner import OnnxAdaptiveRunner\n"
            f"result = OnnxAdaptiveRunner({str(fx.export)!r}, threads=-1)",
        )
    )
    return out


def _config_and_report_cases(fx: Fixtures) -> list[Case]:
    m = fx.path("misc")
    out: list[Case] = []
    for name in (
        "config-not-json",
        "config-a-list",
        "config-epochs-str",
        "config-unknown-key",
        "config-model-a-number",
    ):
        out.append(
            Case(
                f"config/{name}",
                "config-report",
                _cli(
                    "train",
                    "--config",
                    m / f"{name}.json",
                    "--data-dir",
                    fx.path("data", "valid"),
                    "--limit-train",
                    "200",
                    "--out",
                    fx.path("out", name),
                ),
            )
        )
    out.append(
        Case(
            "config/a-folder",
            "config-report",
            _cli("train", "--config", m, "--out", fx.path("out", "cfgdir")),
        )
    )
    for name in ("results-not-json", "results-a-list", "results-points-a-string", "results-empty-object"):
        out.append(Case(f"report/{name}", "config-report", _cli("report", m / name)))
    out.append(Case("report/a-file", "config-report", _cli("report", fx.path("img", "good.png"))))
    return out


# ---------------------------------------------------------------- running and classifying

PY_WRAPPER = r"""
import json, sys
try:
    scope = {}
    exec(compile(sys.argv[1], "<case>", "exec"), scope)
    out = {"raised": None, "value": repr(scope.get("result"))[:300]}
except BaseException as exc:
    names = [c.__name__ for c in type(exc).__mro__]
    out = {"raised": type(exc).__name__, "clear": "BofexitsError" in names or "DeployError" in names,
           "value": str(exc).splitlines()[0][:300] if str(exc) else ""}
print("@@RESULT " + json.dumps(out))
"""


def run_case(case: Case, fx: Fixtures, timeout: float) -> Result:
    if case.argv is not None:
        cmd = case.argv
        shown = _scrub(" ".join(["bofexits", *case.argv[len(CLI) - 1 :]]), fx)
    else:
        assert case.code is not None
        cmd = [sys.executable, "-c", PY_WRAPPER, case.code]
        body = [ln for ln in case.code.strip().splitlines() if not ln.startswith(("import ", "from "))]
        shown = "python: " + _scrub("; ".join(body), fx)
    if case.copy is not None:
        shutil.copy(*case.copy)
    if case.setup is not None:
        case.setup()
    start = time.monotonic()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=fx.path("cwd"), env=env()
        )
    except subprocess.TimeoutExpired:
        return Result(case.id, case.category, shown, case.expect, HANG, "timeout", timeout, "", case.note)
    seconds = round(time.monotonic() - start, 1)
    if case.code is not None:
        verdict, exit_code, first = _classify_python(case, done)
    else:
        verdict, exit_code, first = _classify_cli(case, done, fx)
    if case.check is not None and verdict in (CLEAR, OK, SILENT):
        found = case.check(done)  # a lost file outranks any verdict; a mixed folder, clear and ok
        if found is not None and (found[0] == LOST or verdict != SILENT):
            verdict, first = found
    if fx.marker.exists():
        verdict = EXECUTED
        fx.marker.unlink()
    return Result(
        case.id, case.category, shown, case.expect, verdict, exit_code, seconds, _scrub(first, fx), case.note
    )


def _scrub(text: str, fx: Fixtures) -> str:
    """The temporary root as $TMP, and any other absolute path (a dependency's file in a warning) as
    its file name: the report names no file outside the repository."""
    text = text.replace(str(fx.root), "$TMP")
    return re.sub(r"(?<![\w$])/(?:[\w.+-]+/)+([\w.+-]+)", r"\1", text)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("bofexits: warning:")]


def _classify_cli(case: Case, done: subprocess.CompletedProcess[str], fx: Fixtures) -> tuple[str, int, str]:
    err, out = _lines(done.stderr), _lines(done.stdout)
    first = (err or out or [""])[0][:300]
    if "Traceback (most recent call last)" in done.stderr:
        last = err[-1] if err else ""
        return TRACEBACK, done.returncode, last[:300]
    if case.expect == "ok":
        if done.returncode == 0 and "sixteen-bit" in case.id:
            return _same_class_as_good(done.stdout, fx), 0, first
        return (OK if done.returncode == 0 else REFUSED), done.returncode, first
    if case.expect == "interrupt":
        ok = done.returncode in (130, 143) and len(err) == 1
        return (CLEAR if ok else UNCLEAR), done.returncode, first
    if done.returncode == 0:
        return SILENT, 0, _silent_note(case, done.stdout, fx) or first
    if done.returncode == 2 and len(err) == 1:
        return CLEAR, 2, first
    per_file = [ln for ln in out if ": error: " in ln]
    if done.returncode == 1 and case.argv and "predict" in case.argv and len(per_file) == 1 and len(err) <= 1:
        return CLEAR, 1, per_file[0][:300]
    return UNCLEAR, done.returncode, f"{len(err)} stderr lines; " + first


def _classify_python(case: Case, done: subprocess.CompletedProcess[str]) -> tuple[str, int | str, str]:
    tag = [ln for ln in done.stdout.splitlines() if ln.startswith("@@RESULT ")]
    if not tag:  # the interpreter died (segfault, abort) without reporting
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        return TRACEBACK, done.returncode, f"died: {tail[:300]}"
    res = json.loads(tag[-1][len("@@RESULT ") :])
    if res["raised"] is None:
        verdict = OK if case.expect == "ok" else SILENT
        return verdict, 0, f"returned {res['value']}"
    line = f"{res['raised']}: {res['value']}"
    if case.expect == "ok":
        return REFUSED, 1, line
    return (CLEAR if res["clear"] else TRACEBACK), 1, line


_BASELINE: dict[str, str] = {}


def _predict_json(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


def _silent_note(case: Case, stdout: str, fx: Fixtures) -> str:
    """For a tampered export that ran: whether its output equals the untampered export's."""
    if case.category != "export" or "baseline" not in _BASELINE:
        return ""
    same = _strip_source(_predict_json(stdout)) == _strip_source(_predict_json(_BASELINE["baseline"]))
    return "exit 0, " + (
        "output identical to the untampered export's"
        if same
        else "output differs from the untampered export's"
    )


def _strip_source(data: Any) -> Any:
    """Predictions without paths and timings, for comparing two runs."""
    if not isinstance(data, dict):
        return data
    preds = data.get("predictions", [])
    return [{k: v for k, v in p.items() if k not in ("file", "ms")} for p in preds if isinstance(p, dict)]


def _same_answers_as_baseline(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
    same = _strip_source(_predict_json(done.stdout)) == _strip_source(_predict_json(_BASELINE["baseline"]))
    return None if same else (SILENT, "exit 0, output differs from the untampered export's")


def _same_class_as_good(stdout: str, fx: Fixtures) -> str:
    if "good" not in _BASELINE:
        return OK
    same = _strip_source(_predict_json(stdout)) == _strip_source(_predict_json(_BASELINE["good"]))
    return OK if same else SILENT


def baselines(fx: Fixtures) -> None:
    """The untampered export's and the good image's `predict --json` output, for the comparisons."""
    img = fx.path("img", "good.png")
    _BASELINE["baseline"] = subprocess.run(
        _cli("predict", fx.export, img, "--json"), capture_output=True, text=True, env=env()
    ).stdout
    _BASELINE["good"] = subprocess.run(
        _cli("predict", fx.ckpt, img, "--json"), capture_output=True, text=True, env=env()
    ).stdout


# ---------------------------------------------------------------- reporting


def summary(results: list[Result]) -> dict[str, Any]:
    per_category: dict[str, Counter[str]] = {}
    for r in results:
        per_category.setdefault(r.category, Counter())[r.verdict] += 1
    return {
        "cases": len(results),
        "counts": dict(Counter(r.verdict for r in results)),
        "per_category": {c: dict(v) for c, v in per_category.items()},
    }


def markdown(results: list[Result], info: dict[str, Any]) -> str:
    s = summary(results)
    lines = [
        "# Reliability catalogue",
        "",
        f"Generated by `make reliability` ({info['date']}, {info['seconds']:.0f} s, "
        f"{s['cases']} cases). Each case runs in its own subprocess with a {info['timeout']:.0f} s timeout "
        "against one tiny trained checkpoint and its ONNX export (made by the script), or broken copies of them.",
        "",
        "Classes: **clear** (exit 2 and one stderr line; `predict`'s per-file error, exit 1 and one "
        "`FILE: error:` line; or a `BofexitsError`), **traceback** (another exception or a traceback), "
        "**unclear** (an error exit that is not one line), **silent-wrong** (success where an error was due), "
        "**hang** (timeout), **ok** / **wrongly-refused** (valid input that succeeded / failed), "
        "**code-executed** (a pickle payload ran), **lost** (a file the command did not own was deleted "
        "or changed).",
        "",
        *([f"Full-disk family: {info['disk-full']}.", ""] if "disk-full" in info else []),
        "## Counts",
        "",
    ]
    cats = sorted(s["per_category"])
    shown = [c for c in CLASSES if any(c in s["per_category"][k] for k in cats)]
    lines.append("| category | " + " | ".join(shown) + " | total |")
    lines.append("|---|" + "---:|" * (len(shown) + 1))
    for cat in cats:
        row = s["per_category"][cat]
        lines.append(
            f"| {cat} | " + " | ".join(str(row.get(c, 0)) for c in shown) + f" | {sum(row.values())} |"
        )
    lines.append(
        "| **all** | " + " | ".join(str(s["counts"].get(c, 0)) for c in shown) + f" | {s['cases']} |"
    )
    lines += ["", "## Cases that are not clear", ""]
    bad = [r for r in results if r.verdict not in (CLEAR, OK)]
    if not bad:
        lines.append("None.")
    else:
        lines.append("| case | class | exit | command | first line of output |")
        lines.append("|---|---|---|---|---|")
        for r in sorted(bad, key=lambda r: (CLASSES.index(r.verdict), r.id)):
            lines.append(
                f"| {r.id} | {r.verdict} | {r.exit} | `{_cell(r.command)}` | {_cell(r.first_line)} |"
            )
    lines += ["", "## Every case", "", "| case | expect | class | exit | s |", "|---|---|---|---|---:|"]
    for r in results:
        lines.append(f"| {r.id} | {r.expect} | {r.verdict} | {r.exit} | {r.seconds} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")[:240]


def run_catalogue(
    root: Path | None = None,
    *,
    data_dir: str | None = None,
    jobs: int = 2,
    timeout: float = 90.0,
    only: str | None = None,
) -> tuple[list[Result], dict[str, Any]]:
    """Build the fixtures (in `root`, kept and reused when given; else a temporary folder, removed),
    run every case (or those whose id contains `only`), and return the results and run facts."""
    from tests.reliability import families

    started = time.monotonic()
    keep = root is not None
    root = root.resolve() if root is not None else Path(tempfile.mkdtemp(prefix="reliability_"))
    fx = Fixtures(root, data_dir)
    try:
        if not (root / "ready").exists():
            for sub in ("cwd", "out"):
                shutil.rmtree(root / sub, ignore_errors=True)
                fx.path(sub).mkdir(parents=True)
            build_fixtures(fx)
            (root / "ready").touch()
        families.build(fx)  # every run afresh: earlier runs, mounts and symlinks the cases change
        baselines(fx)
        cases = [c for c in catalogue(fx) if not only or only in c.id]
        print(f"{len(cases)} cases, fixtures ready after {time.monotonic() - started:.0f} s", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, fx, timeout), cases))
    finally:
        families.teardown(fx)
        if keep:
            for sub in ("cwd", "out"):  # what the cases wrote; the fixtures stay
                shutil.rmtree(root / sub, ignore_errors=True)
                fx.path(sub).mkdir()
        else:
            shutil.rmtree(root, ignore_errors=True)
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.monotonic() - started, 1),
        "timeout": timeout,
        "torch": torch.__version__,
    }
    return results, info


def write_reports(out: Path, results: list[Result], info: dict[str, Any]) -> None:
    """docs/reliability.md and its JSON twin."""
    data = {**info, "summary": summary(results), "results": [asdict(r) for r in results]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, info))
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/reliability.md"), help="the Markdown report")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time")
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds per case before it counts as a hang"
    )
    parser.add_argument("--data-dir", help="Fashion-MNIST folder for the tiny run (default: generated data)")
    parser.add_argument("--only", help="run only the cases whose id contains this text (nothing written)")
    parser.add_argument(
        "--fixtures",
        type=Path,
        help="keep the checkpoint, export and broken copies here, reused when present",
    )
    args = parser.parse_args()
    results, info = run_catalogue(
        args.fixtures, data_dir=args.data_dir, jobs=args.jobs, timeout=args.timeout, only=args.only
    )
    if not args.only:
        write_reports(args.out, results, info)
    for r in results:
        if r.verdict not in (CLEAR, OK):
            print(f"{r.verdict:<15} {r.id:<55} {r.first_line[:150]}")
    print(json.dumps(summary(results)["counts"]))
    if not args.only:
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
