"""Adaptive inference on an exported model with onnxruntime and numpy only: no torch at run time.

`bofexits.deploy.onnx.export_onnx` writes one ONNX graph per stage+exit pair, the final stage, the
plain backbone, a `manifest.json` and a copy of this file (`bofexits_deploy.py`), so an export
directory runs anywhere numpy and onnxruntime install::

    import sys; sys.path.insert(0, "export_dir")
    from bofexits_deploy import OnnxAdaptiveRunner
    runner = OnnxAdaptiveRunner("export_dir", threads=1)
    result = runner(runner.preprocess(uint8_images))   # (N, H, W[, C]) at the model's size
    result.predictions, result.exit_index

The stopping rule is the calibrated one of `bofexits.policies` (scores in `confidence`,
thresholds in `calibrated_thresholds`), written again in numpy with the same float32
arithmetic; `tests/test_deploy.py` checks both against the PyTorch functions. This module
imports only the standard library, numpy and (when a runner is built) onnxruntime.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # inside the package: the library's error types, so `bofexits` callers catch one family
    from bofexits.errors import BofexitsError as _Base
    from bofexits.errors import CheckpointError as _BadFile
    from bofexits.errors import InputError as _BadInput
except ImportError:  # the standalone copy in an export directory

    class _Base(Exception):  # type: ignore[no-redef]
        """Base class of every error raised here."""

    class _BadFile(_Base):  # type: ignore[no-redef]
        """A file is missing, corrupt or inconsistent."""

    class _BadInput(_Base, ValueError):  # type: ignore[no-redef]
        """An array has the wrong shape, dtype or non-finite values."""


__all__ = [
    "FORMAT",
    "MANIFEST",
    "RUNNER_FILE",
    "SCORES",
    "VARIANTS",
    "VERSION",
    "DeployError",
    "ManifestError",
    "MissingDependencyError",
    "OnnxAdaptiveRunner",
    "RunResult",
    "RunnerInputError",
    "calibrated_thresholds",
    "confidence",
    "load_manifest",
    "preprocess",
    "sha256_file",
]

FORMAT = "bofexits-onnx"
VERSION = 1
MANIFEST = "manifest.json"
RUNNER_FILE = "bofexits_deploy.py"
SCORES: tuple[str, ...] = ("max_logit", "max_prob", "margin", "neg_entropy")
VARIANTS: tuple[str, ...] = ("mean", "quantile", "conditional")
_GRID = 1001  # quantile levels 0, 0.001, ..., 1, as in bofexits.policies.calibrated
NAN_MESSAGE = "an exit produced NaN or inf logits; the weights are broken (re-export from a good checkpoint)"


class DeployError(_Base):
    """Base class of the runner's errors."""


class ManifestError(DeployError, _BadFile):
    """The export directory is incomplete, corrupt or its manifest does not match its graphs."""


class RunnerInputError(DeployError, _BadInput):
    """An input array has the wrong type, shape or dtype, or holds NaN/inf."""


class MissingDependencyError(DeployError, ImportError):
    """onnxruntime is not installed."""


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "running an ONNX export needs onnxruntime: `pip install onnxruntime` "
            "(or `pip install bofexits[deploy]`)"
        ) from exc
    return onnxruntime


# ---------------------------------------------------------------- the rule, in numpy


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def confidence(logits: np.ndarray, score: str) -> np.ndarray:
    """Per-sample confidence of an exit: `bofexits.policies.confidence` in numpy.

    Args:
        logits: (B, classes) float32.
        score: "max_logit", "max_prob", "margin" (top-1 minus top-2 probability) or
            "neg_entropy" (minus the softmax entropy).

    Returns:
        (B,) scores, larger meaning more confident.

    >>> confidence(np.array([[2.0, 0.0]], dtype=np.float32), "max_logit").tolist()
    [2.0]
    """
    if score == "max_logit":
        return logits.max(1)
    if score == "max_prob":
        return _softmax(logits).max(1)
    if score == "margin":
        top2 = np.partition(_softmax(logits), -2, axis=1)[:, -2:]  # (B, 2): second, first
        return top2[:, 1] - top2[:, 0]
    if score == "neg_entropy":
        shifted = logits - logits.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return (np.exp(logp) * logp).sum(1)
    raise DeployError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def _score_one(logits: np.ndarray, score: str) -> float:
    """`confidence` of a (1, classes) row as a float, in fewer numpy calls for the common scores.

    The top softmax probability is exp(0) / sum = 1 / sum(exp(x - max)), the same float32 value.
    """
    row = logits[0]
    if score == "max_logit":
        return float(row.max())
    if score == "max_prob":
        return float(np.float32(1.0) / np.exp(row - row.max()).sum())
    return float(confidence(logits, score)[0])


