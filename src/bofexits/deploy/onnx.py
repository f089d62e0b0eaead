"""Deployment export: the runtime's inference forms as staged ONNX graphs plus a manifest (TorchScript: `torchscript`).

`export_onnx` writes, into one directory created atomically (a failed export leaves nothing):

* ``block_i.onnx`` for i < S-1: stage i and exit i fused, ``(x[, state]) -> (features, logits,
  next_state)``; the first exit has no state input (nothing to carry yet, so no zero tensor to
  build and add). The state is what `FrozenBoFExits` carries: the running classifier sum.
* ``final.onnx``: the last stage with the backbone's head, ``x -> logits``.
* ``backbone.onnx``: all stages in one graph, the plain network (full-network path and the
  fair speed baseline).
* ``manifest.json``: graph order, files, names, shapes (batch dynamic), SHA-256 of each graph,
  the policy (score, variant, beta, thresholds) with its calibration statistics, class names
  and preprocessing; and ``bofexits_deploy.py``, a copy of `bofexits.deploy.runner`, so the directory
  runs with numpy and onnxruntime alone.

Choices, measured roughly (single thread, vgg28 at 28x28, loaded 2-core machine, so +-10%):

* Fused stage+exit graphs, not one graph per stage and per exit: at batch 1 a pair costs one
  onnxruntime call instead of two, ~10-15 us less per exit (all 3 exits: ~430 vs ~460 us per
  sample, leaving at exit 1: ~132 vs ~148 us); no difference at batch 256 (~260 us per sample
  either way). ``layout="separate"`` still writes per-stage and per-exit graphs, which show
  where the time goes (`benchmarks/deploy.py`).
* The dynamo exporter (default) over the legacy TorchScript-based one: its graphs are leaner
  (20 vs 29 nodes for block 0: no Where/Equal/ConstantOfShape around the batch dimension) and
  ran 7-10% faster at batch 1 (3 blocks: ~400 vs ~430 us). It takes ~1-2 s per graph against
  ~10 ms; ``exporter="legacy"`` (deprecated in torch, used by the tests for speed) needs one
  extra symbolic, for ``linalg_vecdot``, registered here.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bofexits import __version__
from bofexits._io import write_json
from bofexits.config import TrainConfig
from bofexits.deploy import runner as deploy
from bofexits.errors import BofexitsError, CheckpointError, ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.exits import ExitHeads
from bofexits.models.folded import FrozenBoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration, calibrated_thresholds
from bofexits.policies.scores import confidence
from bofexits.training.checkpoint import load_checkpoint, load_model

__all__ = ["DEFAULT_BETA", "DeployInfo", "ExportError", "deploy_info", "export_onnx"]

log = logging.getLogger(__name__)

#: Knob used when neither the caller nor `bofexits tune` chose one: the demo's knee for the
#: quantile rule (cheapest beta within 0.5 pp of the full network, README results); "more
#: confident than this exit usually is" for the mean rule; for the conditional rule (each exit
#: passes on a share beta of what reaches it) half, not yet measured: prefer `bofexits tune`.
DEFAULT_BETA: dict[str, float] = {"quantile": 0.4, "mean": 1.0, "conditional": 0.5}
_OPSET = {"dynamo": 18, "legacy": 17}
_TOL = 1e-4  # ONNX vs PyTorch, relative to the output's scale (float32)


class ExportError(BofexitsError):
    """A part of the network cannot be exported, or the export does not reproduce it."""


@dataclass
class DeployInfo:
    """Everything besides the weights that deployment needs: the rule and the preprocessing.

    Attributes:
        calibration: per-exit statistics of the policy's score.
        variant: "mean", "quantile" or "conditional".
        beta: the knob.
        beta_source: "argument", "tuned" (stored by `bofexits tune`) or "default" (`DEFAULT_BETA`).
        classes: class names, index i names class i.
        mean, std: per-channel normalisation of ``images / 255``.
        color_mode: "L" (1 channel) or "RGB" (3), or None for other channel counts.
    """

    calibration: ExitCalibration
    variant: str
    beta: float
    beta_source: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    color_mode: str | None

    @property
    def policy(self) -> CalibratedThreshold:
        """The calibrated rule this describes."""
        return CalibratedThreshold(self.calibration, self.beta, self.variant)

    def manifest_fields(self, input_shape: Sequence[int]) -> dict[str, Any]:
        """The manifest's policy, calibration, classes and preprocessing entries."""
        return {
            "policy": {
                "name": "calibrated",
                "score": self.calibration.score,
                "variant": self.variant,
                "beta": self.beta,
                "beta_source": self.beta_source,
                "thresholds": self.policy.thresholds,
            },
            "calibration": self.calibration.to_dict(),
            "classes": list(self.classes),
            "preprocessing": {
                "input_shape": list(input_shape),
                "color_mode": self.color_mode,
                "scale": 255.0,
                "mean": list(self.mean),
                "std": list(self.std),
                "steps": "convert to color_mode; resize to exactly (H, W), bilinear; x = (pixels / 255 - mean) / std "
                "per channel; float32 NCHW",
            },
        }


