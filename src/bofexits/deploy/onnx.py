"""Deployment export: the runtime's inference forms as staged ONNX graphs plus a manifest (TorchScript: `torchscript`).

`export_onnx` writes, into one directory created atomically (a failed export leaves nothing):

* ``block_i.onnx`` for i < S-1: stage i and exit i fused, ``(x[, state]) -> (features, logits,
  next_state)``; the first exit has no state input (nothing to carry yet, so no zero tensor to
  build and add). The state is what `FrozenBoFExits` carries: the running classifier sum.
* ``final.onnx``: the last stage with the backbone's head, ``x -> logits``.
* ``backbone.onnx``: all stages in one graph, the plain network (full-network path and the
  fair speed baseline).
* ``adaptive.onnx`` and ``adaptive_batched.onnx``: the whole rule in one graph each, composed
  from the graphs above (`bofexits.deploy._compose`), ``(x, thresholds) -> (logits,
  exit_index)``. For batch 1 (``x`` is (1, C, H, W)), nested ``If`` nodes: block i, exit i's
  score against ``thresholds[i]``, then either exit i's logits or the rest of the network, so
  one ``session.run`` and no later stage runs; for batches, the samples that go on are
  gathered between blocks and the results scattered back. The thresholds are an input
  (float32, (S-1,)): the knob changes without re-export.
* ``manifest.json`` (`bofexits.deploy.manifest.OnnxManifest`): graph order, files, names, shapes
  (batch dynamic), SHA-256 of each graph, the policy (score, variant, beta, thresholds) with its
  calibration statistics, class names and preprocessing; and ``bofexits_deploy/``, a copy of
  `bofexits.deploy.runner` (as its ``__init__.py``) and of the modules it imports, so the
  directory runs with numpy and onnxruntime alone (``from bofexits_deploy import OnnxAdaptiveRunner``).

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
* The whole rule in one graph over the staged graphs driven from Python
  (benchmarks/adaptive_graphs.py, demo-like vgg28, random weights): batch 1, 1 thread, mean
  per image 1.04-1.15x faster across runs (e.g. 148 vs 170 us, backbone.onnx 144 us; ~122 vs
  ~127 us leaving at exit 1, ~238 vs ~277 us through all four stages); batches: see
  `bofexits.deploy.runner.BATCHED_GRAPH_FROM`. Built by composing the exported graphs
  (`bofexits.deploy._compose`), so it computes whatever they compute.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bofexits._io import disk_full
from bofexits.deploy import manifest as schema
from bofexits.deploy import runner
from bofexits.deploy._compose import adaptive_graph, batched_graph, load_graph
from bofexits.deploy._export import (
    ExitBlock,
    ExportError,
    chain_inputs,
    check_outputs,
    export_runtime,
    manifest_fields,
    quiet,
    root_cause,
    staging_dir,
    write_manifest,
)
from bofexits.deploy.info import deploy_info
from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["ExportError", "export_onnx"]

log = logging.getLogger(__name__)

_OPSET = {"dynamo": 18, "legacy": 17}


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


@torch.no_grad()
def _specs(rt: AdaptiveRuntime, layout: str, batch: int, seed: int) -> list[_Spec]:
    """Graphs in execution order, then the plain backbone, with example inputs of `batch` samples."""
    xs, states = chain_inputs(rt, batch, seed)
    s = len(rt.stages)
    specs: list[_Spec] = []
    for i, state in enumerate(states):
        st, st_name = ((state,), ["state"]) if state is not None else ((), [])
        what = f"stage {i + 1} of {s}"
        if layout == "fused":
            block = ExitBlock(rt.stages[i], rt.exits, i, takes_state=state is not None).eval()
            names = ["features", "logits", "next_state"][: len(block(xs[i], *st))]
            specs.append(_Spec(f"block_{i}", "block", i, block, (xs[i], *st), ["x", *st_name], names, what))
        else:
            specs.append(_Spec(f"stage_{i}", "stage", i, rt.stages[i], (xs[i],), ["x"], ["features"], what))
            head = ExitBlock(None, rt.exits, i, takes_state=state is not None).eval()
            args = (xs[i + 1], *st)
            names = ["logits", "next_state"][: len(head(*args))]
            specs.append(
                _Spec(f"exit_{i}", "exit", i, head, args, ["features", *st_name], names, f"exit {i + 1}")
            )
    specs.append(
        _Spec("final", "final", s - 1, rt.stages[-1], (xs[-1],), ["x"], ["logits"], f"stage {s} of {s}")
    )
    backbone = rt.plain_backbone()
    specs.append(
        _Spec("backbone", "backbone", -1, backbone, (xs[0],), ["x"], ["logits"], "the plain backbone")
    )
    return specs


# ---------------------------------------------------------------- one graph


def _register_legacy_symbolics(opset: int) -> None:
    """`linalg_vecdot` (||x||^2 in the frozen BoF exits) for the legacy exporter: ReduceSum(x * y)."""
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "v", "i")
    def vecdot(g: Any, x: Any, y: Any, dim: int) -> Any:
        axes = g.op("Constant", value_t=torch.tensor([dim], dtype=torch.long))
        return g.op("ReduceSum", g.op("Mul", x, y), axes, keepdims_i=0)

    torch.onnx.register_custom_op_symbolic("aten::linalg_vecdot", vecdot, opset)


def _onnx_export(spec: _Spec, target: str | None, exporter: str) -> None:
    """Export one graph to `target` (None: only check that it exports)."""
    opset = _OPSET[exporter]
    with quiet():
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


def _export_one(spec: _Spec, path: Path, exporter: str, stages: Sequence[nn.Module]) -> None:
    """Export `spec` to `path`; on failure, name the stage or exit that fails."""
    try:
        _onnx_export(spec, str(path), exporter)
    except Exception as exc:
        if disk_full(exc):  # not the layer's fault: `staging_dir` names the disk
            raise
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
            f"{what} cannot be exported to ONNX with the {exporter} exporter ({root_cause(exc)}); replace the "
            f"unsupported layer with standard torch operations, or try exporter={other!r} (--onnx-exporter {other})"
        ) from exc


def _describe(
    names: Sequence[str], graph: Any, examples: Sequence[torch.Tensor], what: str
) -> tuple[schema.TensorEntry, ...]:
    """Names and shapes (batch dynamic, the rest from the PyTorch tensors) of the graph's inputs or outputs."""
    import onnx

    shapes: dict[str, tuple[int | str, ...]] = {
        n: ("batch", *(int(d) for d in t.shape[1:])) for n, t in zip(names, examples, strict=True)
    }
    for v in graph:
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"{what}: {v.name} is not float32; export a float32 model")
    return tuple(schema.TensorEntry(v.name, shapes[v.name]) for v in graph)


