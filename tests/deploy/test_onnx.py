"""Export: manifest contents, graph validity, parity of both layouts and TorchScript, atomic failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bofexits._io import jsonable
from bofexits.config import TrainConfig
from bofexits.data import FASHION_MNIST_CLASSES
from bofexits.deploy import runner as deploy
from bofexits.deploy.info import DEFAULT_BETA
from bofexits.deploy.onnx import ExportError, export_onnx
from bofexits.deploy.torchscript import export_torchscript
from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration, calibrated_thresholds
from bofexits.training.checkpoint import update_checkpoint
from tests.helpers import fit_calibration, write_tiny_checkpoint

SHAPE = (2, 8, 8)  # conftest's tiny network


@torch.library.custom_op("bofexits_test::shift", mutates_args=())
def _shift(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@_shift.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class CustomOp(nn.Module):
    """A layer no ONNX exporter knows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shift(x)


class DataDependent(nn.Module):
    """Reads a value out of the tensor: a trace bakes it in as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + float(x.mean())


def _net(factory: Callable[..., MultiExitNetwork], **kwargs: Any) -> tuple[MultiExitNetwork, ExitCalibration]:
    net = factory(dtype=torch.float32, **kwargs)
    with torch.no_grad():
        cal = fit_calibration(net(torch.randn(128, *SHAPE, generator=torch.Generator().manual_seed(3))))
    return net, cal


def _x(n: int) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(4))


def _assert_parity(
    run: Callable[[np.ndarray], Any], net: MultiExitNetwork, cal: ExitCalibration, beta: float
) -> None:
    rt = AdaptiveRuntime(net, CalibratedThreshold(cal, beta, "quantile"))
    x = _x(40)
    want = rt(x)
    got = run(x.numpy())
    np.testing.assert_array_equal(got.exit_index, want.exit_index.numpy())
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=1e-4, rtol=0)
    assert len(set(got.exit_index.tolist())) >= 3
    for i in range(0, 40, 4):
        one = run(x[i : i + 1].numpy())
        assert int(one.exit_index[0]) == int(want.exit_index[i])
        np.testing.assert_allclose(one.logits[0], want.logits[i].numpy(), atol=1e-4, rtol=0)


def test_manifest_describes_every_graph(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net, cal = _net(tiny_net_factory, spatial_level=1)
    out = export_onnx(net, tmp_path / "exp", calibration=cal, beta=0.5, variant="quantile", exporter="legacy")
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "bofexits-onnx" and m["version"] == 1 and m["layout"] == "fused"
    assert [g["name"] for g in m["graphs"]] == ["block_0", "block_1", "block_2", "final"]
    assert m["graphs"][0]["inputs"] == [{"name": "x", "shape": ["batch", *SHAPE], "dtype": "float32"}]
    assert [t["name"] for t in m["graphs"][1]["inputs"]] == ["x", "state"]  # the first exit has no state
    assert [t["name"] for t in m["graphs"][1]["outputs"]] == ["features", "logits", "next_state"]
    for g in [*m["graphs"], m["backbone"]]:
        assert deploy.sha256_file(out / g["file"]) == g["sha256"]
        onnx.checker.check_model(onnx.load(str(out / g["file"])))
    assert m["policy"]["beta"] == 0.5 and m["policy"]["beta_source"] == "argument"
    assert m["policy"]["thresholds"] == calibrated_thresholds(cal, 0.5, "quantile")
    assert np.array_equal(np.array(m["calibration"]["quantiles"], np.float32), cal.quantiles.numpy())
    assert m["classes"] == ["0", "1", "2", "3", "4"]
    assert m["preprocessing"]["mean"] == [0.0, 0.0] and m["preprocessing"]["color_mode"] is None
    assert m["runner"] == deploy.RUNNER_FILE == "bofexits_deploy"
    shipped, source = out / deploy.RUNNER_FILE, Path(deploy.__file__).parent  # the runner as a package
    assert sorted(p.name for p in shipped.iterdir()) == sorted(["__init__.py", *deploy.RUNNER_MODULES])
    assert (shipped / "__init__.py").read_bytes() == Path(deploy.__file__).read_bytes()
    for name in deploy.RUNNER_MODULES:
        assert (shipped / name).read_bytes() == (source / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no staging folder left


def test_separate_layout_runs_like_the_runtime(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net, cal = _net(tiny_net_factory, shared_classifier=False)
    out = export_onnx(
        net,
        tmp_path / "e",
        calibration=cal,
        beta=0.5,
        variant="quantile",
        exporter="legacy",
        layout="separate",
    )
    names = [g["name"] for g in json.loads((out / "manifest.json").read_text())["graphs"]]
    assert names == ["stage_0", "exit_0", "stage_1", "exit_1", "stage_2", "exit_2", "final"]
    _assert_parity(deploy.OnnxAdaptiveRunner(out, threads=1), net, cal, 0.5)


def test_torchscript_export_runs_like_the_runtime(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net, cal = _net(tiny_net_factory, aggregation="sum")
    out = export_torchscript(net, tmp_path / "ts", calibration=cal, beta=0.5, variant="quantile")
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "bofexits-torchscript"
    assert all(deploy.sha256_file(out / f["file"]) == f["sha256"] for f in m["files"].values())
    adaptive = torch.jit.load(str(out / "adaptive.pt"))

    def run(x: np.ndarray) -> deploy.RunResult:
        logits, index = adaptive(torch.from_numpy(x))
        return deploy.RunResult(logits.numpy(), index.numpy())

    _assert_parity(run, net, cal, 0.5)
    backbone = torch.jit.load(str(out / "backbone.pt"))
    torch.testing.assert_close(backbone(_x(3)), net.forward_backbone(_x(3)), atol=1e-4, rtol=0)


def test_manifest_on_disk_is_the_typed_manifest(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    """Both exporters write `Manifest.to_dict()` and the readers get the same dataclass back."""
    net, cal = _net(tiny_net_factory, aggregation="sum")
    onnx_dir = export_onnx(
        net, tmp_path / "o", calibration=cal, beta=0.0, variant="conditional", exporter="legacy"
    )
    ts_dir = export_torchscript(net, tmp_path / "t", calibration=cal, beta=0.0, variant="conditional")
    for out, kind in ((onnx_dir, deploy.OnnxManifest), (ts_dir, deploy.TorchScriptManifest)):
        on_disk = json.loads((out / "manifest.json").read_text())
        manifest = deploy.read_manifest(out)
        digest = on_disk.pop(deploy.CONTENT_SHA256)
        assert type(manifest) is kind and jsonable(manifest.to_dict()) == on_disk
        assert digest == deploy.manifest_digest(on_disk)
        assert manifest.policy.thresholds == (float("-inf"),) * 3  # beta = 0, stored as "-inf"
        assert manifest.calibration.quantiles == tuple(map(tuple, cal.quantiles.tolist()))
    assert deploy.load_manifest(onnx_dir) == deploy.OnnxAdaptiveRunner(onnx_dir).manifest


def test_torchscript_refuses_a_trace_that_differs_from_pytorch(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    """The traced pieces are checked on another batch size, as the ONNX graphs are."""
    net, cal = _net(tiny_net_factory)
    net.stages[1].append(DataDependent())  # type: ignore[operator]
    with pytest.raises(ExportError, match="stage 2 of 4 or its exit computes .* differently in TorchScript"):
        export_torchscript(net, tmp_path / "ts", calibration=cal)
    assert not (tmp_path / "ts").exists()


@pytest.mark.parametrize(
    "layer, message", [(CustomOp(), "bofexits_test::shift"), (DataDependent(), "differently")]
)
def test_unexportable_stage_is_named_and_leaves_nothing(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path, layer: nn.Module, message: str
) -> None:
    net, cal = _net(tiny_net_factory)
    net.stages[1].append(layer)  # type: ignore[operator]
    (tmp_path / "out").mkdir()  # an empty folder may be exported into
    with pytest.raises(ExportError, match=message) as info:
        export_onnx(net, tmp_path / "out", calibration=cal, exporter="legacy")
    assert "stage 2 of 4" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_existing_folders_are_kept_unless_asked(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net, cal = _net(tiny_net_factory)
    out = export_onnx(net, tmp_path / "e", calibration=cal, beta=0.5, variant="quantile", exporter="legacy")
    with pytest.raises(ConfigError, match="--force"):
        export_onnx(net, out, calibration=cal, exporter="legacy")
    bad = _net(tiny_net_factory)[0]
    bad.stages[0].append(CustomOp())  # type: ignore[operator]
    with pytest.raises(ExportError):
        export_onnx(bad, out, calibration=cal, exporter="legacy", overwrite=True)
    assert (
        json.loads((out / "manifest.json").read_text())["policy"]["beta"] == 0.5
    )  # the old export is intact
    export_onnx(net, out, calibration=cal, beta=0.25, exporter="legacy", overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["policy"]["beta"] == 0.25
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a bofexits export"):
        export_onnx(net, tmp_path / "mine", calibration=cal, exporter="legacy", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "mine"]


def _checkpoint(tmp_path: Path, data_dir: Path) -> Path:
    """A checkpoint of a small vgg28 (untrained: export does not care) calibrated on the fake data."""
    return write_tiny_checkpoint(tmp_path / "checkpoint.pt", data_dir)


def test_checkpoint_export_takes_the_tuned_beta(fake_data: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, fake_data)
    out = export_onnx(ckpt, tmp_path / "e", exporter="legacy")
    m = json.loads((out / "manifest.json").read_text())
    variant = TrainConfig().variant
    assert (m["policy"]["variant"], m["policy"]["beta"], m["policy"]["beta_source"]) == (
        variant,
        DEFAULT_BETA[variant],
        "default",
    )
    assert m["classes"] == list(FASHION_MNIST_CLASSES)
    assert m["preprocessing"] | {"steps": ""} == {
        "input_shape": [1, 28, 28],
        "color_mode": "L",
        "scale": 255.0,
        "mean": [0.286],
        "std": [0.353],
        "steps": "",
    }
    update_checkpoint(ckpt, tuned={"beta": 0.25, "variant": variant, "score": "max_prob", "target": "x"})
    export_torchscript(ckpt, out, overwrite=True)
    m = json.loads((out / "manifest.json").read_text())
    assert (m["policy"]["beta"], m["policy"]["beta_source"], m["format"]) == (
        0.25,
        "tuned",
        "bofexits-torchscript",
    )
    export_torchscript(ckpt, out, overwrite=True, variant="mean")  # tuned for another variant: not used
    assert json.loads((out / "manifest.json").read_text())["policy"]["beta_source"] == "default"
    with pytest.raises(ConfigError, match="--data-dir"):
        export_torchscript(ckpt, tmp_path / "x", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="beta must be in"):
        export_torchscript(ckpt, tmp_path / "x", beta=2.0)


@pytest.mark.slow
def test_default_dynamo_export_runs_like_the_runtime(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    """The default exporter (torch.export + onnxscript): ~1-2 s per graph, so one small case."""
    net, cal = _net(tiny_net_factory)
    out = export_onnx(net, tmp_path / "d", calibration=cal, beta=0.5, variant="quantile")
    assert json.loads((out / "manifest.json").read_text())["producer"]["exporter"] == "dynamo"
    _assert_parity(deploy.OnnxAdaptiveRunner(out, threads=1), net, cal, 0.5)
