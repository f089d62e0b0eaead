"""Exit heads: histogram aggregation, shared classifier, carried hierarchical state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bofexits.errors import ConfigError
from bofexits.models.exits import BoFExits, ExitHeads, aggregate_histograms


def test_aggregate_mean_hand_worked() -> None:
    prev = torch.tensor([0.2, 0.8])
    cur = torch.tensor([0.6, 0.4])
    torch.testing.assert_close(aggregate_histograms(prev, cur, 1, "mean"), torch.tensor([0.4, 0.6]))
    # index 2: (2 * [0.3, 0.6] + [0.9, 0.0]) / 3 = [0.5, 0.4]
    got = aggregate_histograms(torch.tensor([0.3, 0.6]), torch.tensor([0.9, 0.0]), 2, "mean")
    torch.testing.assert_close(got, torch.tensor([0.5, 0.4]))


def test_aggregate_sum_and_none_hand_worked() -> None:
    prev, cur = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(aggregate_histograms(prev, cur, 3, "sum"), torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(aggregate_histograms(prev, cur, 3, "none"), cur)


@pytest.mark.parametrize("mode", ["mean", "sum", "none"])
def test_aggregate_first_exit_is_its_histogram(mode: str) -> None:
    cur = torch.tensor([0.1, 0.9])
    torch.testing.assert_close(aggregate_histograms(None, cur, 0, mode), cur)


def test_running_mean_equals_mean_of_all_histograms() -> None:
    hists = torch.rand(5, 3, 4, generator=torch.Generator().manual_seed(0))
    state = None
    for i, h in enumerate(hists):
        state = aggregate_histograms(state, h, i, "mean")
        torch.testing.assert_close(state, hists[: i + 1].mean(0))


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_aggregate_does_not_modify_previous(mode: str) -> None:
    prev = torch.tensor([0.2, 0.8])
    aggregate_histograms(prev, torch.tensor([0.6, 0.4]), 1, mode)
    assert prev.tolist() == pytest.approx([0.2, 0.8])


def _features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3, 4, 6, 6, generator=g),
        torch.randn(3, 6, 3, 3, generator=g),
        torch.randn(3, 2, 2, 2, generator=g),
    ]


def _exits(**kwargs: object) -> BoFExits:
    torch.manual_seed(0)
    return BoFExits([4, 6, 2], 5, codewords=4, **kwargs)  # type: ignore[arg-type]


def _reference(exits: BoFExits, feats: list[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """Histograms scaled by K, aggregated by hand, through the right classifier."""
    hists = [exits.bof[i](f) * exits.codewords for i, f in enumerate(feats)]
    out = []
    for i in range(len(feats)):
        if mode == "mean":
            agg = torch.stack(hists[: i + 1]).mean(0)
        elif mode == "sum":
            agg = torch.stack(hists[: i + 1]).sum(0)
        else:
            agg = hists[i]
        clf = exits.classifiers[0 if len(exits.classifiers) == 1 else i]
        out.append(clf(agg))
    return out


@pytest.mark.parametrize("mode", ["mean", "sum", "none"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("level", [0, 1])
def test_forward_matches_reference_and_step_loop(mode: str, shared: bool, level: int) -> None:
    exits = _exits(aggregation=mode, shared_classifier=shared, spatial_level=level)
    feats = _features()
    out = exits(feats)
    assert len(out) == 3 and all(o.shape == (3, 5) for o in out)
    for got, want in zip(out, _reference(exits, feats, mode), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    state = None
    for i, f in enumerate(feats):
        logits, state = exits.step(i, f, state)
        torch.testing.assert_close(logits, out[i])


def test_state_is_the_aggregated_scaled_histogram() -> None:
    exits = _exits(aggregation="mean")
    feats = _features(1)
    _, s0 = exits.step(0, feats[0], None)
    _, s1 = exits.step(1, feats[1], s0)
    assert s0 is not None and s1 is not None
    h0, h1 = exits.bof[0](feats[0]) * 4, exits.bof[1](feats[1]) * 4
    torch.testing.assert_close(s0, h0)
    torch.testing.assert_close(s1, (h0 + h1) / 2)
    torch.testing.assert_close(s1.sum(1), torch.full((3,), 4.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode, carried", [("mean", True), ("sum", True), ("none", False)])
def test_hierarchical_state_carries_earlier_exits(mode: str, carried: bool) -> None:
    exits = _exits(aggregation=mode)
    feats = _features(2)
    other = [feats[0] + 3.0, feats[1], feats[2]]  # change only what exit 0 sees
    a, b = exits(feats), exits(other)
    assert not torch.allclose(a[0], b[0])
    assert torch.allclose(a[2], b[2]) is not carried


def test_shared_vs_per_exit_classifier_parameters() -> None:
    shared = _exits(shared_classifier=True, spatial_level=1)
    per_exit = _exits(shared_classifier=False, spatial_level=1)
    dim = 4 * 4  # 4K at level 1
    clf = dim * 5 + 5
    bof = sum(p.numel() for p in shared.bof.parameters())
    assert len(shared.classifiers) == 1 and len(per_exit.classifiers) == 3
    assert sum(p.numel() for p in shared.parameters()) == bof + clf
    assert sum(p.numel() for p in per_exit.parameters()) == bof + 3 * clf
    assert shared.classifiers[0].in_features == dim


def test_options_reach_each_pooling_layer() -> None:
    exits = BoFExits(
        [4, 6],
        3,
        codewords=5,
        membership="logistic",
        squared=False,
        spatial_level=1,
        reduce_channels=2,
        pools=[2, 1],
    )
    assert exits.num_exits == 2
    assert [b.pool for b in exits.bof] == [2, 1]
    for b, c in zip(exits.bof, [4, 6], strict=True):
        assert (b.membership, b.squared, b.spatial_level, b.codewords) == ("logistic", False, 1, 5)
        assert isinstance(b.reduce, nn.Conv2d) and b.reduce.in_channels == c and b.reduce.out_channels == 2
        assert b.codebook.shape == (5, 2)


def test_init_from_features_initialises_every_exit() -> None:
    exits = _exits()
    feats = _features(3)
    before = [b.codebook.detach().clone() for b in exits.bof]
    exits.init_from_features(feats, generator=torch.Generator().manual_seed(0))
    for b, old, f in zip(exits.bof, before, feats, strict=True):
        assert not torch.allclose(b.codebook, old)
        vectors = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        # every codeword is the mean of some of this exit's vectors: it lies in their bounding box
        assert bool((b.codebook >= vectors.min(0).values - 1e-5).all())
        assert bool((b.codebook <= vectors.max(0).values + 1e-5).all())


def test_init_from_features_needs_one_map_per_exit() -> None:
    with pytest.raises(ValueError):
        _exits().init_from_features(_features()[:2])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggregation": "max"},
        {"pools": [1, 1]},
        {"pools": [1, 1, 1, 1]},
        {"codewords": 1},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BoFExits([4, 6, 2], 5, **kwargs)  # type: ignore[arg-type]


def test_no_exits_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one exit"):
        BoFExits([], 5)


def test_exit_heads_interface_step_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        ExitHeads().step(0, torch.zeros(1, 1, 1, 1), None)