def _check_graph(spec: _Spec, path: Path, verify: tuple[torch.Tensor, ...]) -> schema.GraphEntry:
    """onnx.checker, then the graph in onnxruntime against PyTorch on another batch size."""
    import onnx

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"graph {spec.name} ({spec.what}) is not valid ONNX ({root_cause(exc)})") from exc
    with torch.no_grad():
        want = spec.module(*verify)
    want = (want,) if isinstance(want, torch.Tensor) else want
    label = f"graph {spec.name}"
    inputs = _describe(spec.inputs, proto.graph.input, verify, label)  # unused inputs may be gone
    outputs = _describe(spec.outputs, proto.graph.output, want, label)
    ort = runner._onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kept = {t.name for t in inputs}
    got = session.run(None, {n: a.numpy() for n, a in zip(spec.inputs, verify, strict=True) if n in kept})
    check_outputs(f"{label} ({spec.what})", "onnxruntime", spec.outputs, got, [w.numpy() for w in want])
    return schema.GraphEntry(
        file=path.name,
        sha256=schema.sha256_file(path),
        name=spec.name,
        role=spec.role,
        index=spec.index,
        inputs=inputs,
        outputs=outputs,
    )


def _check_exporter(exporter: str, layout: str) -> None:
    if exporter not in _OPSET:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(_OPSET)}")
    if layout not in schema.LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(schema.LAYOUTS)}")
    needs = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {', '.join(missing)}: `pip install {' '.join(missing)}` (or `pip install "
            "bofexits[deploy]`)" + ("; or use exporter='legacy'" if missing == ["onnxscript"] else "")
        )


# ---------------------------------------------------------------- the whole rule in one graph


@torch.no_grad()
def _exit_logits(rt: AdaptiveRuntime, batch: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random inputs and what each exit (S-1 early ones, then the final classifier) gives them in PyTorch."""
    xs, states = chain_inputs(rt, batch, seed)
    logits = [rt.exits.step(i, xs[i + 1], state)[0] for i, state in enumerate(states)]
    return xs[0].numpy(), [t.numpy() for t in [*logits, rt.stages[-1](xs[-1])]]


def _forced(exit_index: int, early: int) -> np.ndarray:
    """Thresholds under which every sample leaves at `exit_index`: never stop before, always there."""
    return np.array([np.inf] * exit_index + [-np.inf] * (early - exit_index), dtype=np.float32)


def _check_whole(name: str, path: Path, x: np.ndarray, want: Sequence[np.ndarray]) -> None:
    """onnx.checker (full), then, with thresholds forcing each exit in turn, that the graph returns
    that exit's PyTorch logits and index (score ties cannot make this check flaky)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"graph {name} (the rule in one graph) is not valid ONNX ({root_cause(exc)})"
        ) from exc
    ort = runner._onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rows = [x[i : i + 1] for i in range(len(x))] if name == "adaptive" else [x]
    for k, logits in enumerate(want):
        thresholds = _forced(k, len(want) - 1)
        got = [session.run(None, {"x": r, "thresholds": thresholds}) for r in rows]
        index = np.concatenate([g[1] for g in got])
        if not bool((index == k).all()):
            raise ExportError(
                f"graph {name} left at exits {index.tolist()} where every sample must leave at {k}"
            )
        check_outputs(
            f"graph {name} (exit {k + 1})",
            "onnxruntime",
            ["logits"],
            [np.concatenate([g[0] for g in got])],
            [logits],
        )


