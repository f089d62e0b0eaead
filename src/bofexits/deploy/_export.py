"""What the ONNX and the TorchScript exporter share: the exported forms, the example chain, the
check against PyTorch, the atomic output folder and the manifest's common fields.

Both export the same pieces: the runtime's float32 forms (BatchNorm folded, BoF exits frozen)
cut into stage+exit blocks (`ExitBlock`), traced on inputs that `chain_inputs` gets by running
the chain on random data, and checked on a second batch of another size (`check_outputs`),
since a trace bakes in whatever depends on the data or the batch size.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import nn

from bofexits import __version__
from bofexits._io import disk_full_as_error, jsonable, real_path, write_json
from bofexits._outputs import signals_deferred
from bofexits.deploy import manifest as schema
from bofexits.deploy.info import DeployInfo
from bofexits.errors import BofexitsError, ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.exits import ExitHeads
from bofexits.models.folded import FrozenBoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.scores import confidence

__all__ = [
    "TOLERANCE",
    "ExitBlock",
    "ExportError",
    "ManifestFields",
    "chain_inputs",
    "check_outputs",
    "export_runtime",
    "manifest_fields",
    "quiet",
    "root_cause",
    "staging_dir",
    "write_manifest",
]

TOLERANCE = 1e-4  # exported vs PyTorch outputs, relative to the output's scale (float32)


class ExportError(BofexitsError):
    """A part of the network cannot be exported, or the export does not reproduce it."""


# ---------------------------------------------------------------- what gets exported


def export_runtime(model: MultiExitNetwork, info: DeployInfo) -> AdaptiveRuntime:
    """The PyTorch runtime in float32: the forms (BN folded, BoF exits frozen) that get exported."""
    model = copy.deepcopy(model).float().eval()
    rt = AdaptiveRuntime(model, info.policy, check_inputs=False)
    if isinstance(rt.exits, FrozenBoFExits):  # 1x1 convolutions: the form graph runtimes run fastest
        rt.exits = rt.exits.graph_form()
    return rt


class ExitBlock(nn.Module):
    """Stage `index` (optional) then exit `index`, as one traceable module.

    With a stage: ``(x[, state]) -> (features, logits[, next_state])``; without one:
    ``(features[, state]) -> (logits[, next_state])``. With `score`, the exit's confidence
    (`bofexits.policies.confidence`, traced) is appended and the state is always a tensor
    (empty when the heads carry none), as the TorchScript loop needs fixed types.
    """

    def __init__(
        self,
        stage: nn.Module | None,
        exits: ExitHeads,
        index: int,
        *,
        takes_state: bool,
        score: str | None = None,
    ) -> None:
        super().__init__()
        self.stage, self.exits, self.index = stage, exits, index
        self.takes_state, self.score = takes_state, score

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        f = self.stage(x) if self.stage is not None else x
        logits, nxt = self.exits.step(self.index, f, state if self.takes_state else None)
        out = (f, logits) if self.stage is not None else (logits,)
        if self.score is not None:
            return (*out, nxt if nxt is not None else f.new_zeros(0), confidence(logits, self.score))
        return (*out, nxt) if nxt is not None else out


@torch.no_grad()
def chain_inputs(
    rt: AdaptiveRuntime, batch: int, seed: int
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Example inputs of every piece, from running the chain on random data.

    Returns:
        The input of each stage (S tensors, the first (batch, C, H, W) random), and the state
        entering each early exit (S-1 entries; None where there is none yet, or the heads
        carry none).
    """
    x = torch.randn(batch, *rt.model.input_shape, generator=torch.Generator().manual_seed(seed))
    xs, states = [x], []
    state: torch.Tensor | None = None
    for i, stage in enumerate(rt.stages[:-1]):
        states.append(state)
        xs.append(stage(xs[-1]))
        _, state = rt.exits.step(i, xs[-1], state)
    return xs, states


def check_outputs(
    label: str, engine: str, names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray]
) -> None:
    """Raise `ExportError` unless each exported output equals PyTorch's within `TOLERANCE`.

    Args:
        label: what was exported, for the message ("graph block_1 (stage 2 of 4)").
        engine: what ran the export ("onnxruntime", "TorchScript").
        names: the outputs' names; got, want: the outputs, exported and PyTorch.
    """
    for name, g, w in zip(names, got, want, strict=True):
        same_shape = g.shape == w.shape
        err = float(np.abs(g - w).max()) if same_shape and w.size else 0.0
        if not same_shape or err > TOLERANCE * max(1.0, float(np.abs(w).max()) if w.size else 1.0):
            raise ExportError(
                f"{label} computes {name} differently in {engine} than in PyTorch (shape {g.shape} vs "
                f"{w.shape}, max difference {err:.3g}); the stage likely has behaviour that depends on the "
                "data or the batch size, which a traced graph cannot capture"
            )


