"""Adaptive inference on an exported model with onnxruntime and numpy only: no torch at run time.

`bofexits.deploy.onnx.export_onnx` writes one ONNX graph per stage+exit pair, the final stage,
the plain backbone, the whole rule in one graph for batch 1 and one for batches, a
`manifest.json` and a copy of this runner as the package folder `bofexits_deploy/` (this
module as its `__init__.py`, beside the modules it imports: `RUNNER_MODULES`), so an export
directory runs anywhere numpy and onnxruntime install::

    import sys; sys.path.insert(0, "export_dir")
    from bofexits_deploy import OnnxAdaptiveRunner
    runner = OnnxAdaptiveRunner("export_dir", threads=1)
    result = runner(runner.preprocess(uint8_images))   # (N, H, W[, C]) at the model's size
    result.predictions, result.exit_index

Paths: batch 1 runs ``adaptive.onnx`` (one ``session.run``; later stages never execute),
batches of `BATCHED_GRAPH_FROM` or more ``adaptive_batched.onnx``; the knob's thresholds are
fed to both as an input. Exports without them (older ones) run the staged graphs, stage by
stage with the decision in numpy (`OnnxAdaptiveRunner.run_staged`, always available).

The stopping rule is `bofexits.deploy.rule` (the calibrated rule of `bofexits.policies` in
numpy), the manifest's schema and its checks are `bofexits.deploy.manifest`; this module
re-exports both, so ``bofexits.deploy.runner.load_manifest`` and the rest work as before.
Every import between them is relative, so the same source runs as `bofexits.deploy.runner`
and as the shipped `bofexits_deploy`; none imports anything but the standard library, numpy
and (when a runner is built) onnxruntime.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._sessions import NAMES as _NAMES
from ._sessions import Graph as _Graph
from ._sessions import session_options
from .errors import DeployError, ManifestError, MissingDependencyError, RunnerInputError
from .manifest import (
    CONTENT_SHA256,
    FORMAT,
    LAYOUTS,
    MANIFEST,
    PREPROCESSING_STEPS,
    RUNNER_FILE,
    TORCHSCRIPT_FORMAT,
    VERSION,
    CalibrationEntry,
    FileEntry,
    GraphEntry,
    Manifest,
    OnnxManifest,
    PolicyEntry,
    PreprocessingEntry,
    ProducerEntry,
    TensorEntry,
    TorchScriptManifest,
    load_manifest,
    manifest_digest,
    read_manifest,
    sha256_file,
)
from .rule import SCORES, VARIANTS, calibrated_thresholds, confidence, score_one, threshold_vector

__all__ = [
    "BATCHED_GRAPH_FROM",
    "CONTENT_SHA256",
    "FORMAT",
    "LAYOUTS",
    "MANIFEST",
    "PREPROCESSING_STEPS",
    "RUNNER_FILE",
    "RUNNER_MODULES",
    "SCORES",
    "TORCHSCRIPT_FORMAT",
    "VARIANTS",
    "VERSION",
    "CalibrationEntry",
    "DeployError",
    "FileEntry",
    "GraphEntry",
    "Manifest",
    "ManifestError",
    "MissingDependencyError",
    "OnnxAdaptiveRunner",
    "OnnxManifest",
    "PolicyEntry",
    "PreprocessingEntry",
    "ProducerEntry",
    "RunResult",
    "RunnerInputError",
    "TensorEntry",
    "TorchScriptManifest",
    "calibrated_thresholds",
    "confidence",
    "load_manifest",
    "manifest_digest",
    "preprocess",
    "read_manifest",
    "score_one",
    "sha256_file",
    "threshold_vector",
]

#: The modules beside this one (this module's folder) that it imports, all relatively; an ONNX
#: export ships them with this module as `__init__.py` in its `RUNNER_FILE` folder.
RUNNER_MODULES: tuple[str, ...] = (
    "errors.py",
    "rule.py",
    "_fields.py",
    "_entries.py",
    "manifest.py",
    "_sessions.py",
)
#: Batches of this size or more run ``adaptive_batched.onnx`` (when the export has it), smaller
#: ones the staged graphs. Measured with benchmarks/adaptive_graphs.py (demo-like vgg28, random
#: weights, exits ~50/9/1/40 %, a 2-core CPU shared with other jobs, so +-15 % between runs):
#: staged / one-graph mean time per image, 1 thread, batches 2, 8, 32, 256: 1.08, 1.06, 0.84,
#: 1.11 in one run, 1.18, 1.42, 0.90, 0.79 in another, 1.16 and 1.17 at 32 and 256 over 15
#: rounds: a wash at 32 and up, ahead below; 2 threads: 2.77, 2.62, 2.27, 1.76 (each staged
#: graph has its own thread pool, and the pools contend). The staged graphs with I/O binding
#: into preallocated buffers were within noise of plain staged (0.7-1.3x) and behind the one
#: graph in every run. So: the one graph at every batch size.
BATCHED_GRAPH_FROM = 2
NAN_MESSAGE = "an exit produced NaN or inf logits; the weights are broken (re-export from a good checkpoint)"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "running an ONNX export needs onnxruntime: `pip install onnxruntime` "
            "(or `pip install bofexits[deploy]`)"
        ) from exc
    return onnxruntime


def preprocess(
    images: np.ndarray,
    input_shape: Sequence[int],
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """uint8 images already at the model's size and colour mode -> the network's float32 input.

    The same arithmetic as training batches (`ImageDataset.batches`): ``(images / 255 - mean) / std``
    per channel, in float32.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 1) grey, (N, H, W, 3) RGB; or one image without N.
        input_shape: the model's (C, H, W).
        mean, std: per-channel statistics of ``images / 255``.

    Returns:
        (N, C, H, W) float32, C-contiguous.

    >>> preprocess(np.full((2, 2), 255, np.uint8), (1, 2, 2), [0.5], [0.25])[0, 0].tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise RunnerInputError(f"preprocess takes uint8 images (0..255), got {a.dtype}")
    c, h, w = (int(d) for d in input_shape)
    if a.ndim == (2 if c == 1 else 3):  # one image
        a = a[None]
    if c == 1 and a.ndim == 3:  # grey images without a channel axis
        a = a[..., None]
    if a.ndim != 4 or a.shape[1:] != (h, w, c):
        raise RunnerInputError(
            f"expected images of {h}x{w} with {c} channel(s), got an array of shape {tuple(np.shape(images))}; "
            "resize and convert them first"
        )
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    x: np.ndarray = (a.astype(np.float32) / np.float32(255.0) - m) / s  # channel axis last here
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class RunResult:
    """Outputs of adaptive inference.

    Attributes:
        logits: (B, classes) float32 logits of the exit each sample took.
        exit_index: (B,) int64, 0-based exit taken (num_exits - 1 = the final classifier).
    """

    logits: np.ndarray
    exit_index: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """(B,) predicted classes."""
        return self.logits.argmax(1)


