"""Adaptive inference as one ONNX graph each for batch 1 and for batches, composed from the staged graphs.

Both take the graphs `bofexits.deploy.onnx` has already written and checked (``block_i.onnx``,
or ``stage_i`` + ``exit_i`` in the separate layout, then ``final.onnx``) and wire them together
with the rule in ONNX operators (`bofexits.deploy._onnx_rule`); ``thresholds`` (S-1,) is a
graph input, so the knob changes without re-export:

* `adaptive_graph` (batch 1): level i runs block i and decides; an ``If`` node's then
  branch returns exit i's logits and index, its else branch holds level i+1 (and so on,
  nested). onnxruntime runs one branch of an ``If``, so later stages never run for a sample
  that stopped, and the whole chain is one ``session.run``. It is for batch 1 only
  (``x`` is declared (1, C, H, W)): an ``If`` takes one boolean.
* `batched_graph` (any batch): level i runs on the samples still in, writes their logits and
  exit index into the full-batch outputs (ScatterND), keeps those that go on (NonZero,
  Gather) and, in an ``If`` on whether any does, runs level i+1 on them. The ``If`` is needed
  because the exported graphs cannot run on an empty batch (their Reshape(-1) fails).

Composing the exported graphs, instead of tracing PyTorch once more, makes both independent
of how the exits compute inside: whatever the block graphs do, these do. Every name of a
placed graph is prefixed (``b1/``, ``b1/0/``, ``final/``) since ONNX names must be unique
across a graph and its branches, and each level keeps only the nodes its logits and the
next level's inputs need.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import onnx
import onnx.inliner
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto, helper

from bofexits.deploy._export import ExportError
from bofexits.deploy._onnx_rule import const, goes_on_nodes, score_nodes

__all__ = ["adaptive_graph", "batched_graph", "load_graph"]

Level = Sequence[GraphProto]
"""The graphs of one level in execution order: [block_i], [stage_i, exit_i] or [final]."""


def load_graph(path: str) -> ModelProto:
    """An exported graph with its local functions inlined (the dynamo exporter may write some)."""
    model = onnx.load(path)
    return onnx.inliner.inline_local_functions(model) if model.functions else model


# ---------------------------------------------------------------- placing exported graphs


@dataclass
class _Placed:
    """Graphs renamed into one scope: their nodes, constants, and named results.

    The exported graphs' shape hints (value_info) are left out: they call the batch axis
    "batch", which in a shrinking chain would claim that sizes that differ are equal;
    onnxruntime infers the shapes again.
    """

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # role name ("x", "features", ...) -> name here


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    return [g for a in node.attribute for g in ([a.g] if a.HasField("g") else list(a.graphs))]


def _rename_graph(graph: GraphProto, rename: dict[str, str], prefix: str) -> None:
    """Rename in place every value of `graph` and of its subgraphs: as `rename` says, else prefixed."""

    def new(name: str) -> str:
        return name if not name else rename.get(name, prefix + name)

    for node in graph.node:
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
        node.name = prefix + (node.name or node.output[0])
        for sub in _subgraphs(node):
            _rename_graph(sub, rename, prefix)
    for values in (graph.input, graph.output):
        for v in values:
            v.name = new(v.name)
    for t in graph.initializer:
        t.name = new(t.name)
    del graph.value_info[:]


def _reads(nodes: Sequence[NodeProto]) -> Iterator[str]:
    """Every value the nodes read, including what their subgraphs read from outside."""
    for node in nodes:
        yield from node.input
        for sub in _subgraphs(node):
            yield from _reads(sub.node)


def _rewire(nodes: Sequence[NodeProto], alias: dict[str, str]) -> None:
    for node in nodes:
        node.input[:] = [alias.get(n, n) for n in node.input]
        for sub in _subgraphs(node):
            _rewire(sub.node, alias)


def _without_identities(placed: _Placed) -> _Placed:
    """Identity nodes dropped, their readers reading the source: a block returns its logits
    twice (as logits and as the shared classifier's state), and onnxruntime warns when it
    cannot remove such a copy across an ``If`` itself."""
    alias: dict[str, str] = {}
    for node in placed.nodes:
        if node.op_type == "Identity":
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    nodes = [n for n in placed.nodes if n.op_type != "Identity"]
    _rewire(nodes, alias)
    return _Placed(nodes, placed.initializers, {k: alias.get(v, v) for k, v in placed.env.items()})


def _pruned(placed: _Placed, keep: set[str]) -> _Placed:
    """Only the nodes (and constants) that the values in `keep` depend on."""
    need, nodes = set(keep), []
    for node in reversed(placed.nodes):
        if need.intersection(node.output):
            nodes.append(node)
            need.update(_reads([node]))
    nodes.reverse()
    return _Placed(nodes, [t for t in placed.initializers if t.name in need], placed.env)


def _place(level: Level, prefix: str, env: dict[str, str]) -> _Placed:
    """The level's graphs renamed under `prefix`, their inputs wired to `env` by role name.

    `env` maps the role names of the inputs ("x", "state", "features") to the values that feed
    them; each graph's outputs join it ("features", "logits", "next_state").
    """
    out = _Placed(env=dict(env))
    for j, source in enumerate(level):
        g = GraphProto()
        g.CopyFrom(source)
        missing = [v.name for v in g.input if v.name not in out.env]
        if missing:
            raise ExportError(
                f"graph {source.name!r} reads {missing}, which no earlier graph of the chain writes"
            )
        _rename_graph(
            g, {v.name: out.env[v.name] for v in g.input}, prefix if len(level) == 1 else f"{prefix}{j}/"
        )
        out.nodes += g.node
        out.initializers += g.initializer
        out.env.update({o.name: g.output[k].name for k, o in enumerate(source.output)})
    return _without_identities(out)


def _run_level(
    chain: Sequence[Level], i: int, prefix: str, env: dict[str, str]
) -> tuple[_Placed, dict[str, str]]:
    """Level i placed and pruned, and what the next level reads from it ({} after the last)."""
    placed = _place(chain[i], prefix, env)
    onward: dict[str, str] = {}
    if i < len(chain) - 1:
        onward["x"] = placed.env["features"]
        if any(v.name == "state" for g in chain[i + 1] for v in g.input):
            onward["state"] = placed.env["next_state"]
    return _pruned(placed, {placed.env["logits"], *onward.values()}), onward


def _results(logits: str, index: str, classes: int, batch: int | str) -> list[ValueInfoProto]:
    return [
        helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, classes]),
        helper.make_tensor_value_info(index, TensorProto.INT64, [batch]),
    ]


def _if(
    i: int,
    cond: str,
    then: _Placed,
    otherwise: _Placed,
    classes: int,
    batch: int | str,
    names: tuple[str, str],
) -> NodeProto:
    """Level i's If node on `cond`, whose branches end in their env's "logits" and "exit_index"."""
    branches = {
        key: helper.make_graph(
            part.nodes,
            f"b{i}/{key}",
            [],
            _results(part.env["logits"], part.env["exit_index"], classes, batch),
            initializer=part.initializers,
        )
        for key, part in (("then", then), ("else", otherwise))
    }
    return helper.make_node(
        "If", [cond], list(names), name=f"b{i}/if", then_branch=branches["then"], else_branch=branches["else"]
    )


def _names(i: int) -> tuple[str, str]:
    return ("logits", "exit_index") if i == 0 else (f"r{i}/logits", f"r{i}/exit_index")


# ---------------------------------------------------------------- batch 1: nested Ifs


def _single_from(chain: Sequence[Level], i: int, env: dict[str, str], score: str, classes: int) -> _Placed:
    """Level i onwards at batch 1; the result's env names its "logits" and "exit_index"."""
    last = len(chain) - 1
    p = "final/" if i == last else f"b{i}/"
    placed, onward = _run_level(chain, i, p, env)
    logits = placed.env["logits"]
    if i == last:
        placed.nodes.append(const(p + "exit_index", [last], TensorProto.INT64, [1]))
        placed.env["exit_index"] = p + "exit_index"
        return placed
    scoring, value = score_nodes(logits, score, p + "score/")
    deciding, goes_on = goes_on_nodes(value, "thresholds", i, p + "decide/")
    stop = _Placed(
        [
            helper.make_node("Identity", [logits], [p + "stop/logits"], name=p + "stop/logits"),
            const(p + "stop/exit_index", [i], TensorProto.INT64, [1]),
        ],
        env={"logits": p + "stop/logits", "exit_index": p + "stop/exit_index"},
    )
    rest = _single_from(chain, i + 1, onward, score, classes)
    placed.nodes += [
        *scoring,
        *deciding,
        helper.make_node("Not", [goes_on], [p + "stop"], name=p + "stop"),  # NaN scores stop
        const(p + "scalar", [], TensorProto.INT64, [0]),
        helper.make_node("Reshape", [p + "stop", p + "scalar"], [p + "cond"], name=p + "cond"),  # one bool
        _if(i, p + "cond", stop, rest, classes, 1, _names(i)),
    ]
    placed.env.update(zip(("logits", "exit_index"), _names(i), strict=True))
    return placed


# ---------------------------------------------------------------- batches: compaction


def _batched_from(chain: Sequence[Level], i: int, env: dict[str, str], score: str, classes: int) -> _Placed:
    """Level i onwards on the samples still in; env: "x" (and "state") of those samples, "ids"
    their rows in the batch, "logits" and "exit_index" the full-batch results so far."""
    last = len(chain) - 1
    p = "final/" if i == last else f"b{i}/"
    placed, onward = _run_level(chain, i, p, {k: env[k] for k in ("x", "state") if k in env})
    logits, nodes = placed.env["logits"], placed.nodes
    if i == 0:  # every sample is in: the results so far are exit 0's
        nodes += [
            helper.make_node("Shape", [logits], [p + "shape"], name=p + "shape", end=1),
            helper.make_node(
                "ConstantOfShape",
                [p + "shape"],
                [p + "exit_index"],
                name=p + "exit_index",
                value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            ),
        ]
        out = {"logits": logits, "exit_index": p + "exit_index"}
    else:  # (n,) rows -> (n, 1) ScatterND indices
        nodes += [
            const(p + "axes", [1], TensorProto.INT64, [1]),
            helper.make_node("Unsqueeze", [env["ids"], p + "axes"], [p + "rows"], name=p + "rows"),
            helper.make_node(
                "ScatterND", [env["logits"], p + "rows", logits], [p + "all/logits"], name=p + "all/logits"
            ),
            const(p + "exit", [i], TensorProto.INT64, [1]),
            helper.make_node("Shape", [env["ids"]], [p + "rows_in"], name=p + "rows_in"),
            helper.make_node("Expand", [p + "exit", p + "rows_in"], [p + "exits"], name=p + "exits"),
            helper.make_node(
                "ScatterND",
                [env["exit_index"], p + "rows", p + "exits"],
                [p + "all/exit_index"],
                name=p + "all/exit_index",
            ),
        ]
        out = {"logits": p + "all/logits", "exit_index": p + "all/exit_index"}
    if i == last:
        placed.env.update(out)
        return placed
    scoring, value = score_nodes(logits, score, p + "score/")
    deciding, goes_on = goes_on_nodes(value, "thresholds", i, p + "decide/")
    nodes += [
        *scoring,
        *deciding,
        const(p + "flat", [-1], TensorProto.INT64, [1]),
        helper.make_node("NonZero", [goes_on], [p + "nonzero"], name=p + "nonzero"),  # (1, n)
        helper.make_node("Reshape", [p + "nonzero", p + "flat"], [p + "keep"], name=p + "keep"),  # (n,)
        helper.make_node("Size", [p + "keep"], [p + "count"], name=p + "count"),
        const(p + "none", [0], TensorProto.INT64, []),
        helper.make_node("Greater", [p + "count", p + "none"], [p + "any"], name=p + "any"),
    ]
    q = f"b{i + 1}/in/"
    gather = [
        helper.make_node("Gather", [onward[k], p + "keep"], [q + k], name=q + k, axis=0) for k in onward
    ]
    ids = p + "keep"  # rows of the batch: the rows kept here, of the rows kept before
    if i > 0:
        gather.append(
            helper.make_node("Gather", [env["ids"], p + "keep"], [q + "ids"], name=q + "ids", axis=0)
        )
        ids = q + "ids"
    rest = _batched_from(chain, i + 1, {**{k: q + k for k in onward}, "ids": ids, **out}, score, classes)
    rest.nodes[:0] = gather
    done = _Placed(
        [helper.make_node("Identity", [out[k]], [p + "done/" + k], name=p + "done/" + k) for k in out],
        env={k: p + "done/" + k for k in out},
    )
    nodes.append(_if(i, p + "any", rest, done, classes, "batch", _names(i)))
    placed.env.update(zip(("logits", "exit_index"), _names(i), strict=True))
    return placed


# ---------------------------------------------------------------- the models


def _opsets(models: Sequence[ModelProto]) -> list[onnx.OperatorSetIdProto]:
    found: dict[str, int] = {}
    for m in models:
        for op in m.opset_import:
            if found.setdefault(op.domain, op.version) != op.version:
                raise ExportError(
                    f"the exported graphs use opsets {found[op.domain]} and {op.version} of domain "
                    f"{op.domain or 'ai.onnx'!r}; export them with one exporter"
                )
    return [helper.make_opsetid(d, v) for d, v in sorted(found.items())]


def _model(chain: Sequence[Sequence[ModelProto]], score: str, batch: int | str) -> ModelProto:
    levels = [[m.graph for m in level] for level in chain]
    shape = [d.dim_value for d in levels[0][0].input[0].type.tensor_type.shape.dim][1:]
    classes = levels[-1][-1].output[0].type.tensor_type.shape.dim[1].dim_value
    build = _single_from if batch == 1 else _batched_from
    top = build(levels, 0, {"x": "x"}, score, classes)
    graph = helper.make_graph(
        top.nodes,
        "bofexits_adaptive" if batch == 1 else "bofexits_adaptive_batched",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape]),
            helper.make_tensor_value_info("thresholds", TensorProto.FLOAT, [len(levels) - 1]),
        ],
        _results("logits", "exit_index", classes, batch),
        initializer=top.initializers,
    )
    models = [m for level in chain for m in level]
    model = helper.make_model(graph, opset_imports=_opsets(models), producer_name="bofexits")
    model.ir_version = max(m.ir_version for m in models)
    return model


