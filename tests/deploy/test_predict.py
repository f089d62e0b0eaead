"""`bofexits predict` / `export` on real PNG and JPEG files, with a checkpoint and with an export folder."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bofexits.cli import main
from bofexits.data import FASHION_MNIST_CLASSES
from bofexits.deploy.info import deploy_info
from bofexits.deploy.predict import Prediction, format_predictions, load_image, onnx_providers, predict_files
from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from tests.helpers import tiny_run_with_export

N_IMAGES = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]) -> dict[str, Any]:
    """A checkpoint (small vgg28, calibrated, untrained: predict does not care), its export, PNGs."""
    root = tmp_path_factory.mktemp("predict")
    data = write_fake_data(root / "data", n_train=64, n_test=16)
    return tiny_run_with_export(root, data, N_IMAGES)


def _reference(setup: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Classes and 1-based exits of AdaptiveRuntime on the dataset's own normalised tensors."""
    model, info = deploy_info(setup["ckpt"])
    rt = AdaptiveRuntime(model, info.policy)
    x, _ = next(setup["test"].batches(N_IMAGES, shuffle=False))
    result = rt(x)
    return result.predictions.tolist(), (result.exit_index + 1).tolist()


@pytest.mark.parametrize("source", ["ckpt", "export"])
def test_png_predictions_equal_the_runtime_on_the_dataset(setup: dict[str, Any], source: str) -> None:
    classes, exits = _reference(setup)
    predictions, about = predict_files(setup[source], setup["pngs"], threads=1)
    assert [p.class_index for p in predictions] == classes
    assert [p.exit for p in predictions] == exits
    assert len(set(exits)) >= 2  # several exits taken, so the exit numbers are really compared
    assert about["backend"] == ("pytorch" if source == "ckpt" else "onnxruntime")
    for p in predictions:
        assert p.error is None and p.class_name == FASHION_MNIST_CLASSES[p.class_index or 0]
        assert 0.1 <= (p.confidence or 0) <= 1 and (p.ms or 0) > 0 and p.num_exits == 4


def test_other_modes_convert_to_the_same_pixels(setup: dict[str, Any]) -> None:
    root = setup["root"]
    grey = np.asarray(Image.open(setup["pngs"][0]))
    files = {
        "16bit.png": Image.fromarray(grey.astype(np.uint16) * 257),  # full 16-bit range, not clipped
        "palette.png": Image.fromarray(grey).convert("P"),
        "rgb.png": Image.fromarray(np.stack([grey] * 3, -1)),
        "rgba.png": Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 255)])),
        "big.png": Image.fromarray(np.kron(grey, np.ones((2, 2), np.uint8))),  # resized back down
    }
    for name, image in files.items():
        image.save(root / name)
        got = load_image(root / name, (28, 28), "L")
        assert got.shape == (28, 28, 1) and got.dtype == np.uint8
        if name != "big.png":
            np.testing.assert_array_equal(got[..., 0], grey, err_msg=name)
    small = load_image(root / "big.png", (28, 28), "L")[..., 0].astype(float)  # bilinear, antialiased: blurs
    assert abs(small.mean() - grey.mean()) < 1 and np.corrcoef(small.ravel(), grey.ravel())[0, 1] > 0.95
    Image.fromarray(np.stack([grey] * 3, -1)).save(root / "photo.jpg", quality=95)
    assert np.abs(load_image(root / "photo.jpg", (28, 28), "L")[..., 0].astype(int) - grey).mean() < 3
    assert load_image(root / "palette.png", (28, 28), "RGB").shape == (28, 28, 3)


def test_bad_files_get_their_own_error(setup: dict[str, Any]) -> None:
    root = setup["root"]
    (root / "notes.png").write_text("not an image")
    Image.new("L", (5, 5)).save(root / "tiny.png")
    Image.fromarray(np.full((28, 28), 3.5, np.float32)).save(root / "float.tiff")  # floats are read as 0..1
    files = [
        root / "missing.png",
        root / "notes.png",
        setup["pngs"][0],
        root / "tiny.png",
        root / "float.tiff",
    ]
    predictions, _ = predict_files(setup["export"], files, threads=1)
    errors = [p.error or "" for p in predictions]
    assert "does not exist" in errors[0]
    assert "not an image" in errors[1]
    assert predictions[2].error is None and predictions[2].class_name is not None
    assert "5x5" in errors[3] and "28x28" in errors[3]
    assert "floating-point" in errors[4]


