"""The onnxruntime runner: same rule maths as the policies, same results as AdaptiveRuntime, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bofexits.deploy import manifest, rule
from bofexits.deploy import runner as deploy
from bofexits.deploy.onnx import export_onnx
from bofexits.deploy.runner import ManifestError, MissingDependencyError, OnnxAdaptiveRunner, RunnerInputError
from bofexits.errors import InputError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration, calibrated_thresholds, confidence
from tests.helpers import fit_calibration

SHAPE = (2, 8, 8)
CLASSES = 5
# Exit-head variants: the frozen forms differ (classifier fold vs histograms, sqrt, sigmoid, pooling).
CONFIGS: dict[str, dict[str, Any]] = {
    "shared-rbf": {"spatial_level": 1},
    "per-exit-logistic": {
        "membership": "logistic",
        "shared_classifier": False,
        "aggregation": "sum",
        "pools": [2, 1, 1],
    },
    "rbf-distance-independent": {"squared": False, "aggregation": "none"},
}


# The rule's variant per export: the conditional table and the plain quantiles both get run.
VARIANTS = {
    "shared-rbf": "quantile",
    "per-exit-logistic": "conditional",
    "rbf-distance-independent": "quantile",
}


def make_net(seed: int = 0, **exit_kwargs: Any) -> MultiExitNetwork:
    """Four float32 stages with BatchNorm (random statistics, so folding matters) and BoF exits."""
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES)),
    ]
    net = MultiExitNetwork(stages, lambda ch: BoFExits(ch, CLASSES, codewords=4, **exit_kwargs), SHAPE)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.eval()
        maps, _ = net.features(torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(seed)))
        net.exits.init_from_features(maps, generator=torch.Generator().manual_seed(seed))
    return net.eval()


def calibrate(net: MultiExitNetwork, score: str = "max_prob") -> ExitCalibration:
    with torch.no_grad():
        x = torch.randn(128, *SHAPE, generator=torch.Generator().manual_seed(10))
        return fit_calibration(net(x), score)


def inputs(n: int, seed: int = 11) -> np.ndarray:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed)).numpy()


_EXPORTS: dict[str, dict[str, Any]] = {}


def _export(config: str, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One legacy-exporter export per exit configuration, made once (test_export covers dynamo)."""
    if config not in _EXPORTS:
        net = make_net(**CONFIGS[config])
        cal = calibrate(net)
        out = factory.mktemp(config) / "export"
        variant = VARIANTS[config]
        export_onnx(net, out, calibration=cal, beta=0.5, variant=variant, exporter="legacy")
        _EXPORTS[config] = {"net": net, "cal": cal, "dir": out, "runner": OnnxAdaptiveRunner(out, threads=1)}
    return _EXPORTS[config]


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each exit configuration: for the parity tests."""
    return _export(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The default configuration: for the tests of checks and errors."""
    return _export("shared-rbf", tmp_path_factory)


def test_names_equal_the_policies() -> None:
    """The runner's copies of the policies' names and grid (it cannot import them: no torch)."""
    from typing import get_args

    from bofexits.policies import calibrated, scores

    assert deploy.SCORES == scores.SCORES == get_args(scores.Score)
    assert deploy.VARIANTS == calibrated.VARIANTS == get_args(calibrated.Variant)
    assert rule._GRID == calibrated._GRID
    assert set(deploy._NAMES) == set(manifest.ROLES)  # the roles the manifest accepts, the runner drives


def test_runner_reexports_the_manifest_and_the_rule() -> None:
    """Names that moved out of runner.py are still `bofexits.deploy.runner`'s (and `bofexits.deploy`'s)."""
    moved = {*manifest.__all__} - {"ROLES"} | {*rule.__all__}
    assert moved <= set(deploy.__all__)
    for name in moved:
        assert getattr(deploy, name) is getattr(manifest if name in manifest.__all__ else rule, name)


