"""The rule in one ONNX graph (adaptive.onnx, batch 1; adaptive_batched.onnx): the same exits as
PyTorch, later stages never run, thresholds and graphs checked before use."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper
from onnx.reference import ReferenceEvaluator

from bofexits.config import ModelConfig
from bofexits.deploy import runner as deploy
from bofexits.deploy._compose import adaptive_graph, batched_graph, load_graph
from bofexits.deploy.onnx import export_onnx
from bofexits.deploy.runner import ManifestError, OnnxAdaptiveRunner, RunnerInputError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration
from tests.helpers import fit_calibration

BETAS = (0.0, 0.4, 1.0)  # every sample at exit 1, near the knee, nearly all to the end
N = 40


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _calibrate(net: MultiExitNetwork, score: str) -> ExitCalibration:
    with torch.no_grad():
        return fit_calibration(net(_images(256, 1)), score)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small demo-like network (vgg28, random weights), calibrated, exported with the legacy exporter."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(widths=[4, 8, 8, 16], codewords=8)).float().eval()
    cal = _calibrate(net, "max_prob")
    out = export_onnx(
        net,
        tmp_path_factory.mktemp("adaptive") / "export",
        calibration=cal,
        beta=0.4,
        variant="quantile",
        exporter="legacy",
    )
    chain = [[load_graph(str(out / f"block_{i}.onnx"))] for i in range(3)] + [
        [load_graph(str(out / "final.onnx"))]
    ]
    return {"net": net, "cal": cal, "dir": out, "chain": chain, "runner": OnnxAdaptiveRunner(out)}


def _session(model: onnx.ModelProto, **options: Any) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for key, value in options.items():
        setattr(opts, key, value)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _forced(k: int) -> np.ndarray:
    """Thresholds that send every sample to exit k: never stop before it, always stop there."""
    return np.array([np.inf] * k + [-np.inf] * (3 - k), np.float32)


def _assert_same(logits: np.ndarray, exits: np.ndarray, want: Any) -> None:
    np.testing.assert_array_equal(exits, want.exit_index.numpy())
    np.testing.assert_array_equal(logits.argmax(1), want.predictions.numpy())
    np.testing.assert_allclose(logits, want.logits.numpy(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- the same answers as PyTorch


def test_runner_paths_equal_the_pytorch_runtime(export: dict[str, Any]) -> None:
    """Batch 1 (adaptive.onnx), batches (adaptive_batched.onnx) and the staged graphs, every image, three betas."""
    runner: OnnxAdaptiveRunner = export["runner"]
    assert runner.adaptive is not None and runner.adaptive_batched is not None
    x = _images(N, 7)
    for beta in BETAS:
        want = AdaptiveRuntime(export["net"], CalibratedThreshold(export["cal"], beta, "quantile"))(x)
        r = runner.with_beta(beta)
        ones = [r(x[i : i + 1].numpy()) for i in range(N)]
        _assert_same(
            np.concatenate([o.logits for o in ones]), np.concatenate([o.exit_index for o in ones]), want
        )
        for got in (r(x.numpy()), r.run_staged(x.numpy())):
            _assert_same(got.logits, got.exit_index, want)
        if beta == 0.4:
            assert len(set(want.exit_index.tolist())) >= 3  # the routing is exercised


@pytest.mark.parametrize("score", ["max_logit", "margin", "neg_entropy"])
def test_every_score_in_onnx_equals_the_policy(export: dict[str, Any], score: str) -> None:
    """The other scores, composed from the same block graphs: same exits as the runtime under that score."""
    cal = _calibrate(export["net"], score)
    single = _session(adaptive_graph(export["chain"], score))
    batched = _session(batched_graph(export["chain"], score))
    x = _images(N, 8)
    for beta in BETAS:
        policy = CalibratedThreshold(cal, beta, "quantile")
        want, t = AdaptiveRuntime(export["net"], policy)(x), np.array(policy.thresholds, np.float32)
        got = [single.run(None, {"x": x[i : i + 1].numpy(), "thresholds": t}) for i in range(N)]
        _assert_same(np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]), want)
        _assert_same(*batched.run(None, {"x": x.numpy(), "thresholds": t}), want)


def test_graphs_are_valid_and_the_reference_evaluator_agrees(export: dict[str, Any]) -> None:
    d: Path = export["dir"]
    for name in ("adaptive", "adaptive_batched"):
        onnx.checker.check_model(str(d / f"{name}.onnx"), full_check=True)
    model = onnx.load(str(d / "adaptive.onnx"))
    assert [n.op_type for n in model.graph.node][-1] == "If"
    reference, session = ReferenceEvaluator(model), export["runner"].adaptive.session
    x = _images(4, 9).numpy()
    for i, t in enumerate(
        [_forced(0), _forced(2), _forced(3), np.array(export["runner"].thresholds, np.float32)]
    ):
        feed = {"x": x[i : i + 1], "thresholds": t}
        (want_logits, want_exit), (logits, exit_index) = session.run(None, feed), reference.run(None, feed)
        assert exit_index.tolist() == want_exit.tolist() and exit_index.dtype == np.int64
        np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- later stages never run


def _poisoned(graph: onnx.ModelProto) -> onnx.ModelProto:
    """`graph` whose nodes read sample 100 of its input: running it fails (at run time only, as
    shape inference cannot see it), and ``x`` keeps its shape, so the graph still loads."""
    out = onnx.ModelProto()
    out.CopyFrom(graph)
    x = out.graph.input[0].name
    for node in out.graph.node:
        node.input[:] = ["poisoned" if n == x else n for n in node.input]
    nodes = [
        helper.make_node("Constant", [], ["sample_100"], value=helper.make_tensor("i", 7, [1], [100])),
        helper.make_node("Gather", [x, "sample_100"], ["poisoned"], axis=0),
        *out.graph.node,
    ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


@pytest.mark.parametrize("build", [adaptive_graph, batched_graph])
def test_stages_after_the_exit_taken_never_run(export: dict[str, Any], build: Callable[..., Any]) -> None:
    """Stage 2 and the final stage poisoned: leaving at exit 1 runs fine, going on fails."""
    chain = export["chain"]
    session = _session(
        build([chain[0], [_poisoned(chain[1][0])], chain[2], [_poisoned(chain[3][0])]], "max_prob")
    )
    x = _images(1 if build is adaptive_graph else 5, 10).numpy()
    logits, exits = session.run(None, {"x": x, "thresholds": _forced(0)})
    assert exits.tolist() == [0] * len(x) and np.isfinite(logits).all()
    with pytest.raises(Exception, match="out of data bounds"):  # the poison is live
        session.run(None, {"x": x, "thresholds": _forced(1)})


def test_profile_of_the_exported_graph_shows_only_the_stages_run(
    export: dict[str, Any], tmp_path: Path
) -> None:
    session = _session(
        onnx.load(str(export["dir"] / "adaptive.onnx")),
        enable_profiling=True,
        profile_file_prefix=str(tmp_path / "profile"),
    )
    x = _images(1, 11).numpy()
    for k in (0, 3):
        session.run(None, {"x": x, "thresholds": _forced(k)})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]

    def ran(k: int) -> list[str]:  # the nodes of run k; optimiser-made ones (layout reorders) lack a prefix
        start, end = runs[k]["ts"], runs[k]["ts"] + runs[k]["dur"]
        return [e["name"] for e in nodes if start <= e["ts"] <= end]

    later = ("b1/", "b2/", "final/")
    assert any(n.startswith("b0/") for n in ran(0)) and not any(n.startswith(later) for n in ran(0))
    assert all(any(n.startswith(p) for n in ran(1)) for p in later)  # going through runs them all


# ---------------------------------------------------------------- what the runner refuses


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ([0.1, 0.2], "shape \\(3,\\)"),
        ([[0.1, 0.2, 0.3]], "shape \\(3,\\)"),
        ([0.1, float("nan"), 0.3], "NaN"),
    ],
)
def test_bad_thresholds_are_refused(export: dict[str, Any], thresholds: Any, message: str) -> None:
    runner = export["runner"].with_beta(0.4)
    before = list(runner.thresholds)
    with pytest.raises(RunnerInputError, match=message) as info:
        runner.thresholds = thresholds
    assert isinstance(info.value, ValueError) and runner.thresholds == before
    runner.thresholds = [float("-inf"), 0.5, float("inf")]  # infinities are thresholds: always, never stop
    assert runner(_images(1, 12).numpy()).exit_index.tolist() == [0]


def test_batch_of_two_is_refused_by_the_batch1_graph(export: dict[str, Any]) -> None:
    with pytest.raises(RunnerInputError, match="batch-1 graph"):
        export["runner"].run_single(_images(2, 13).numpy())


def test_non_finite_logits_stop_and_are_refused(export: dict[str, Any]) -> None:
    """NaN logits give a NaN score, which the graphs stop on (not compared False and sent on)."""
    runner = export["runner"].with_beta(1.0)
    runner.check_inputs = False
    for n in (1, 4):
        with pytest.raises(RunnerInputError, match="NaN or inf logits"):
            runner(np.full((n, 1, 28, 28), np.nan, np.float32))


def _copy(export: dict[str, Any], dst: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of the export with `edit` applied to its manifest (checksum recomputed) and files."""
    shutil.copytree(export["dir"], dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest, dst)
    manifest[deploy.CONTENT_SHA256] = deploy.manifest_digest(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _tamper(m: dict[str, Any], d: Path) -> None:
    (d / "adaptive.onnx").write_bytes((d / "adaptive.onnx").read_bytes() + b"\0")


def _rename_input(m: dict[str, Any], d: Path) -> None:
    model = onnx.load(str(d / "adaptive.onnx"))
    model.graph.input[0].name = "image"
    for node in model.graph.node:
        node.input[:] = ["image" if n == "x" else n for n in node.input]
    onnx.save(model, str(d / "adaptive.onnx"))
    m["adaptive"]["sha256"] = deploy.sha256_file(d / "adaptive.onnx")


def _other_opset(m: dict[str, Any], d: Path) -> None:
    m["producer"]["opset"] = 18  # the legacy exporter wrote 17


def _block_as_adaptive(m: dict[str, Any], d: Path) -> None:
    m["adaptive"] = m["graphs"][0] | {"role": "adaptive"}


@pytest.mark.parametrize(
    "edit, message",
    [
        (_tamper, "adaptive.onnx does not match"),
        (_rename_input, "graph adaptive: the manifest declares inputs .*'x'.* the graph has .*'image'"),
        (_other_opset, "imports ONNX opset 17, the manifest's producer wrote opset 18"),
        (_block_as_adaptive, "graph block_0 \\(role 'adaptive'\\) has inputs \\['x'\\]"),
        (lambda m, d: m["adaptive"].__setitem__("role", "block"), "'adaptive.role' is 'block'"),
    ],
)
def test_mismatched_graphs_are_refused(
    export: dict[str, Any], tmp_path: Path, edit: Callable[..., None], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        OnnxAdaptiveRunner(_copy(export, tmp_path / "bad", edit))


def test_export_without_the_graphs_runs_staged(export: dict[str, Any], tmp_path: Path) -> None:
    """Manifests from before the one-graph forms load; the runner drives the staged graphs."""

    def drop(m: dict[str, Any], d: Path) -> None:
        for key in ("adaptive", "adaptive_batched"):
            del m[key]
            (d / f"{key}.onnx").unlink()

    old = OnnxAdaptiveRunner(_copy(export, tmp_path / "old", drop))
    assert old.adaptive is None and old.adaptive_batched is None
    x = _images(12, 14).numpy()
    new = export["runner"]
    assert old(x).exit_index.tolist() == new(x).exit_index.tolist()
    assert [old(x[i : i + 1]).exit_index[0] for i in range(12)] == new(x).exit_index.tolist()