def deploy_info(
    source: str | Path | MultiExitNetwork,
    *,
    calibration: ExitCalibration | None = None,
    beta: float | None = None,
    score: str | None = None,
    variant: str | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data_dir: str | None = None,
) -> tuple[MultiExitNetwork, DeployInfo]:
    """The network and its deployment facts, from a checkpoint or from a model plus arguments.

    For a checkpoint, score and variant default to the tuned ones (`bofexits tune`), else the
    training config's; beta to the tuned one when it was tuned for that score and variant, else
    `DEFAULT_BETA`. Class names and normalisation come from the checkpoint (training records
    them), else from the training dataset's files (read from `data_dir` or the config's). For a model, pass
    `calibration`; the variant defaults to the training default, normalisation to none (mean 0,
    std 1), class names to "0".."C-1".
    """
    if isinstance(source, MultiExitNetwork):
        model = source
        if calibration is None:
            raise ConfigError(
                "exporting a model needs its calibration (ExitCalibration.fit on training logits)"
            )
        if score is not None and score != calibration.score:
            raise ConfigError(f"the calibration is for score {calibration.score!r}, not {score!r}")
        variant = variant or TrainConfig().variant
        channels = model.input_shape[0]
        names = list(classes) if classes is not None else [str(i) for i in range(model.num_classes)]
        m = list(mean) if mean is not None else [0.0] * channels
        s = list(std) if std is not None else [1.0] * channels
        source_beta = ("argument", beta) if beta is not None else ("default", DEFAULT_BETA.get(variant, 1.0))
    else:
        model, calibrations, cfg = load_model(source)
        raw = load_checkpoint(source)
        tuned = raw.get("tuned") or {}
        score = score or tuned.get("score") or cfg.score
        variant = variant or tuned.get("variant") or cfg.variant
        if score not in calibrations:
            raise CheckpointError(
                f"{source} has no calibration for score {score!r} (training did not finish); resume training first"
            )
        calibration = calibrations[score]
        if beta is not None:
            source_beta = ("argument", beta)
        elif tuned and tuned.get("score") == score and tuned.get("variant") == variant:
            source_beta = ("tuned", float(tuned["beta"]))
        else:
            source_beta = ("default", DEFAULT_BETA.get(variant, 1.0))
        stored = raw.get("data")
        if stored and data_dir is None:  # recorded by training since this version
            names, m, s = list(stored["classes"]), list(stored["mean"]), list(stored["std"])
        else:
            names, m, s = _dataset_facts(cfg.dataset, data_dir or cfg.data_dir)
        if classes is not None:
            names = list(classes)
        m, s = list(mean) if mean is not None else m, list(std) if std is not None else s
    if len(names) != model.num_classes:
        raise ConfigError(f"{len(names)} class names for a network with {model.num_classes} classes")
    if len(m) != model.input_shape[0] or len(s) != model.input_shape[0] or any(v <= 0 for v in s):
        raise ConfigError(
            f"normalisation needs one mean and one positive std per input channel ({model.input_shape[0]}), "
            f"got mean {m} and std {s}"
        )
    info = DeployInfo(
        calibration,
        variant,
        float(source_beta[1]),
        source_beta[0],
        names,
        [float(v) for v in m],
        [float(v) for v in s],
        {1: "L", 3: "RGB"}.get(model.input_shape[0]),
    )
    calibrated_thresholds(calibration, info.beta, variant)  # refuses a beta outside the variant's range
    return model, info