def calibrated_thresholds(
    means: Sequence[float],
    quantiles: np.ndarray,
    beta: float,
    variant: str,
    conditional: np.ndarray | None = None,
) -> list[float]:
    """Threshold per early exit for knob `beta`: `bofexits.policies.calibrated_thresholds` in numpy.

    "mean": beta * mean_i; "quantile": the beta-quantile of exit i's calibration scores;
    "conditional": the beta-quantile over the calibration samples that reach exit i (the
    precomputed `conditional` table). Both tables are interpolated linearly on their 1001-level
    grid (beta = 0: -inf, every sample stops at exit 1). Computed in float32 like the PyTorch
    version, so both give the same floats.

    >>> calibrated_thresholds([2.0, 4.0], np.zeros((2, 1001), np.float32), 1.5, "mean")
    [3.0, 6.0]
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta != beta:
        raise DeployError(f"beta must be a number, got {beta!r}")
    if variant == "mean":
        m = np.asarray(means, dtype=np.float32)
        if beta < 0:
            raise DeployError(f"beta must be >= 0 for the mean variant, got {beta}")
        if bool((m <= 0).any()):
            raise DeployError(f"the mean variant needs positive mean scores, got {m.tolist()}")
        return [float(v) for v in np.float32(beta) * m]
    if variant not in VARIANTS:
        raise DeployError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0.0 <= beta <= 1.0:
        raise DeployError(f"beta must be in [0, 1] for the {variant} variant, got {beta}")
    table = quantiles if variant == "quantile" else conditional
    if table is None:
        raise DeployError(
            "the export has no statistics for the conditional variant; re-export with a newer bofexits"
        )
    q = np.asarray(table, dtype=np.float32)
    if beta == 0.0:
        return [float("-inf")] * q.shape[0]
    pos = beta * (_GRID - 1)
    lo = int(pos)
    hi = min(lo + 1, _GRID - 1)
    frac = pos - lo
    return [float(v) for v in q[:, lo] * np.float32(1 - frac) + q[:, hi] * np.float32(frac)]


# ---------------------------------------------------------------- the export directory


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (how the manifest pins each graph)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(export_dir: str | Path, *, verify_files: bool = True) -> dict[str, Any]:
    """Read and check `manifest.json`: format, version, required keys and every graph's SHA-256.

    Raises:
        ManifestError: the directory or manifest is missing, malformed, from another format
            version, or a graph file is missing or differs from the one the manifest describes.
    """
    root = Path(export_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{root} is not a bofexits export directory (no {MANIFEST}); create one with `bofexits export`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is unreadable or not JSON ({exc}); re-export the model") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ManifestError(
            f"{path} has format {found!r}, expected {FORMAT!r}; re-export with `bofexits export`"
        )
    if manifest.get("version") != VERSION:
        raise ManifestError(
            f"{path} has version {manifest.get('version')!r}; this runner reads version {VERSION}: re-export"
        )
    missing = [
        k
        for k in (
            "layout",
            "num_exits",
            "graphs",
            "backbone",
            "policy",
            "calibration",
            "classes",
            "preprocessing",
        )
        if k not in manifest
    ]
    if missing:
        raise ManifestError(f"{path} lacks {missing}; it is truncated or hand-edited: re-export the model")
    if verify_files:
        for entry in [*manifest["graphs"], manifest["backbone"]]:
            file = root / str(entry.get("file", ""))
            if not file.is_file():
                raise ManifestError(f"graph file {file} named in {path} is missing; re-export the model")
            digest = sha256_file(file)
            if digest != entry.get("sha256"):
                raise ManifestError(
                    f"{file} does not match {path} (sha256 {digest[:12]}... vs {str(entry.get('sha256'))[:12]}...); "
                    "the graph or the manifest was replaced: re-export the model"
                )
    return manifest


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


# Per role: (required inputs, allowed inputs, required outputs, allowed outputs).
_NAMES: dict[str, tuple[set[str], set[str], set[str], set[str]]] = {
    "block": ({"x"}, {"x", "state"}, {"features", "logits"}, {"features", "logits", "next_state"}),
    "stage": ({"x"}, {"x"}, {"features"}, {"features"}),
    "exit": ({"features"}, {"features", "state"}, {"logits"}, {"logits", "next_state"}),
    "final": ({"x"}, {"x"}, {"logits"}, {"logits"}),
    "backbone": ({"x"}, {"x"}, {"logits"}, {"logits"}),
}


class _Graph:
    """One ONNX session and the names the manifest gives its inputs and outputs."""

    def __init__(
        self, ort: Any, root: Path, entry: dict[str, Any], options: Any, providers: list[str]
    ) -> None:
        self.name = str(entry["name"])
        self.role = str(entry["role"])
        self.index = int(entry.get("index", -1))
        self.inputs = [str(t["name"]) for t in entry["inputs"]]
        self.outputs = [str(t["name"]) for t in entry["outputs"]]
        try:
            self.session = ort.InferenceSession(str(root / entry["file"]), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ManifestError(
                f"onnxruntime cannot load {root / entry['file']} ({exc}); re-export the model"
            ) from exc
        self._check(entry["inputs"], self.session.get_inputs(), "inputs")
        self._check(entry["outputs"], self.session.get_outputs(), "outputs")

    def _check(self, declared: list[dict[str, Any]], actual: Sequence[Any], what: str) -> None:
        """Names in order, ranks and every dimension both sides know must agree (batch is dynamic)."""
        want = [(str(t["name"]), list(t["shape"])) for t in declared]
        got = [(a.name, list(a.shape)) for a in actual]
        same = len(want) == len(got) and all(
            wn == gn
            and len(ws) == len(gs)
            and all(
                not (isinstance(w, int) and isinstance(g, int)) or w == g for w, g in zip(ws, gs, strict=True)
            )
            for (wn, ws), (gn, gs) in zip(want, got, strict=False)
        )
        if not same or any(a.type != "tensor(float)" for a in actual):
            raise ManifestError(
                f"graph {self.name}: the manifest declares {what} {want}, the graph has {got}; "
                "the manifest belongs to another export: re-export the model"
            )

    def __call__(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))


class OnnxAdaptiveRunner:
    """Real adaptive inference on an export directory: later graphs never run for samples that stop.

    Batch 1 returns at the first exit whose score passes its threshold; in batches, samples
    that stop leave the batch and later graphs only see the rest (outputs in input order).

    Args:
        export_dir: a directory written by `bofexits.deploy.onnx.export_onnx`.
        threads: onnxruntime intra-op threads of each graph's session (default 1). Every stage
            graph has its own session and thread pool; with two threads per pool the pools
            contend for the cores (demo network, 2-core CPU, batch 1: 475 us per image with 2,
            239 us with 1). None: onnxruntime's default, all cores.
        beta: override the manifest's knob (thresholds recomputed from its calibration).
        check_inputs: validate type, shape, dtype and finiteness of every input.
        providers: onnxruntime execution providers (default CPU).
    """

    def __init__(
        self,
        export_dir: str | Path,
        *,
        threads: int | None = 1,
        beta: float | None = None,
        check_inputs: bool = True,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        ort = _onnxruntime()
        self.export_dir = Path(export_dir)
        self.manifest = load_manifest(self.export_dir)
        m = self.manifest
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise DeployError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.num_exits = int(m["num_exits"])
            self.classes = [str(c) for c in m["classes"]]
            pre = m["preprocessing"]
            self.input_shape = tuple(int(d) for d in pre["input_shape"])
            self.mean = np.asarray(pre["mean"], dtype=np.float32)
            self.std = np.asarray(pre["std"], dtype=np.float32)
            self.color_mode: str | None = pre.get("color_mode")  # "L", "RGB", or None (other channel counts)
            policy, cal = m["policy"], m["calibration"]
            self.score = str(policy["score"])
            self.variant = str(policy["variant"])
            self._means = [float(v) for v in cal["means"]]
            self._quantiles = np.asarray(cal["quantiles"], dtype=np.float32)
            cond = cal.get("conditional")  # +-inf arrive as the strings "inf" / "-inf"
            self._conditional = None if cond is None else np.asarray(cond, dtype=np.float32)
            manifest_beta = float(policy["beta"])
            graphs = [_Graph(ort, self.export_dir, g, options, list(providers)) for g in m["graphs"]]
            self.backbone = _Graph(ort, self.export_dir, m["backbone"], options, list(providers))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"{self.export_dir / MANIFEST} is malformed ({exc!r}); re-export the model"
            ) from exc
        tables = [t.shape for t in (self._quantiles, self._conditional) if t is not None]
        if self.score not in SCORES or any(t != (self.num_exits - 1, _GRID) for t in tables):
            raise ManifestError(
                f"{self.export_dir / MANIFEST}: score {self.score!r} or calibration shapes {tables} do not fit "
                f"{self.num_exits} exits; re-export the model"
            )
        self.graphs = graphs
        self._steps = self._build_steps(m["layout"])
        self.check_inputs = check_inputs
        self.set_beta(manifest_beta if beta is None else beta)

    def _build_steps(self, layout: str) -> list[Callable[[np.ndarray, np.ndarray | None], tuple[Any, ...]]]:
        for g in [*self.graphs, self.backbone]:
            names = _NAMES.get(g.role)
            if names is None or not (
                names[0] <= set(g.inputs) <= names[1] and names[2] <= set(g.outputs) <= names[3]
            ):
                raise ManifestError(
                    f"{self.export_dir / MANIFEST}: graph {g.name} (role {g.role!r}) has inputs {g.inputs} and "
                    f"outputs {g.outputs}, which this runner cannot drive; re-export the model"
                )
        for g in (self.graphs[0], self.backbone):
            if list(g.session.get_inputs()[0].shape[1:]) != list(self.input_shape):
                raise ManifestError(
                    f"{self.export_dir / MANIFEST}: preprocessing says inputs are {list(self.input_shape)}, graph "
                    f"{g.name} reads {g.session.get_inputs()[0].shape[1:]}; re-export the model"
                )
        by_role: dict[tuple[str, int], _Graph] = {(g.role, g.index): g for g in self.graphs}
        last = self.num_exits - 1
        final = by_role.get(("final", last))
        if final is None or len(self.graphs) != (last + 1 if layout == "fused" else 2 * last + 1):
            raise ManifestError(f"{self.export_dir / MANIFEST}: graphs do not cover {self.num_exits} exits")
        self.final = final
        steps = []
        for i in range(last):
            if layout == "fused":
                block = by_role.get(("block", i))
                if block is None:
                    raise ManifestError(f"{self.export_dir / MANIFEST}: no graph for stage+exit {i}")
                steps.append(self._fused_step(block))
            elif layout == "separate":
                stage, head = by_role.get(("stage", i)), by_role.get(("exit", i))
                if stage is None or head is None:
                    raise ManifestError(f"{self.export_dir / MANIFEST}: no graph for stage {i} or exit {i}")
                steps.append(self._separate_step(stage, head))
            else:
                raise ManifestError(f"{self.export_dir / MANIFEST}: unknown layout {layout!r}")
        return steps

    @staticmethod
    def _fused_step(block: _Graph) -> Callable[[np.ndarray, np.ndarray | None], tuple[Any, ...]]:
        takes_state = "state" in block.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            out = block(x=x, state=state) if takes_state and state is not None else block(x=x)
            return out["features"], out["logits"], out.get("next_state")

        return step

    @staticmethod
    def _separate_step(
        stage: _Graph, head: _Graph
    ) -> Callable[[np.ndarray, np.ndarray | None], tuple[Any, ...]]:
        takes_state = "state" in head.inputs

        def step(x: np.ndarray, state: np.ndarray | None) -> tuple[Any, ...]:
            f = stage(x=x)["features"]
            out = head(features=f, state=state) if takes_state and state is not None else head(features=f)
            return f, out["logits"], out.get("next_state")

        return step

    # ------------------------------------------------------------ policy

    def set_beta(self, beta: float) -> None:
        """Use knob `beta` from now on (thresholds from the manifest's calibration statistics)."""
        self.thresholds = calibrated_thresholds(
            self._means, self._quantiles, beta, self.variant, self._conditional
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
        """Adaptive inference on a (B, C, H, W) float32 batch; B == 1 takes the scalar fast path."""
        if self.check_inputs:
            self.check(x)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            return RunResult(logits, np.array([index], dtype=np.int64))
        return self.run_batched(x)

    def run_single(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One sample: (1, classes) logits and the 0-based exit it took. No input checks."""
        state = None
        for i, step in enumerate(self._steps):
            x, logits, state = step(x, state)
            _finite(logits)
            if _score_one(logits, self.score) >= self.thresholds[i]:
                return logits, i
        return _finite(self.final(x=x)["logits"]), len(self._steps)

    def run_batched(self, x: np.ndarray) -> RunResult:
        """A batch where stopped samples leave and the rest go on. No input checks."""
        n, last = x.shape[0], len(self._steps)
        out: np.ndarray | None = None
        exit_index = np.full(n, last, dtype=np.int64)
        alive = np.arange(n)
        state: np.ndarray | None = None
        for i, step in enumerate(self._steps):
            x, logits, state = step(x, state)
            _finite(logits)
            if out is None:
                out = np.empty((n, logits.shape[1]), dtype=logits.dtype)
            stop = confidence(logits, self.score) >= self.thresholds[i]
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
        final = _finite(self.final(x=x)["logits"])
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
