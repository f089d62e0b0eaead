"""Run configuration: dict round trips, unknown keys, types, and resolution driven by the fields."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bofexits.config import (
    BOUNDS,
    Bound,
    ModelConfig,
    TrainConfig,
    check_config,
    check_ranges,
    config_keys,
    from_dict,
    resolve_config,
)
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


# --- keys and types from the dataclass fields -------------------------------------------------------


def test_config_keys_are_the_dataclass_fields() -> None:
    keys = config_keys()
    train = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    model = {f.name for f in dataclasses.fields(ModelConfig)}
    assert keys == {**dict.fromkeys(train, ()), **dict.fromkeys(model, ("model",))}


@dataclass
class _Model(ModelConfig):
    dropout: float = 0.0


@dataclass
class _Train(TrainConfig):
    warmup_epochs: int = 0
    model: _Model = field(default_factory=_Model)


def test_a_new_field_is_resolved_without_touching_the_resolver(tmp_path: Path) -> None:
    # Fields added to the dataclasses (here in subclasses) are keys, typed, in their sections.
    assert config_keys(_Train)["dropout"] == ("model",) and config_keys(_Train)["warmup_epochs"] == ()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"warmup_epochs": 2, "model": {"dropout": 0.25, "codewords": 4}}))
    cfg = resolve_config({"dropout": 0.5}, config_file=path, cls=_Train)
    assert isinstance(cfg, _Train) and isinstance(cfg.model, _Model)
    assert (cfg.warmup_epochs, cfg.model.dropout, cfg.model.codewords) == (2, 0.5, 4)  # flag over file
    assert from_dict(cfg.to_dict(), _Train) == cfg
    path.write_text(json.dumps({"model": {"dropout": "high"}}))
    with pytest.raises(ConfigError, match=r"'model.dropout' expects float, got 'high' \(str\)"):
        resolve_config(config_file=path, cls=_Train)


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"epochs": 2.0}, r"'epochs' expects int, got 2.0 \(float\)"),
        ({"epochs": True}, r"'epochs' expects int, got True \(bool\)"),
        ({"lr": "3e-3"}, r"'lr' expects float, got '3e-3' \(str\)"),
        ({"threads": "2"}, r"'threads' expects int \| None, got '2'"),
        ({"exit_weights": [1.0, "x"]}, r"'exit_weights' expects list\[float\] \| None"),
        ({"optimizer": "lbfgs"}, r"'optimizer' expects one of 'adamw', 'sgd', got 'lbfgs'"),
        ({"model": {"squared": 1}}, r"'model.squared' expects bool, got 1 \(int\)"),
        ({"model": []}, r"'model' expects an object of ModelConfig fields"),
    ],
)
def test_wrong_types_name_key_type_and_value(data: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_dict(data)


def test_ints_are_taken_for_floats() -> None:
    # JSON writers drop ".0"; the config still holds floats.
    cfg = from_dict({"lr": 1, "exit_weights": [1, 2, 1, 1]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.exit_weights == [1.0, 2.0, 1.0, 1.0] and all(isinstance(w, float) for w in cfg.exit_weights)


def test_resolve_refuses_unknown_overrides_and_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config keys \['codeword'\]"):
        resolve_config({"codeword": 3})
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"codeword": 3}}))
    with pytest.raises(ConfigError, match=rf"^{path}: unknown model config keys"):
        resolve_config(config_file=path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        resolve_config(config_file=path)


def test_resolve_precedence_without_a_command_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": "cifar100", "epochs": 5}))
    cfg = resolve_config({"epochs": 7, "codewords": 16}, config_file=path)
    assert (cfg.dataset, cfg.model.num_classes) == ("cifar100", 100)  # the file's dataset picks the recipe
    assert (cfg.epochs, cfg.model.codewords) == (7, 16)  # overrides over the file and the recipe
    from bofexits.recipes import RECIPES

    default = resolve_config()  # the default dataset's recipe over the defaults, nothing else
    assert default == from_dict({k: v for k, v in RECIPES["fashion-mnist"].items()}) and default != TrainConfig()


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"limit_train": 0}, "'limit_train' must be an integer >= 1"),
        ({"lr": float("nan")}, "'lr' must be a finite number > 0"),
        ({"epochs": 10**9}, r"'epochs' must be an integer in \[0, 10000\]"),
        ({"exit_weights": [1.0, float("nan"), 1.0, 1.0]}, "'exit_weights' must be a finite number >= 0 each"),
        ({"exit_weights": [0.0, 0.0, 0.0, 0.0]}, "'exit_weights' needs finite values >= 0, not all zero"),
        ({"threads": -1}, r"'threads' must be an integer in \[1, 1024\] \(or unset for torch's default\)"),
        ({"widths": [0, 8, 8, 16]}, r"'model.widths' must be an integer in \[1, 65536\] each"),
        ({"spatial_level": 2}, r"'model.spatial_level' must be an integer in \[0, 1\]"),
        ({"val_fraction": 1.0}, r"'val_fraction' must be a finite number in \[0, 1\)"),
        ({"kmeans_images": 1}, "'kmeans_images' \\(1\\) must be at least 'codewords' \\(32\\)"),
    ],
)
def test_values_that_mean_nothing_are_refused_by_key(overrides: dict[str, object], match: str) -> None:
    from bofexits.config import resolve_config

    with pytest.raises(ConfigError, match=match):
        resolve_config(overrides)


# --- one table of bounds, read by the command line, config files and training ------------------


def _outside(bound: Bound) -> float:
    """A value just outside `bound`'s lower end."""
    if bound.open_low:
        return int(bound.low) if bound.integer else bound.low
    return bound.low - (1 if bound.integer else 0.5)