_Step = Callable[[np.ndarray, "np.ndarray | None"], tuple[Any, ...]]


class OnnxAdaptiveRunner:
    """Real adaptive inference on an export directory: later stages never run for samples that stop.

    Batch 1 returns at the first exit whose score passes its threshold; in batches, samples
    that stop leave the batch and later stages only see the rest (outputs in input order).
    Both run the rule in one graph when the export has it (`run_single`, `run_batched`),
    else the staged graphs (`run_staged`).

    Args:
        export_dir: a directory written by `bofexits.deploy.onnx.export_onnx`.
        threads: onnxruntime intra-op threads of each graph's session (default 1). Every stage
            graph has its own session and thread pool; with two threads per pool the pools
            contend for the cores on the staged path (demo network, 2-core CPU, batch 1: 475 us
            per image with 2, 239 us with 1), not on the one-graph paths (one session; batch
            32: ~2.3x faster than staged at 2 threads). None: onnxruntime's default, all cores.
        beta: override the manifest's knob (thresholds recomputed from its calibration).
        check_inputs: validate type, shape, dtype and finiteness of every input.
        providers: onnxruntime execution providers, as onnxruntime takes them (names, or
            (name, options) pairs such as ("CUDAExecutionProvider", {"device_id": 0})); default CPU.
    """

    def __init__(
        self,
        export_dir: str | Path,
        *,
        threads: int | None = 1,
        beta: float | None = None,
        check_inputs: bool = True,
        providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
    ) -> None:
        ort = _onnxruntime()
        self.export_dir = Path(export_dir)
        self.manifest = m = load_manifest(self.export_dir)
        self.num_exits, self.classes = m.num_exits, list(m.classes)
        pre = m.preprocessing
        self.input_shape: tuple[int, ...] = pre.input_shape
        self.mean = np.asarray(pre.mean, dtype=np.float32)
        self.std = np.asarray(pre.std, dtype=np.float32)
        self.color_mode = pre.color_mode  # "L", "RGB", or None (other channel counts)
        self.score, self.variant = m.policy.score, m.policy.variant
        cal = m.calibration
        self._means = list(cal.means)
        self._quantiles = np.asarray(cal.quantiles, dtype=np.float32)
        self._conditional = None if cal.conditional is None else np.asarray(cal.conditional, dtype=np.float32)
        self._accuracy = None if cal.accuracy is None else np.asarray(cal.accuracy, dtype=np.float32)
        options = session_options(ort, threads)

        def load(entry: GraphEntry) -> _Graph:
            return _Graph(ort, self.export_dir, entry, options, list(providers), m.producer.opset)

        self.graphs = [load(g) for g in m.graphs]
        self.backbone = load(m.backbone)
        # The whole rule in one graph, for batch 1 and for batches; None in older exports.
        self.adaptive = None if m.adaptive is None else load(m.adaptive)
        self.adaptive_batched = None if m.adaptive_batched is None else load(m.adaptive_batched)
        self._check_graphs()
        self._steps = self._build_steps(m.layout)
        self.check_inputs = check_inputs
        self.set_beta(m.policy.beta)
        self._check_thresholds(m.policy.thresholds)
        if beta is not None:
            self.set_beta(beta)

    def _check_thresholds(self, stored: Sequence[float]) -> None:
        """The manifest's thresholds must be the ones its calibration gives at its beta.

        The runner computes thresholds from the calibration, so an edited threshold would
        otherwise be ignored without a word (and an edited table would act unseen).
        """
        ours = np.asarray(self.thresholds, dtype=np.float64)
        theirs = np.asarray(stored, dtype=np.float64)
        same = (ours == theirs) | np.isclose(ours, theirs, rtol=1e-5, atol=1e-6)
        if not bool(same.all()):
            raise self._error(
                f"policy.thresholds {[float(t) for t in theirs]} disagree with the thresholds its calibration "
                f"gives at beta {self.beta:g} ({[round(float(t), 6) for t in ours]}): the manifest was edited"
            )

    def _error(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.export_dir / MANIFEST}: {problem}; re-export the model")

    def _check_graphs(self) -> None:
        """Each graph reads and writes what its role needs, the first ones read the preprocessed
        input, and the one-graph forms take one threshold per early exit."""
        whole = [g for g in (self.adaptive, self.adaptive_batched) if g is not None]
        for g in [*self.graphs, self.backbone, *whole]:
            need_in, allow_in, need_out, allow_out = _NAMES[g.role]
            if not (need_in <= set(g.inputs) <= allow_in and need_out <= set(g.outputs) <= allow_out):
                raise self._error(
                    f"graph {g.name} (role {g.role!r}) has inputs {g.inputs} and outputs {g.outputs}, "
                    "which this runner cannot drive"
                )
        for g in (self.graphs[0], self.backbone, *whole):
            x = next(t for t in g.session.get_inputs() if t.name == "x")
            if list(x.shape[1:]) != list(self.input_shape):
                raise self._error(
                    f"preprocessing says inputs are {list(self.input_shape)}, graph {g.name} reads {x.shape[1:]}"
                )
        for g in whole:
            t = next(t for t in g.session.get_inputs() if t.name == "thresholds")
            if list(t.shape) != [self.num_exits - 1]:
                raise self._error(
                    f"graph {g.name} takes thresholds of shape {t.shape}, but the network has "
                    f"{self.num_exits - 1} early exits"
                )
        if self.adaptive is not None and self.adaptive.session.get_inputs()[0].shape[0] != 1:
            raise self._error(f"graph {self.adaptive.name} (role 'adaptive') must take a batch of 1")

    def _build_steps(self, layout: str) -> list[_Step]:
        """One callable per early exit, ``(x, state) -> (features, logits, next_state)``, and `self.final`."""
        by_role: dict[tuple[str, int], _Graph] = {(g.role, g.index): g for g in self.graphs}
        last = self.num_exits - 1
        final = by_role.get(("final", last))
        if final is None:
            raise self._error(f"no final graph (role 'final', index {last})")
        self.final = final
        steps = []
        for i in range(last):
            if layout == "fused":
                block = by_role.get(("block", i))
                if block is None:
                    raise self._error(f"no graph for stage+exit {i}")
                steps.append(self._fused_step(block))
            else:
                stage, head = by_role.get(("stage", i)), by_role.get(("exit", i))
                if stage is None or head is None:
                    raise self._error(f"no graph for stage {i} or exit {i}")
                steps.append(self._separate_step(stage, head))
        return steps

    @staticmethod
    def _fused_step(block: _Graph) -> _Step:
        takes_state = "state" in block.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            out = block(x=x, state=state) if takes_state and state is not None else block(x=x)
            return out["features"], out["logits"], out.get("next_state")

        return step

    @staticmethod
    def _separate_step(stage: _Graph, head: _Graph) -> _Step:
        takes_state = "state" in head.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            f = stage(x=x)["features"]
            out = head(features=f, state=state) if takes_state and state is not None else head(features=f)
            return f, out["logits"], out.get("next_state")

        return step

    # ------------------------------------------------------------ policy

    @property
    def thresholds(self) -> list[float]:
        """The (S-1,) thresholds in use: a sample stops at exit i when its score >= thresholds[i].

        Set by `set_beta`; assignable directly, checked (`rule.threshold_vector`: one per early
        exit, no NaN), since the graphs get them as an input.
        """
        return self._thresholds

    @thresholds.setter
    def thresholds(self, values: Sequence[float]) -> None:
        self._feed = threshold_vector(values, self.num_exits - 1)  # what the graphs are fed
        self._thresholds = [float(v) for v in values]

    def set_beta(self, beta: float) -> None:
        """Use knob `beta` from now on (thresholds from the manifest's calibration statistics)."""
        self.thresholds = calibrated_thresholds(
            self._means, self._quantiles, beta, self.variant, self._conditional, self._accuracy
        )
        self.beta = float(beta)

    def with_beta(self, beta: float) -> OnnxAdaptiveRunner:
        """A runner sharing these sessions under another knob value."""
        other = copy.copy(self)
        other.set_beta(beta)
        return other

    # ------------------------------------------------------------ inputs

    def check(self, x: Any) -> None:
        """Reject what would fail inside onnxruntime or be silently mis-routed."""
        if not isinstance(x, np.ndarray):
            raise RunnerInputError(f"expected a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise RunnerInputError(
                f"expected float32 input, got {x.dtype}; convert with x.astype(np.float32) after normalising "
                "(runner.preprocess does both for uint8 images)"
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise RunnerInputError(
                f"expected input of shape (B, {', '.join(map(str, self.input_shape))}) with B >= 1, "
                f"got {tuple(x.shape)}; resize the images to the model's input size"
            )
        if not bool(np.isfinite(x).all()):
            raise RunnerInputError("input contains NaN or inf values; clean or re-normalise the images first")

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the model's size and colour mode -> the normalised float32 batch (`preprocess`)."""
        return preprocess(images, self.input_shape, self.mean, self.std)

    # ------------------------------------------------------------ inference

    def __call__(self, x: np.ndarray) -> RunResult:
        """Adaptive inference on a (B, C, H, W) float32 batch: `run_single` for B == 1, else `run_batched`."""
        if self.check_inputs:
            self.check(x)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            return RunResult(logits, np.array([index], dtype=np.int64))
        return self.run_batched(x)

    def run_single(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One sample: (1, classes) logits and the 0-based exit it took. No input checks but the batch size.

        One call of ``adaptive.onnx`` (stages after the exit taken never run) when the export
        has it; the staged graphs otherwise (`run_staged`).
        """
        if self.adaptive is None:
            return self._staged_single(x)
        if x.shape[0] != 1:
            raise RunnerInputError(
                f"run_single takes one sample, shape (1, C, H, W), got a batch of {x.shape[0]}: "
                "adaptive.onnx is a batch-1 graph; call the runner (or run_batched) for batches"
            )
        logits, index = self.adaptive.session.run(None, {"x": x, "thresholds": self._feed})
        return _finite(logits), int(index[0])

    def run_batched(self, x: np.ndarray) -> RunResult:
        """A batch where stopped samples leave and the rest go on. No input checks.

        One call of ``adaptive_batched.onnx`` from `BATCHED_GRAPH_FROM` samples on when the
        export has it; the staged graphs otherwise (`run_staged`).
        """
        if self.adaptive_batched is None or x.shape[0] < BATCHED_GRAPH_FROM:
            return self._staged_batched(x)
        logits, exit_index = self.adaptive_batched.session.run(None, {"x": x, "thresholds": self._feed})
        return RunResult(_finite(logits), exit_index)

    def run_staged(self, x: np.ndarray) -> RunResult:
        """The staged graphs at any batch size: a graph call per stage+exit, the decision in numpy,
        and in batches only the samples still in go on. No input checks.

        The path of exports without the one-graph forms, and the reference they are tested against.
        """
        if x.shape[0] == 1:
            logits, index = self._staged_single(x)
            return RunResult(logits, np.array([index], dtype=np.int64))
        return self._staged_batched(x)

    def step(self, i: int, x: np.ndarray, state: np.ndarray | None) -> tuple[Any, np.ndarray, Any]:
        """Run stage i and its exit on these samples (staged graphs): the step the loops are made of.

        The same protocol as `bofexits.inference.AdaptiveRuntime.step`, in numpy: stage i maps
        `x` (the input for i = 0, else stage i-1's features), exit i gives logits and the
        state for exit i+1; the final stage (i = S-1) gives the backbone's logits and no
        features. Each row depends on its own inputs alone, so rows of different requests may
        share a call (the server's re-batching). No input checks, no decision.

        Returns:
            (features (B, ...) or None at the final stage, logits (B, classes) float32, state or None).
        """
        if i == len(self._steps):
            return None, self.final(x=x)["logits"], None
        features, logits, state = self._steps[i](x, state)
        return features, logits, state

    def stops(self, i: int, logits: np.ndarray) -> np.ndarray:
        """(B,) bool: the samples whose score passes exit i's threshold (the rule, in numpy)."""
        return np.asarray(confidence(logits, self.score) >= self._thresholds[i])

    def _staged_single(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        state = None
        for i in range(len(self._steps)):
            x, logits, state = self.step(i, x, state)
            _finite(logits)
            if score_one(logits, self.score) >= self._thresholds[i]:
                return logits, i
        return _finite(self.step(len(self._steps), x, None)[1]), len(self._steps)

    def _staged_batched(self, x: np.ndarray) -> RunResult:
        n, last = x.shape[0], len(self._steps)
        out: np.ndarray | None = None
        exit_index = np.full(n, last, dtype=np.int64)
        alive = np.arange(n)
        state: np.ndarray | None = None
        for i in range(last):
            x, logits, state = self.step(i, x, state)
            _finite(logits)
            if out is None:
                out = np.empty((n, logits.shape[1]), dtype=logits.dtype)
            stop = self.stops(i, logits)
            n_stop = int(stop.sum())
            if n_stop == 0:
                continue
            out[alive[stop]] = logits[stop]
            exit_index[alive[stop]] = i
            if n_stop == alive.shape[0]:
                return RunResult(out, exit_index)
            go_on = ~stop
            alive, x = alive[go_on], np.ascontiguousarray(x[go_on])
            state = np.ascontiguousarray(state[go_on]) if state is not None else None
        final = _finite(self.step(last, x, None)[1])
        if out is None:
            out = np.empty((n, final.shape[1]), dtype=final.dtype)
        out[alive] = final
        return RunResult(out, exit_index)

    def run_backbone(self, x: np.ndarray) -> np.ndarray:
        """The plain backbone (all stages in one graph, no exits): the full network and speed baseline."""
        if self.check_inputs:
            self.check(x)
        return _finite(self.backbone(x=x)["logits"])


def _finite(logits: np.ndarray) -> np.ndarray:
    # A NaN score compares False and would be silently routed onwards; refuse it instead.
    if not bool(np.isfinite(logits).all()):
        raise RunnerInputError(NAN_MESSAGE)
    return logits
