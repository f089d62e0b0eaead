"""The calibrated stopping rule as ONNX nodes: `bofexits.deploy.rule` once more, inside a graph.

`score_nodes` computes an exit's score from its logits, `goes_on_nodes` compares it with the
exit's threshold, a graph input; `bofexits.deploy._compose` puts both into the adaptive
graphs. Only operators whose form is the same at opset 17 (legacy exporter) and 18 (dynamo)
are used: TopK for the maximum, ReduceSum with its axes as an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnx import NodeProto, TensorProto, helper

from bofexits.deploy._export import ExportError
from bofexits.deploy.rule import SCORES

__all__ = ["const", "goes_on_nodes", "score_nodes"]


def const(name: str, values: Sequence[int] | Sequence[float], dtype: int, dims: Sequence[int]) -> NodeProto:
    """A Constant node whose output is `name`: `values` as a tensor of `dtype` and shape `dims`."""
    return helper.make_node(
        "Constant", [], [name], name=name, value=helper.make_tensor(name, dtype, list(dims), list(values))
    )


def score_nodes(logits: str, score: str, prefix: str) -> tuple[list[NodeProto], str]:
    """Nodes computing each sample's score from (B, classes) `logits`, as `rule.confidence` does.

    The arithmetic is rule.py's, so both agree to float rounding: max_prob is
    1 / sum(exp(l - max l)) (what `rule.score_one` computes), margin the top-1 minus the top-2
    softmax probability, neg_entropy sum(p * log p) from the log-softmax. ``sum(l - l)`` is
    added to the score: 0 when every logit is finite, NaN otherwise, so that non-finite logits
    stop at their exit (`goes_on_nodes`) and the runner refuses them, as the staged path does,
    instead of being compared False and sent on.

    Args:
        logits: the name of a (B, classes) float tensor.
        score: one of `bofexits.deploy.rule.SCORES`.
        prefix: prepended to every name the nodes make (names must be unique in a graph).

    Returns:
        The nodes and the name of their (B,) float output.
    """
    if score not in SCORES:
        raise ExportError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    p = prefix
    nodes = [
        const(p + "axes", [1], TensorProto.INT64, [1]),
        const(p + "k", [2 if score == "margin" else 1], TensorProto.INT64, [1]),
    ]

    def node(op: str, inputs: Sequence[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, list(inputs), [p + out], name=p + out, **attrs))
        return p + out

    def top(x: str) -> str:  # (B, k) largest values, sorted
        nodes.append(
            helper.make_node("TopK", [x, p + "k"], [p + "top", p + "top_index"], name=p + "top", axis=1)
        )
        return p + "top"

    def total(x: str, out: str, keep: int = 0) -> str:  # sum over the classes
        return node("ReduceSum", [x, p + "axes"], out, keepdims=keep)

    finite = total(node("Sub", [logits, logits], "zero_if_finite"), "finite")  # (B,) 0 or NaN
    if score == "max_logit":
        raw = node("Squeeze", [top(logits), p + "axes"], "raw")
    elif score == "max_prob":
        shifted = node("Sub", [logits, top(logits)], "shifted")
        raw = node("Reciprocal", [total(node("Exp", [shifted], "exp"), "sum")], "raw")
    elif score == "margin":
        nodes.append(const(p + "signs", [1.0, -1.0], TensorProto.FLOAT, [1, 2]))
        first_two = top(node("Softmax", [logits], "prob", axis=1))
        raw = total(node("Mul", [first_two, p + "signs"], "signed"), "raw")  # p1 - p2, exactly
    else:  # neg_entropy
        shifted = node("Sub", [logits, top(logits)], "shifted")
        norm = node("Log", [total(node("Exp", [shifted], "exp"), "sum", keep=1)], "log_sum")
        logp = node("Sub", [shifted, norm], "logp")
        raw = total(node("Mul", [node("Exp", [logp], "p"), logp], "plogp"), "raw")
    return nodes, node("Add", [raw, finite], "score")


def goes_on_nodes(score: str, thresholds: str, index: int, prefix: str) -> tuple[list[NodeProto], str]:
    """Nodes deciding, per sample, to go on past exit `index`: ``score < thresholds[index]``.

    The rule stops when ``score >= threshold``; going on is its negation except for a NaN
    score, which is not below anything and so stops (see `score_nodes`).

    Returns:
        The nodes and the name of their bool output, shaped like `score`.
    """
    p = prefix
    return [
        const(p + "index", [index], TensorProto.INT64, []),
        helper.make_node(
            "Gather", [thresholds, p + "index"], [p + "threshold"], name=p + "threshold", axis=0
        ),
        helper.make_node("Less", [score, p + "threshold"], [p + "goes_on"], name=p + "goes_on"),
    ], p + "goes_on"
