"""The fused exit head (one shared RBF width): same logits, exits and classes as the reference exits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bofexits.cli import build_parser, config_from_args
from bofexits.config import ModelConfig, TrainConfig
from bofexits.deploy import runner as deploy
from bofexits.deploy.onnx import export_onnx
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.bof import BoFPooling, rbf_membership
from bofexits.models.build import build_model
from bofexits.models.exits import BoFExits
from bofexits.models.folded import FrozenBoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold
from bofexits.training.checkpoint import load_model
from bofexits.training.loop import train
from tests.helpers import fit_calibration

MAPS = ((4, 8), (6, 4), (8, 3))  # (channels, side) of the map each exit reads


def _exits(dtype: torch.dtype, *, spread: float = 0.0, **kwargs: object) -> tuple[BoFExits, list[torch.Tensor]]:
    """k-means-initialised exits on random maps; `spread` > 0 makes the per-codeword widths differ."""
    torch.manual_seed(0)
    exits = BoFExits([c for c, _ in MAPS], 5, codewords=6, **kwargs).eval()  # type: ignore[arg-type]
    maps = [torch.randn(3, c, s, s) for c, s in MAPS]
    exits.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in exits.bof:
            p.log_sigma.add_(torch.randn(p.log_sigma.shape) * spread)  # type: ignore[operator]
            p.codebook.add_(torch.randn(p.codebook.shape) * 0.3)  # type: ignore[operator]
        for c in exits.classifiers:
            c.bias.normal_()  # type: ignore[operator]
    return exits.to(dtype), [m.to(dtype) for m in maps]


def _reference_logits(exits: BoFExits, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return exits(maps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"spatial_level": 0},
        {"aggregation": "sum"},
        {"aggregation": "none"},
        {"pools": [2, 1, 1]},
        {"reduce_channels": 3, "pools": [2, 2, 1]},
        {"shared_classifier": False},
    ],
)
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fused_head_matches_reference_exit(
    kwargs: dict[str, object], fold: bool, dtype: torch.dtype, tol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bofexits.models.folded.FOLD_SLACK_MACS", 10**9 if fold else -(10**9))
    exits, maps = _exits(dtype, shared_width=True, **{"spatial_level": 1, **kwargs})  # type: ignore[arg-type]
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    assert [b.kind for b in frozen._bof] == ["rbf_fused"] * 3
    shared = len(exits.classifiers) == 1
    assert frozen._fused == [fold and shared] * 3  # the eager fast path where the classifier folds
    graph = frozen.graph_form()
    want = _reference_logits(exits, maps)
    state = graph_state = None
    for i, m in enumerate(maps):
        got, state = frozen.step(i, m, state)
        via_graph, graph_state = graph.step(i, m, graph_state)
        torch.testing.assert_close(got, want[i], atol=tol, rtol=tol)
        torch.testing.assert_close(via_graph, want[i], atol=tol, rtol=tol)
        assert got.dtype == dtype


def test_the_squared_norm_term_cancels_with_one_width() -> None:
    """The identity the fused head rests on: softmax_k(-||x - v_k||^2 / s) = softmax_k((2 x.v_k - ||v_k||^2) / s)."""
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 5, 3, 3, generator=gen, dtype=torch.float64), torch.randn(7, 5, generator=gen).double()
    sigma = torch.tensor([0.7], dtype=torch.float64)
    cross = torch.einsum("bchw,kc->bkhw", x, v)
    fused = torch.softmax((2 * cross - v.square().sum(1).view(1, -1, 1, 1)) / sigma, 1)
    torch.testing.assert_close(rbf_membership(x, v, sigma), fused, atol=1e-12, rtol=0)
    widths = torch.rand(7, generator=gen, dtype=torch.float64) + 0.5  # per codeword: it does not cancel
    assert not torch.allclose(rbf_membership(x, v, widths), torch.softmax((2 * cross) / widths.view(1, -1, 1, 1), 1))


def test_per_codeword_widths_keep_the_general_form() -> None:
    exits, maps = _exits(torch.float64, spread=0.5, spatial_level=1)
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    assert [b.kind for b in frozen._bof] == ["rbf_sq"] * 3 and frozen._fused == [False] * 3
    want = _reference_logits(exits, maps)
    state = None
    for i, m in enumerate(maps):
        got, state = frozen.step(i, m, state)
        torch.testing.assert_close(got, want[i], atol=1e-10, rtol=1e-10)


def test_equal_per_codeword_widths_fuse_exactly() -> None:
    """k-means initialisation gives every codeword one width: the fused form applies, same logits."""
    exits, maps = _exits(torch.float64, spatial_level=1)
    assert exits.bof[0].log_sigma.numel() == 6  # type: ignore[union-attr]
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    assert [b.kind for b in frozen._bof] == ["rbf_fused"] * 3
    state = None
    for i, (m, want) in enumerate(zip(maps, _reference_logits(exits, maps), strict=True)):
        got, state = frozen.step(i, m, state)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_fuse_false_keeps_the_general_form_with_the_same_logits() -> None:
    exits, maps = _exits(torch.float64, spatial_level=1, shared_width=True)
    shapes = [tuple(m.shape[1:]) for m in maps]
    fused, general = FrozenBoFExits(exits, shapes), FrozenBoFExits(exits, shapes, fuse=False)
    assert [b.kind for b in general._bof] == ["rbf_sq"] * 3 and general._fused == [False] * 3
    state_f = state_g = None
    for i, m in enumerate(maps):
        a, state_f = fused.step(i, m, state_f)
        b, state_g = general.step(i, m, state_g)
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_fused_head_takes_an_empty_batch() -> None:
    exits, maps = _exits(torch.float32, spatial_level=1, shared_width=True)
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    logits, state = frozen.step(0, maps[0][:0], None)
    assert logits.shape == (0, 5)
    logits, _ = frozen.step(1, maps[1][:0], state)
    assert logits.shape == (0, 5)


def test_shared_width_is_one_parameter_that_trains() -> None:
    pooling = BoFPooling(4, 6, shared_width=True)
    assert pooling.log_sigma.shape == (1,)
    x = torch.randn(2, 4, 5, 5)
    pooling(x).square().sum().backward()
    assert pooling.log_sigma.grad is not None and pooling.log_sigma.grad.abs().item() > 0
    net = build_model(ModelConfig(shared_width=True, widths=[4, 8, 8, 16], codewords=8))
    assert all(p.log_sigma.numel() == 1 for p in net.exits.bof)  # type: ignore[union-attr]


def _shared_width_net(factory: Callable[..., MultiExitNetwork]) -> MultiExitNetwork:
    return factory(dtype=torch.float32, shared_width=True, spatial_level=1)


def test_runtime_takes_the_same_exits_and_classes(tiny_net_factory: Callable[..., MultiExitNetwork]) -> None:
    net = _shared_width_net(tiny_net_factory)
    x = torch.randn(48, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cal = fit_calibration(net(torch.randn(128, 2, 8, 8, generator=torch.Generator().manual_seed(3))))
    for beta in (0.3, 0.6, 1.0):
        policy = CalibratedThreshold(cal, beta, "quantile")
        fast, slow = AdaptiveRuntime(net, policy), AdaptiveRuntime(net, policy, optimize=False)
        assert isinstance(fast.exits, FrozenBoFExits) and all(fast.exits._fused)
        a, b = fast(x), slow(x)
        assert torch.equal(a.exit_index, b.exit_index) and torch.equal(a.predictions, b.predictions)
        for i in range(0, 48, 6):  # batch 1 takes the fused eager path one exit at a time
            one = fast(x[i : i + 1])
            assert int(one.exit_index) == int(b.exit_index[i]) and int(one.predictions) == int(b.predictions[i])


def test_onnx_runner_takes_the_same_exits_and_classes(
    tiny_net_factory: Callable[..., MultiExitNetwork], tmp_path: Path
) -> None:
    net = _shared_width_net(tiny_net_factory)
    with torch.no_grad():
        cal = fit_calibration(net(torch.randn(128, 2, 8, 8, generator=torch.Generator().manual_seed(3))))
    out = export_onnx(net, tmp_path / "e", calibration=cal, beta=0.5, variant="quantile", exporter="legacy")
    runner = deploy.OnnxAdaptiveRunner(out, threads=1)
    want = AdaptiveRuntime(net, CalibratedThreshold(cal, 0.5, "quantile"), optimize=False)
    x = torch.randn(40, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    ref = want(x)
    got = runner.run_batched(x.numpy())
    np.testing.assert_array_equal(got.exit_index, ref.exit_index.numpy())
    np.testing.assert_array_equal(got.logits.argmax(1), ref.predictions.numpy())
    np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-4, rtol=0)
    assert len(set(got.exit_index.tolist())) >= 2
    for i in range(0, 40, 5):
        logits, index = runner.run_single(x[i : i + 1].numpy())
        assert index == int(ref.exit_index[i]) and int(logits.argmax()) == int(ref.predictions[i])


def test_shared_width_trains_saves_and_runs_fused(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = config_from_args(build_parser().parse_args(["train", "--no-shared-width"]))
    assert cfg.model.shared_width is False and TrainConfig().model.shared_width is True  # the default
    run = tmp_path / "run"
    tiny = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1)
    tiny.model.shared_width = True
    train(tiny, run, progress=False)
    model, calibrations, loaded = load_model(run / "checkpoint.pt")
    assert loaded.model.shared_width is True
    assert all(p.log_sigma.shape == (1,) for p in model.exits.bof)  # type: ignore[union-attr]
    runtime = AdaptiveRuntime(model, CalibratedThreshold(calibrations[loaded.score], 0.5, loaded.variant))
    assert isinstance(runtime.exits, FrozenBoFExits) and all(runtime.exits._fused)