def test_the_export_ships_exactly_the_modules_the_runner_imports() -> None:
    """Following runner.py's relative imports gives `RUNNER_MODULES`; nothing imports beyond the
    standard library, numpy and onnxruntime, except the guarded `bofexits.errors` in errors.py."""
    import ast

    folder = Path(deploy.__file__).parent
    todo, seen = ["runner.py"], set()
    while todo:
        file = todo.pop()
        for node in ast.walk(ast.parse((folder / file).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # a module of this folder
                assert node.level == 1 and node.module, (file, node.module)
                if f"{node.module}.py" not in seen:
                    seen.add(f"{node.module}.py")
                    todo.append(f"{node.module}.py")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for top in {n.split(".")[0] for n in names}:
                    allowed = top in sys.stdlib_module_names or top in ("numpy", "onnxruntime")
                    assert allowed or (top == "bofexits" and file == "errors.py"), (file, top)
    assert sorted(seen) == sorted(deploy.RUNNER_MODULES)


def test_scores_match_the_policies() -> None:
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(0)) * 3
    for score in deploy.SCORES:
        want = confidence(logits, score).numpy()
        got = deploy.confidence(logits.numpy(), score)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        ones = [deploy.score_one(logits[i : i + 1].numpy(), score) for i in range(64)]  # the batch-1 path
        np.testing.assert_array_equal(np.array(ones, np.float32), got)


def test_thresholds_equal_the_policies_bit_for_bit() -> None:
    logits = [torch.randn(200, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    labels = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(9))
    for score in ("max_prob", "max_logit"):
        cal = ExitCalibration.fit(logits, score, labels)
        q, m = cal.quantiles.numpy(), cal.means.tolist()
        assert cal.conditional is not None and cal.accuracy is not None
        cond, acc = cal.conditional.numpy(), cal.accuracy.numpy()
        variants = ["quantile", "conditional", "accuracy", *(["mean"] if score == "max_prob" else [])]
        for variant in variants:
            for beta in (0.0, 0.123, 0.4, 0.5, 0.9995, 1.0) if variant != "mean" else (0.5, 1.0, 1.37):
                want = calibrated_thresholds(cal, beta, variant)
                assert deploy.calibrated_thresholds(m, q, beta, variant, cond, acc) == want, (variant, beta)
    with pytest.raises(deploy.DeployError, match="in \\[0, 1\\]"):
        deploy.calibrated_thresholds(m, q, 1.5, "quantile")


def test_batched_and_batch1_equal_the_pytorch_runtime(exported: dict[str, Any]) -> None:
    runner: OnnxAdaptiveRunner = exported["runner"]
    x = inputs(48)
    for beta in (0.5, 0.2):
        rt = AdaptiveRuntime(exported["net"], CalibratedThreshold(exported["cal"], beta, runner.variant))
        want = rt(torch.from_numpy(x))
        got = runner.with_beta(beta)(x)
        np.testing.assert_array_equal(got.exit_index, want.exit_index.numpy())
        np.testing.assert_array_equal(got.predictions, want.predictions.numpy())
        np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=1e-4, rtol=0)
        assert len(set(got.exit_index.tolist())) >= 3  # the routing is exercised, not all at one exit
        for i in range(0, 48, 3):
            logits, index = runner.with_beta(beta).run_single(x[i : i + 1])
            assert index == int(want.exit_index[i])
            np.testing.assert_allclose(logits[0], want.logits[i].numpy(), atol=1e-4, rtol=0)


def test_later_graphs_see_only_the_samples_still_in(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner: OnnxAdaptiveRunner = exported["runner"]
    seen: dict[str, list[int]] = {}
    real = deploy._Graph.__call__

    def spy(self: Any, **feed: np.ndarray) -> dict[str, np.ndarray]:
        seen.setdefault(self.name, []).append(int(feed[next(iter(feed))].shape[0]))
        return real(self, **feed)

    monkeypatch.setattr(deploy._Graph, "__call__", spy)
    result = runner.run_staged(inputs(48))  # the one-graph forms: tests/deploy/test_adaptive_graph.py
    counts = np.bincount(result.exit_index, minlength=4)
    alive = 48 - np.cumsum(counts)  # samples still in after exit i
    assert 0 < alive[0] < 48 and alive[1] > 0  # some leave early, some go on
    expected = {"block_0": [48]}
    expected.update({f"block_{i}": [int(alive[i - 1])] for i in (1, 2) if alive[i - 1] > 0})
    if counts[3]:
        expected["final"] = [int(counts[3])]
    assert seen == expected
    seen.clear()
    runner.run_staged(inputs(1))
    assert seen["block_0"] == [1] and all(v == [1] for v in seen.values())


def test_plain_backbone_is_the_full_network(exported: dict[str, Any]) -> None:
    x = inputs(5)
    want = exported["net"].forward_backbone(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(exported["runner"].run_backbone(x), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, *SHAPE)), "float32"),
        (np.zeros((2, 3, 8, 8), np.float32), "shape"),
        (np.zeros((0, *SHAPE), np.float32), "B >= 1"),
        (np.full((1, *SHAPE), np.nan, np.float32), "NaN"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_inputs_are_refused(one: dict[str, Any], x: Any, message: str) -> None:
    with pytest.raises(RunnerInputError, match=message) as info:
        one["runner"](x)
    assert isinstance(info.value, InputError)  # one error family inside the package


def test_nan_logits_are_refused(one: dict[str, Any]) -> None:
    runner = one["runner"].with_beta(0.5)
    nan = np.full((1, CLASSES), np.nan, np.float32)
    runner._steps = [lambda x, s: (x, np.repeat(nan, x.shape[0], 0), s)] * 3
    for n in (1, 4):  # the staged path; the one-graph forms: test_adaptive_graph.py
        with pytest.raises(RunnerInputError, match="NaN or inf logits"):
            runner.run_staged(inputs(n))


def test_preprocess_matches_the_dataset_arithmetic(one: dict[str, Any]) -> None:
    runner: OnnxAdaptiveRunner = one["runner"]
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 2), dtype=np.uint8)
    x = runner.preprocess(images)
    assert x.shape == (3, *SHAPE) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(
        x, np.zeros((3, *SHAPE), np.float32) + images.transpose(0, 3, 1, 2) / np.float32(255)
    )
    with pytest.raises(RunnerInputError, match="uint8"):
        runner.preprocess(images.astype(np.float32))
    with pytest.raises(RunnerInputError, match="8x8"):
        runner.preprocess(images[:, :4])