def _whole_rule(
    folder: Path, rt: AdaptiveRuntime, score: str, graphs: Sequence[schema.GraphEntry]
) -> tuple[schema.GraphEntry, schema.GraphEntry]:
    """Write ``adaptive.onnx`` and ``adaptive_batched.onnx``, composed from the staged graphs, and check them."""
    levels: dict[int, list[Any]] = {}
    for g in graphs:  # in execution order: a level is [block_i], [stage_i, exit_i] or [final]
        levels.setdefault(g.index, []).append(load_graph(str(g.path(folder, schema.MANIFEST))))
    chain = [levels[i] for i in sorted(levels)]
    x, want = _exit_logits(rt, batch=3, seed=5)
    shape, classes, early = tuple(x.shape[1:]), want[0].shape[1], len(want) - 1
    entries = []
    for name, build, batch in (("adaptive", adaptive_graph, 1), ("adaptive_batched", batched_graph, "batch")):
        path = folder / f"{name}.onnx"
        path.write_bytes(build(chain, score).SerializeToString())
        _check_whole(name, path, x, want)
        entries.append(
            schema.GraphEntry(
                file=path.name,
                sha256=schema.sha256_file(path),
                name=name,
                role=name,
                index=-1,
                inputs=(schema.TensorEntry("x", (batch, *shape)), schema.TensorEntry("thresholds", (early,))),
                outputs=(
                    schema.TensorEntry("logits", (batch, classes)),
                    schema.TensorEntry("exit_index", (batch,), "int64"),
                ),
            )
        )
        log.info("composed %s", path.name)
    return entries[0], entries[1]


# ---------------------------------------------------------------- the export


def _ship_runner(folder: Path) -> Path:
    """Copy the torch-free runner into `folder` as the package ``bofexits_deploy/``.

    `bofexits.deploy.runner` becomes its ``__init__.py`` and the modules it imports
    (`runner.RUNNER_MODULES`) sit beside it unchanged: their imports are relative, so the same
    bytes run inside `bofexits.deploy` and as ``bofexits_deploy``.
    """
    source = Path(runner.__file__).parent
    package = folder / schema.RUNNER_FILE
    package.mkdir()
    shutil.copyfile(runner.__file__, package / "__init__.py")
    for name in runner.RUNNER_MODULES:
        shutil.copyfile(source / name, package / name)
    return package


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
        **info_kwargs: passed to `bofexits.deploy.info.deploy_info` (calibration, beta, score,
            variant, classes, mean, std, data_dir).

    Returns:
        The export directory.

    Raises:
        ExportError: a stage or exit cannot be exported (the message names it) or the exported
            graph does not reproduce PyTorch's outputs.
    """
    _check_exporter(exporter, layout)
    model, info = deploy_info(source, **info_kwargs)
    rt = export_runtime(model, info)
    specs = _specs(rt, layout, batch=2, seed=1)
    verify = {s.name: s.args for s in _specs(rt, layout, batch=3, seed=2)}  # another batch size
    with staging_dir(Path(out_dir), overwrite, source if isinstance(source, (str, Path)) else None) as tmp:
        entries = []
        for spec in specs:
            path = tmp / f"{spec.name}.onnx"
            _export_one(spec, path, exporter, rt.stages)
            entries.append(_check_graph(spec, path, verify[spec.name]))
            log.info("exported %s (%s)", path.name, spec.what)
        adaptive, adaptive_batched = _whole_rule(tmp, rt, info.calibration.score, entries[:-1])
        _ship_runner(tmp)
        manifest = schema.OnnxManifest(
            layout=layout,
            graphs=tuple(entries[:-1]),
            backbone=entries[-1],
            adaptive=adaptive,
            adaptive_batched=adaptive_batched,
            **manifest_fields(model, info, exporter=exporter, opset=_OPSET[exporter]),
        )
        write_manifest(tmp, manifest)
    return Path(out_dir)