def _dataset_facts(name: str, data_dir: str | None) -> tuple[list[str], list[float], list[float]]:
    from bofexits.data.registry import load_dataset

    try:
        train, _ = load_dataset(name, data_dir, download=False)
    except BofexitsError as exc:
        raise ConfigError(
            f"the class names and normalisation of dataset {name!r} are read from its files, which are not "
            f"available ({exc}); pass --data-dir with the training data"
        ) from exc
    return list(train.classes), list(train.mean), list(train.std)


# ---------------------------------------------------------------- graph wrappers


class _Block(nn.Module):
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


@dataclass
class _Spec:
    """One graph to export: its module, example inputs and names, and where it sits."""

    name: str
    role: str
    index: int
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    what: str  # for error messages: "stage 2 of 4", "exit 1", ...


def _runtime(model: MultiExitNetwork, info: DeployInfo) -> AdaptiveRuntime:
    """The PyTorch runtime in float32: the forms (BN folded, BoF exits frozen) that get exported."""
    model = copy.deepcopy(model).float().eval()
    rt = AdaptiveRuntime(model, info.policy, check_inputs=False)
    if isinstance(rt.exits, FrozenBoFExits):  # 1x1 convolutions: the form graph runtimes run fastest
        rt.exits = rt.exits.graph_form()
    return rt


@torch.no_grad()
def _specs(rt: AdaptiveRuntime, layout: str, batch: int, seed: int) -> list[_Spec]:
    """Graphs in execution order with example inputs from running the chain on random data."""
    stages, exits, s = rt.stages, rt.exits, len(rt.stages)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *rt.model.input_shape, generator=gen)
    specs: list[_Spec] = []
    state: torch.Tensor | None = None
    for i in range(s - 1):
        takes = state is not None
        st = (state,) if state is not None else ()
        st_name = ["state"] if takes else []
        if layout == "fused":
            block = _Block(stages[i], exits, i, takes_state=takes).eval()
            out = block(x, *st)
            names = ["features", "logits", "next_state"][: len(out)]
            specs.append(
                _Spec(
                    f"block_{i}", "block", i, block, (x, *st), ["x", *st_name], names, f"stage {i + 1} of {s}"
                )
            )
            f = out[0]
        else:
            f = stages[i](x)
            specs.append(
                _Spec(f"stage_{i}", "stage", i, stages[i], (x,), ["x"], ["features"], f"stage {i + 1} of {s}")
            )
            head = _Block(None, exits, i, takes_state=takes).eval()
            out = (f, *head(f, *st))
            names = ["logits", "next_state"][: len(out) - 1]
            specs.append(
                _Spec(f"exit_{i}", "exit", i, head, (f, *st), ["features", *st_name], names, f"exit {i + 1}")
            )
        state = out[2] if len(out) > 2 else None
        x = f
    specs.append(_Spec("final", "final", s - 1, stages[-1], (x,), ["x"], ["logits"], f"stage {s} of {s}"))
    return specs


# ---------------------------------------------------------------- ONNX


def _register_legacy_symbolics(opset: int) -> None:
    """`linalg_vecdot` (||x||^2 in the frozen BoF exits) for the legacy exporter: ReduceSum(x * y)."""
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "v", "i")
    def vecdot(g: Any, x: Any, y: Any, dim: int) -> Any:
        axes = g.op("Constant", value_t=torch.tensor([dim], dtype=torch.long))
        return g.op("ReduceSum", g.op("Mul", x, y), axes, keepdims_i=0)

    torch.onnx.register_custom_op_symbolic("aten::linalg_vecdot", vecdot, opset)


