"""A small run for the serving tests: a calibrated checkpoint on fake data, its ONNX export, PNGs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from bofexits.config import ModelConfig, TrainConfig
from bofexits.data.registry import load_dataset
from bofexits.deploy.onnx import export_onnx
from bofexits.models.build import build_model
from bofexits.training.checkpoint import save_checkpoint
from tests.helpers import fit_calibration

N_TEST = 48


@pytest.fixture(scope="session")
def small_run(
    tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]
) -> dict[str, Any]:
    """checkpoint.pt (small vgg28, calibrated, untrained), its export, the test set and a few PNGs."""
    root = tmp_path_factory.mktemp("serving")
    data = write_fake_data(root / "data", n_train=64, n_test=N_TEST)
    cfg = TrainConfig(
        data_dir=str(data), variant="quantile", model=ModelConfig(widths=[4, 8, 8, 16], codewords=8)
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    train, test = load_dataset("fashion-mnist", data)
    x, _ = next(train.batches(64, shuffle=False))
    with torch.no_grad():
        cal = fit_calibration(model(x))
    ckpt = root / "checkpoint.pt"
    save_checkpoint(
        ckpt,
        {"config": cfg.to_dict(), "model": model.state_dict(), "calibration": {"max_prob": cal.to_dict()}},
    )
    export = export_onnx(ckpt, root / "export", exporter="legacy")
    pngs = []
    for i in range(4):
        pngs.append(root / f"img{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), mode="L").save(pngs[-1])
    return {"root": root, "ckpt": ckpt, "export": export, "test": test, "pngs": pngs}