def _edit_manifest(src: Path, dst: Path, edit: Any, *, resign: bool = True) -> Path:
    """Copy an export and edit its manifest; `resign` recomputes the content checksum, as a careful
    tamperer would, so the checks behind it (fields, files, thresholds) are what is tested."""
    import shutil

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest, dst)
    if resign:
        manifest[deploy.CONTENT_SHA256] = deploy.manifest_digest(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _swap_graphs(m: dict[str, Any], d: Path) -> None:  # block_1's file under block_0's name, hash updated
    (d / "block_0.onnx").write_bytes((d / "block_1.onnx").read_bytes())
    m["graphs"][0]["sha256"] = deploy.sha256_file(d / "block_0.onnx")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m, d: (d / "block_1.onnx").write_bytes(b"\0" + (d / "block_1.onnx").read_bytes()),
            "does not match",
        ),
        (lambda m, d: (d / "final.onnx").unlink(), "missing"),
        (lambda m, d: m["graphs"][1]["outputs"][0]["shape"].__setitem__(1, 99), "declares outputs"),
        (lambda m, d: m["graphs"][0]["inputs"][0].__setitem__("name", "image"), "declares inputs"),
        (_swap_graphs, "declares inputs"),
        (lambda m, d: m.__setitem__("version", 99), "version 99"),
        (lambda m, d: m.__setitem__("format", "other"), "format 'other'"),
        (lambda m, d: m.pop("calibration"), "lacks \\['calibration'\\]"),
        (lambda m, d: m["calibration"].__setitem__("quantiles", [[0.0]]), "calibration shape"),
        (lambda m, d: m["preprocessing"].__setitem__("input_shape", [1, 8, 8]), "preprocessing says"),
    ],
)
def test_tampered_exports_are_refused(one: dict[str, Any], tmp_path: Path, edit: Any, message: str) -> None:
    bad = _edit_manifest(one["dir"], tmp_path / "bad", edit)
    with pytest.raises(ManifestError, match=message):
        OnnxAdaptiveRunner(bad)


def _reverse_classes(m: dict[str, Any], d: Path) -> None:
    m["classes"].reverse()


def _raise_threshold(m: dict[str, Any], d: Path) -> None:
    m["policy"]["thresholds"][0] = 0.999


@pytest.mark.parametrize("edit", [_reverse_classes, _raise_threshold])
def test_hand_edited_manifest_is_refused_by_its_checksum(
    one: dict[str, Any], tmp_path: Path, edit: Any
) -> None:
    bad = _edit_manifest(one["dir"], tmp_path / "bad", edit, resign=False)
    with pytest.raises(ManifestError, match="edited after export"):
        OnnxAdaptiveRunner(bad)