@contextmanager
def _quiet() -> Iterator[None]:
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


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def _onnx_export(spec: _Spec, target: str | None, exporter: str) -> None:
    """Export one graph to `target` (None: only check that it exports)."""
    opset = _OPSET[exporter]
    with _quiet():
        if exporter == "legacy":
            _register_legacy_symbolics(opset)
            torch.onnx.export(
                spec.module,
                spec.args,
                target if target is not None else io.BytesIO(),  # type: ignore[arg-type]
                input_names=spec.inputs,
                output_names=spec.outputs,
                opset_version=opset,
                dynamic_axes={n: {0: "batch"} for n in spec.inputs + spec.outputs},
                dynamo=False,
            )
        else:
            batch = torch.export.Dim("batch")
            prog = torch.onnx.export(
                spec.module,
                spec.args,
                input_names=spec.inputs,
                output_names=spec.outputs,
                opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in spec.args),
                dynamo=True,
                verbose=False,
            )
            if target is not None and prog is not None:
                prog.save(target, external_data=False)


def _export_one(spec: _Spec, path: Path, exporter: str, stages: list[nn.Module]) -> None:
    try:
        _onnx_export(spec, str(path), exporter)
    except Exception as exc:
        what = spec.what
        if spec.role == "block":  # which half failed: try the stage alone
            try:
                probe = _Spec(
                    "probe", "stage", spec.index, stages[spec.index], spec.args[:1], ["x"], ["f"], ""
                )
                _onnx_export(probe, None, exporter)
                what = f"exit {spec.index + 1} (after {spec.what})"
            except Exception:
                pass
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise ExportError(
            f"{what} cannot be exported to ONNX with the {exporter} exporter ({_root_cause(exc)}); replace the "
            f"unsupported layer with standard torch operations, or try exporter={other!r} (--onnx-exporter {other})"
        ) from exc


def _describe(
    names: Sequence[str], graph: Any, examples: Sequence[torch.Tensor], what: str
) -> list[dict[str, Any]]:
    """Names and shapes (batch dynamic, the rest from the PyTorch tensors) of the graph's inputs or outputs."""
    import onnx

    shapes = {n: ["batch", *t.shape[1:]] for n, t in zip(names, examples, strict=True)}
    out = []
    for v in graph:
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"{what}: {v.name} is not float32; export a float32 model")
        out.append(
            {
                "name": v.name,
                "shape": [d if isinstance(d, str) else int(d) for d in shapes[v.name]],
                "dtype": "float32",
            }
        )
    return out


def _check_graph(spec: _Spec, path: Path, verify: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """onnx.checker, then the graph in onnxruntime against PyTorch on another batch size."""
    import onnx

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"graph {spec.name} ({spec.what}) is not valid ONNX ({_root_cause(exc)})") from exc
    with torch.no_grad():
        want = spec.module(*verify)
    want = (want,) if isinstance(want, torch.Tensor) else want
    inputs = _describe(
        spec.inputs, proto.graph.input, verify, f"graph {spec.name}"
    )  # unused inputs may be gone
    outputs = _describe(spec.outputs, proto.graph.output, want, f"graph {spec.name}")
    ort = deploy._onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i["name"] for i in inputs}
    got = session.run(None, {n: a.numpy() for n, a in zip(spec.inputs, verify, strict=True) if n in names})
    for name, g, w in zip(spec.outputs, got, want, strict=True):
        w = w.numpy()
        err = float(np.abs(g - w).max()) if w.size else 0.0
        if g.shape != w.shape or err > _TOL * max(1.0, float(np.abs(w).max()) if w.size else 1.0):
            raise ExportError(
                f"graph {spec.name} ({spec.what}) computes {name} differently in onnxruntime than in PyTorch "
                f"(shape {g.shape} vs {w.shape}, max difference {err:.3g}); the stage likely has behaviour that "
                "depends on the data or the batch size, which a traced graph cannot capture"
            )
    return {"inputs": inputs, "outputs": outputs}