def adaptive_graph(chain: Sequence[Sequence[ModelProto]], score: str) -> ModelProto:
    """Batch-1 adaptive inference, ``(x (1, C, H, W), thresholds (S-1,)) -> (logits (1, K), exit_index (1,))``.

    Args:
        chain: the exported graphs per level in execution order: S-1 early levels ([block_i],
            or [stage_i, exit_i]), then [final]; local functions inlined (`load_graph`).
        score: the rule's score (`bofexits.deploy.rule.SCORES`).

    Returns:
        The model (nested ``If`` nodes); the caller checks it against PyTorch.
    """
    model = _model(chain, score, 1)
    model.doc_string = (
        "Adaptive inference at batch 1: stage i and exit i, exit i's score against thresholds[i], then an "
        "If that returns exit i's logits and index or runs the rest of the network."
    )
    return model


def batched_graph(chain: Sequence[Sequence[ModelProto]], score: str) -> ModelProto:
    """Adaptive inference on a batch, ``(x (B, C, H, W), thresholds (S-1,)) -> (logits (B, K), exit_index (B,))``.

    Args and returns as `adaptive_graph`; later stages run on the samples still in only.
    """
    model = _model(chain, score, "batch")
    model.doc_string = (
        "Adaptive inference on a batch: after exit i the samples that go on are gathered and run through "
        "the rest of the network; logits and exit index are scattered back into input order."
    )
    return model
