"""Run configuration: dict round trips and unknown keys."""

from __future__ import annotations

import json

import pytest

from bofexits.config import ModelConfig, TrainConfig, from_dict
from bofexits.errors import ConfigError


def test_default_round_trip() -> None:
    cfg = TrainConfig()
    assert from_dict(cfg.to_dict()) == cfg


def test_non_default_round_trip_through_json() -> None:
    cfg = TrainConfig(
        mode="two-phase",
        epochs=3,
        exit_weights=[0.5, 1.0, 1.0, 2.0],
        threads=2,
        lr=1e-3,
        data_dir="/d",
        model=ModelConfig(
            backbone="resnet32",
            in_channels=3,
            widths=[8, 8, 16, 16],
            codewords=8,
            membership="logistic",
            squared=False,
            spatial_level=1,
            reduce_channels=4,
            exit_pools=[2, 2, 1],
            aggregation="none",
            shared_classifier=False,
        ),
    )
    d = json.loads(json.dumps(cfg.to_dict()))
    back = from_dict(d)
    assert back == cfg
    assert isinstance(back.model, ModelConfig)
    assert back.to_dict() == cfg.to_dict()


def test_to_dict_nests_model() -> None:
    d = TrainConfig(model=ModelConfig(codewords=7)).to_dict()
    assert d["model"]["codewords"] == 7
    assert "codewords" not in d


def test_missing_keys_take_defaults() -> None:
    cfg = from_dict({"epochs": 2, "model": {"codewords": 5}})
    assert cfg.epochs == 2 and cfg.model.codewords == 5
    assert cfg.batch_size == TrainConfig().batch_size and cfg.model.backbone == "vgg28"
    assert from_dict({}) == TrainConfig()


def test_from_dict_does_not_mutate_input() -> None:
    d = TrainConfig().to_dict()
    snapshot = json.dumps(d, sort_keys=True)
    from_dict(d)
    assert json.dumps(d, sort_keys=True) == snapshot


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"epoch": 3}, r"unknown train config keys \['epoch'\]"),
        ({"model": {"codeword": 3}}, r"unknown model config keys \['codeword'\]"),
        ({"model": {"epochs": 3}}, r"unknown model config keys \['epochs'\]"),
        ({"codewords": 3}, r"unknown train config keys \['codewords'\]"),
        ({"zz": 1, "aa": 2}, r"\['aa', 'zz'\]"),
    ],
)
def test_unknown_keys(data: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_dict(data)


def test_unknown_key_message_lists_known_keys() -> None:
    with pytest.raises(ConfigError, match="known keys: .*batch_size"):
        from_dict({"batchsize": 3})