def _check_exporter(exporter: str) -> None:
    if exporter not in _OPSET:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(_OPSET)}")
    needs = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {', '.join(missing)}: `pip install {' '.join(missing)}` (or `pip install "
            "bofexits[deploy]`)" + ("; or use exporter='legacy'" if missing == ["onnxscript"] else "")
        )


def export_onnx(
    source: str | Path | MultiExitNetwork,
    out_dir: str | Path,
    *,
    exporter: str = "dynamo",
    layout: str = "fused",
    overwrite: bool = False,
    **info_kwargs: Any,
) -> Path:
    """Write the staged ONNX export of a checkpoint or model (see the module docstring).

    Args:
        source: a checkpoint path or a `MultiExitNetwork` (converted to float32).
        out_dir: the export directory; created atomically.
        exporter: "dynamo" (default, leaner graphs) or "legacy" (TorchScript-based, ~100x faster export).
        layout: "fused" (one graph per stage+exit pair) or "separate" (one per stage and per exit).
        overwrite: replace an existing export directory.
        **info_kwargs: passed to `deploy_info` (calibration, beta, score, variant, classes, mean,
            std, data_dir).

    Returns:
        The export directory.

    Raises:
        ExportError: a stage or exit cannot be exported (the message names it) or the exported
            graph does not reproduce PyTorch's outputs.
    """
    _check_exporter(exporter)
    if layout not in ("fused", "separate"):
        raise ConfigError(f"unknown layout {layout!r}; choose fused or separate")
    model, info = deploy_info(source, **info_kwargs)
    rt = _runtime(model, info)
    specs = _specs(rt, layout, batch=2, seed=1)
    verify = {s.name: s.args for s in _specs(rt, layout, batch=3, seed=2)}
    backbone = rt.plain_backbone()
    x2 = specs[0].args[0]
    specs.append(_Spec("backbone", "backbone", -1, backbone, (x2,), ["x"], ["logits"], "the plain backbone"))
    verify["backbone"] = verify[specs[0].name][:1]
    entries = []
    with _staging_dir(Path(out_dir), overwrite) as tmp:
        for spec in specs:
            path = tmp / f"{spec.name}.onnx"
            _export_one(spec, path, exporter, rt.stages)
            entry = {"name": spec.name, "role": spec.role, "index": spec.index, "file": path.name}
            entry.update(_check_graph(spec, path, verify[spec.name]))
            entry["sha256"] = deploy.sha256_file(path)
            entries.append(entry)
            log.info("exported %s (%s)", path.name, spec.what)
        shutil.copyfile(deploy.__file__, tmp / deploy.RUNNER_FILE)
        manifest = {
            "format": deploy.FORMAT,
            "version": deploy.VERSION,
            "producer": {
                "bofexits": __version__,
                "torch": torch.__version__,
                "exporter": exporter,
                "opset": _OPSET[exporter],
            },
            "layout": layout,
            "num_exits": model.num_exits,
            "num_classes": model.num_classes,
            "graphs": entries[:-1],
            "backbone": entries[-1],
            **info.manifest_fields(model.input_shape),
            "runner": deploy.RUNNER_FILE,
        }
        write_json(tmp / deploy.MANIFEST, manifest)
    return Path(out_dir)


# ---------------------------------------------------------------- the directory


@contextmanager
def _staging_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty folder beside `out`; it becomes `out` only if the block succeeds."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / deploy.MANIFEST).is_file():
            raise ConfigError(f"{out} is not empty and not a bofexits export; choose another output folder")
        if not overwrite:
            raise ConfigError(f"{out} already holds an export; pass overwrite=True (--force) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder a plain mkdir's mode
    try:
        yield tmp
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
