"""The scripted adaptive loop refuses non-finite logits with the project's error, named in the message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bofexits.deploy.torchscript import _AdaptiveScript, export_torchscript
from bofexits.errors import InputError
from bofexits.models.multiexit import MultiExitNetwork
from tests.helpers import fit_calibration


def test_nan_logits_raise_input_error_eager_and_by_name_once_scripted(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net = tiny_net_factory(dtype=torch.float32)
    with torch.no_grad():
        cal = fit_calibration(net(torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(3))))
    out = export_torchscript(net, tmp_path / "ts", calibration=cal, beta=0.5, variant="quantile")
    bad = torch.full((2, 2, 8, 8), float("nan"))
    scripted = torch.jit.load(str(out / "adaptive.pt"))
    with pytest.raises(torch.jit.Error, match="InputError.*NaN or inf logits"):
        scripted(bad)
    blocks = list(scripted.blocks.children())
    eager = _AdaptiveScript(blocks, scripted.final, [0.0] * len(blocks), net.num_classes)
    with pytest.raises(InputError, match="NaN or inf logits"):
        eager(bad)