def test_cli_prints_a_line_per_image_and_json(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    pngs = [str(p) for p in setup["pngs"][:2]]
    assert main(["-q", "predict", str(setup["export"]), *pngs, "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = r"(.+): (.+) \(exit (\d) of 4, confidence (0\.\d{3}|1\.000), (\d+\.\d\d) ms\)"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == pngs  # type: ignore[union-attr]
    assert main(["-q", "predict", str(setup["ckpt"]), *pngs, "missing.png", "--json"]) == 1  # one file failed
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "pytorch" and out["num_exits"] == 4 and out["variant"] == "quantile"
    assert [p["file"] for p in out["predictions"]] == [*pngs, "missing.png"]
    assert (
        out["predictions"][0]["class_name"] in FASHION_MNIST_CLASSES
        and 1 <= out["predictions"][0]["exit"] <= 4
    )
    assert "does not exist" in out["predictions"][2]["error"]


def test_cli_export_then_predict(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, out = str(setup["ckpt"]), str(setup["root"] / "cli_export")
    assert (
        main(["-q", "export", ckpt, "--format", "onnx", out, "--onnx-exporter", "legacy", "--beta", "0.3"])
        == 0
    )
    assert "beta=0.3 (argument)" in capsys.readouterr().out
    assert main(["-q", "export", ckpt, out, "--onnx-exporter", "legacy"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["-q", "predict", out, str(setup["pngs"][0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["beta"] == 0.3
    assert main(["-q", "export", ckpt, out, "--format", "torchscript", "--force"]) == 0
    capsys.readouterr()
    assert main(["-q", "predict", out, str(setup["pngs"][0])]) == 2
    assert "TorchScript export" in capsys.readouterr().err


def test_format_predictions_reports_errors_inline() -> None:
    text = format_predictions([Prediction("a.png", error="a.png does not exist; check the path")], {})
    assert text == "a.png: error: a.png does not exist; check the path"


def test_onnx_providers_for_each_device() -> None:
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert onnx_providers("cpu", [cuda, cpu]) == [cpu] and onnx_providers("auto", [cpu]) == [cpu]
    assert (
        onnx_providers("auto", [cuda, cpu])
        == onnx_providers("cuda", [cuda, cpu])
        == [(cuda, {"device_id": 0}), cpu]
    )
    assert onnx_providers("cuda:2", [cpu], strict=False) == [cpu]  # benchmarks: onnxruntime on the CPU
    with pytest.raises(ConfigError, match="has no CUDAExecutionProvider .*install onnxruntime-gpu"):
        onnx_providers("cuda:2", [cpu])
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        onnx_providers("gpu", [cuda, cpu])


def test_predict_an_export_on_each_device(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])  # CPU wheel
    argv = ["-q", "predict", str(setup["export"]), str(setup["pngs"][0]), "--json"]
    for device in ("cpu", "auto"):
        assert main([*argv, "--device", device]) == 0
        about = json.loads(capsys.readouterr().out)
        assert about["backend"] == "onnxruntime" and about["device"] == "CPUExecutionProvider"
    for device in ("cuda", "cuda:1"):
        assert main([*argv, "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"bofexits: error: device {device!r} asked for, but ")
        assert "no CUDAExecutionProvider (only CPUExecutionProvider); install onnxruntime-gpu" in err


def test_a_cuda_provider_that_does_not_start_is_an_error(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # onnxruntime lists CUDA but falls back to the CPU, with only a logged warning, when it cannot start it.
    import onnxruntime

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    real = onnxruntime.InferenceSession

    def cpu_only(path: str, options: Any, providers: list[Any]) -> Any:
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "InferenceSession", cpu_only)
    argv = ["-q", "predict", str(setup["export"]), str(setup["pngs"][0])]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime could not start its CUDAExecutionProvider" in err
    assert main([*argv, "--device", "auto"]) == 0  # auto takes what it gets