def test_thresholds_that_disagree_with_the_calibration_are_refused(
    one: dict[str, Any], tmp_path: Path
) -> None:
    bad = _edit_manifest(one["dir"], tmp_path / "bad", _raise_threshold)  # checksum recomputed
    with pytest.raises(
        ManifestError, match="policy.thresholds .* disagree with the thresholds its calibration"
    ):
        OnnxAdaptiveRunner(bad)


def _as_older_export(m: dict[str, Any], d: Path) -> None:
    m.pop(deploy.CONTENT_SHA256)
    m["producer"]["bofexits"] = "0.1.0"  # releases before the checksum wrote none


def test_deleted_checksum_is_refused(one: dict[str, Any], tmp_path: Path) -> None:
    bad = _edit_manifest(
        one["dir"], tmp_path / "bad", lambda m, d: m.pop(deploy.CONTENT_SHA256), resign=False
    )
    with pytest.raises(ManifestError, match="lacks its content_sha256"):
        OnnxAdaptiveRunner(bad)


def test_manifest_of_an_older_release_without_checksum_still_loads(
    one: dict[str, Any], tmp_path: Path
) -> None:
    old = _edit_manifest(one["dir"], tmp_path / "old", _as_older_export, resign=False)
    x = np.random.default_rng(0).standard_normal((5, *one["runner"].input_shape)).astype(np.float32)
    assert OnnxAdaptiveRunner(old)(x).exit_index.tolist() == one["runner"](x).exit_index.tolist()


def test_unreadable_or_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a bofexits export"):
        OnnxAdaptiveRunner(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        OnnxAdaptiveRunner(tmp_path)


def test_missing_onnxruntime_says_how_to_install(
    one: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError, match="pip install onnxruntime"):
        OnnxAdaptiveRunner(one["dir"])


def _run_python(code: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("block", ["torch", "torch and bofexits"])
def test_shipped_runner_needs_no_torch(one: dict[str, Any], block: str) -> None:
    """The `bofexits_deploy` package in the export directory runs with numpy + onnxruntime, without
    importing torch; without bofexits too (a serving machine), its errors then have their own bases."""
    d = one["dir"]
    np.save(d.parent / "x.npy", inputs(6))
    code = textwrap.dedent(
        f"""
        import json, sys
        for name in {block.split(" and ")!r}:
            sys.modules[name] = None  # any attempt to import it fails
        sys.path.insert(0, {str(d)!r})
        import numpy as np
        import bofexits_deploy
        from bofexits_deploy import OnnxAdaptiveRunner
        r = OnnxAdaptiveRunner({str(d)!r}, threads=1)
        x = np.load({str(d.parent / "x.npy")!r})
        res = r(x)
        try:
            r(x[:, :1])
        except bofexits_deploy.RunnerInputError as exc:
            bases = [c.__module__ for c in type(exc).__mro__]
        print(json.dumps({{
            "loaded": sorted(m for m in ("torch", "bofexits") if sys.modules.get(m) is not None),
            "exits": res.exit_index.tolist(),
            "module": r.__module__,
            "file": bofexits_deploy.__file__,
            "library_errors": "bofexits.errors" in bases,
        }}))
        """
    )
    out = _run_python(code)
    assert out == {
        "loaded": ["bofexits"] if block == "torch" else [],  # never torch
        "exits": one["runner"](inputs(6)).exit_index.tolist(),
        "module": "bofexits_deploy",
        "file": str(d / "bofexits_deploy" / "__init__.py"),
        "library_errors": block == "torch",
    }


def test_old_single_file_exports_still_load(one: dict[str, Any], tmp_path: Path) -> None:
    """Exports before the runner became a package name "bofexits_deploy.py"; the field is informational."""
    old = _edit_manifest(
        one["dir"], tmp_path / "old", lambda m, d: m.__setitem__("runner", "bofexits_deploy.py")
    )
    runner = OnnxAdaptiveRunner(old)
    assert runner.manifest.runner == "bofexits_deploy.py"
    x = inputs(5)
    assert runner(x).exit_index.tolist() == one["runner"](x).exit_index.tolist()


def test_package_runner_needs_no_torch(one: dict[str, Any]) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None  # any attempt to import torch fails
        import numpy as np
        from bofexits.deploy.runner import OnnxAdaptiveRunner
        OnnxAdaptiveRunner({str(one["dir"])!r})(np.zeros((2, 2, 8, 8), np.float32))
        print(json.dumps({{"torch": sys.modules.get("torch") is not None}}))
        """
    )
    assert _run_python(code) == {"torch": False}