def _with(key: str, value: object) -> TrainConfig:
    cfg = TrainConfig()
    section = cfg.model if key in {f.name for f in dataclasses.fields(ModelConfig)} else cfg
    lists = ("exit_weights", "finetune_weights", "widths", "exit_pools", "exit_points")
    setattr(section, key, [value] if key in lists else value)
    return cfg


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_every_bound_is_checked_for_python_configs_and_config_files(key: str) -> None:
    bound = BOUNDS[key]
    cfg = _with(key, _outside(bound))
    with pytest.raises(ConfigError, match=re.escape(bound.describe())):
        check_config(cfg)  # what training runs first (`training.run.set_up`)
    with pytest.raises(ConfigError, match=re.escape(bound.describe())):
        check_ranges(from_dict(cfg.to_dict()))  # a --config file's path (`resolve_config`)


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_every_bounded_flag_reads_the_same_table(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bofexits.cli import build_parser, main

    flag = "--" + key.replace("_", "-")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if flag not in sub.choices["train"]._option_string_actions:
        pytest.skip(f"{key} has no flag")
    bound = BOUNDS[key]
    assert main(["train", flag, f"{_outside(bound)}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}: must be {bound.describe(with_unset=False)}" in err, err


def test_bounds_name_config_keys_only() -> None:
    assert set(BOUNDS) <= set(config_keys())


def test_a_python_config_with_a_wrong_literal_is_refused_like_a_file() -> None:
    with pytest.raises(ConfigError, match="config key 'mode' expects one of 'joint', 'frozen', 'two-phase'"):
        check_config(TrainConfig(mode="sideways"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config key 'model.membership' expects one of 'rbf', 'logistic'"):
        check_config(TrainConfig(model=ModelConfig(membership="gauss")))  # type: ignore[arg-type]


# --- one pair of defaults for every entry point ----------------------------------------------------


def test_every_entry_point_defaults_to_the_one_rule() -> None:
    import inspect

    import bofexits
    from bofexits.cli import build_parser, config_from_args
    from bofexits.evaluation.compare import compare_policies
    from bofexits.evaluation.families import policy_families
    from bofexits.options import DEFAULT_SCORE, DEFAULT_VARIANT
    from bofexits.policies.calibration import ExitCalibration
    from bofexits.training.tuning import tune_beta

    assert (DEFAULT_SCORE, DEFAULT_VARIANT) == ("max_prob", "accuracy")
    assert (bofexits.DEFAULT_SCORE, bofexits.DEFAULT_VARIANT) == (DEFAULT_SCORE, DEFAULT_VARIANT)
    for fn in (bofexits.sweep, compare_policies, policy_families):
        params = inspect.signature(fn).parameters
        assert (params["score"].default, params["variant"].default) == (DEFAULT_SCORE, DEFAULT_VARIANT), fn
    assert inspect.signature(tune_beta).parameters["variant"].default == DEFAULT_VARIANT
    assert inspect.signature(ExitCalibration.fit).parameters["score"].default == DEFAULT_SCORE
    for cfg in (TrainConfig(), resolve_config(), config_from_args(build_parser().parse_args(["train"]))):
        assert (cfg.score, cfg.variant) == (DEFAULT_SCORE, DEFAULT_VARIANT)