# ---------------------------------------------------------------- exporting quietly


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' warnings and progress logs (deprecations, tracer notes, torchvision)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def root_cause(exc: BaseException) -> str:
    """The innermost cause's type and first line: what the exporter's long trace boils down to."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


# ---------------------------------------------------------------- the export directory


#: Names an export writes besides the files its manifest lists: `--force` replaces these and
#: nothing else (the runner package, and the one-file runner of older exports).
_EXPORT_NAMES = frozenset({schema.MANIFEST, schema.RUNNER_FILE, f"{schema.RUNNER_FILE}.py"})


def _foreign_files(out: Path) -> list[str]:
    """What `out` holds that no export wrote: its manifest's files, the runner and the manifest aside."""
    ours = set(_EXPORT_NAMES)
    try:
        manifest = schema.read_manifest(out, verify_files=False)
        ours |= {entry.file.split("/")[0] for entry in manifest.file_entries()}
    except BofexitsError:  # an unreadable manifest: only the names exports use count as ours
        ours |= {
            p.name for p in out.iterdir() if p.suffix == ".onnx" or p.name in ("adaptive.pt", "backbone.pt")
        }
    return sorted(p.name for p in out.iterdir() if p.name not in ours)


@contextmanager
def staging_dir(out: Path, overwrite: bool, source: str | Path | None = None) -> Iterator[Path]:
    """Yield an empty folder beside `out`; it becomes `out` only if the block succeeds.

    `out` is replaced as a unit, and only when it holds an export and nothing else: `--force`
    never deletes the checkpoint being exported (`source`) or any file the export did not
    write; it refuses and names them. A symlinked `out` is followed (the folder it points to
    is replaced; the link stays). A full disk raises `DiskFullError`, the partial folder removed.
    """
    out = real_path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another output folder")
    if source is not None and isinstance(source, (str, Path)):
        src = real_path(source)
        if out == src or out in src.parents:
            raise ConfigError(
                f"the checkpoint {source} is inside the output folder {out}, which the export replaces as a "
                "whole; export into another folder"
            )
    if out.is_dir() and any(out.iterdir()):
        if not (out / schema.MANIFEST).is_file():
            raise ConfigError(f"{out} is not empty and not a bofexits export; choose another output folder")
        if not overwrite:
            raise ConfigError(f"{out} already holds an export; pass overwrite=True (--force) to replace it")
        foreign = _foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(
                f"{out} holds files the export did not write ({shown}); --force replaces the whole folder and "
                "would delete them: move them out or choose another output folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with disk_full_as_error(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder a plain mkdir's mode
    try:
        with disk_full_as_error(out):
            yield tmp
        with signals_deferred():  # the swap is two renames: a signal waits for both
            if out.exists():
                old = tmp.with_suffix(".old")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class ManifestFields(TypedDict):
    """The arguments every `bofexits.deploy.manifest.Manifest` takes, whatever the format."""

    producer: schema.ProducerEntry
    num_exits: int
    num_classes: int
    policy: schema.PolicyEntry
    calibration: schema.CalibrationEntry
    classes: tuple[str, ...]
    preprocessing: schema.PreprocessingEntry


def _rows(table: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(row) for row in table.tolist())


def manifest_fields(
    model: MultiExitNetwork, info: DeployInfo, *, exporter: str | None = None, opset: int | None = None
) -> ManifestFields:
    """The manifest's producer, network size, rule, calibration, class names and preprocessing."""
    cal = info.calibration
    return {
        "producer": schema.ProducerEntry(__version__, torch.__version__, exporter, opset),
        "num_exits": model.num_exits,
        "num_classes": model.num_classes,
        "policy": schema.PolicyEntry(
            name="calibrated",
            score=cal.score,
            variant=info.variant,
            beta=info.beta,
            beta_source=info.beta_source,
            thresholds=tuple(info.policy.thresholds),
        ),
        "calibration": schema.CalibrationEntry(
            score=cal.score,
            means=tuple(cal.means.tolist()),
            quantiles=_rows(cal.quantiles),
            num_samples=cal.num_samples,
            conditional=None if cal.conditional is None else _rows(cal.conditional),
            accuracy=None if cal.accuracy is None else _rows(cal.accuracy),
        ),
        "classes": tuple(info.classes),
        "preprocessing": schema.PreprocessingEntry(
            input_shape=(model.input_shape[0], model.input_shape[1], model.input_shape[2]),
            color_mode=info.color_mode,
            mean=tuple(info.mean),
            std=tuple(info.std),
        ),
    }


def write_manifest(folder: Path, manifest: schema.Manifest) -> None:
    """Write `manifest.json`, after checking that the runner will read it back (strict JSON: infinities
    become "inf" / "-inf")."""
    data = jsonable(manifest.to_dict())
    type(manifest).from_dict(data, source=f"the {manifest.format} manifest being written")
    data[schema.CONTENT_SHA256] = schema.manifest_digest(data)
    write_json(folder / schema.MANIFEST, data)
