"""Per-dataset recipes: what each sets, and defaults < recipe < --config file < flags on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bofexits.cli import build_parser, config_from_args
from bofexits.config import TrainConfig, from_dict
from bofexits.data import ImageDataset
from bofexits.data import registry as datasets
from bofexits.models.build import build_model
from bofexits.recipes import RECIPES, apply_recipe, recipe_for
from bofexits.training.run import augmentation as _augmentation


def _resolve(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_fashion_mnist_recipe_is_what_the_demo_trains() -> None:
    # The demo's numbers were measured with this recipe: `train` with no options trains it too.
    from bofexits.demo import DEMO_CONFIG

    recipe = from_dict(apply_recipe(TrainConfig().to_dict(), recipe_for("fashion-mnist")))
    assert recipe == DEMO_CONFIG == _resolve() == _resolve("--dataset", "fashion-mnist")
    assert DEMO_CONFIG.mode == "two-phase" and DEMO_CONFIG.finetune_epochs > 0


def test_a_recipes_fine_tuning_applies_to_two_phase_runs_only() -> None:
    assert _resolve("--mode", "joint").finetune_epochs == 0  # joint has no frozen-backbone phase to follow
    frozen = _resolve("--mode", "frozen", "--backbone-checkpoint", __file__)
    assert frozen.finetune_epochs == 0  # a frozen run keeps the backbone it was given ...
    asked = _resolve("--mode", "frozen", "--backbone-checkpoint", __file__, "--finetune-epochs", "1")
    assert asked.finetune_epochs == 1  # ... unless asked
    assert _resolve("--finetune-epochs", "0").finetune_epochs == 0


@pytest.mark.parametrize("name", sorted(set(RECIPES) - {"image-folder"}))  # its network comes from the files
def test_every_recipe_builds_its_network(name: str) -> None:
    cfg = from_dict(apply_recipe(TrainConfig().to_dict(), recipe_for(name)))  # unknown keys would raise
    net = build_model(cfg.model)
    side = 28 if name in ("fashion-mnist", "mnist") else 32
    assert net.input_shape == (cfg.model.in_channels, side, side)
    assert net(torch.zeros(2, *net.input_shape))[-1].shape == (2, cfg.model.num_classes)
    assert cfg.dataset == name
    info = getattr(datasets, "dataset_info", None)  # the registry's (shape, classes), where it has them
    if info is not None and name in datasets.list_datasets():
        assert info(name) == (net.input_shape, net.num_classes)


def test_digits_are_not_flipped() -> None:
    assert {n for n, r in RECIPES.items() if not r["flip"]} == {"mnist", "svhn", "image-folder"}
    assert all(r["augment"] for r in RECIPES.values())


def test_cifar100_gives_100_classes_on_rgb() -> None:
    cfg = _resolve("--dataset", "cifar100")
    assert (cfg.model.num_classes, cfg.model.in_channels, cfg.model.backbone) == (100, 3, "resnet32")
    assert (cfg.epochs, cfg.crop_padding, cfg.flip) == (RECIPES["cifar100"]["epochs"], 4, True)
    assert _resolve("--dataset", "cifar10").model.num_classes == 10


def test_image_folder_flips_only_when_asked() -> None:
    # A mirrored digit, letter or arrow is another class: user images get no flips unless --flip.
    assert "model" not in RECIPES["image-folder"]  # channels, size and classes come from the files
    assert _resolve("--dataset", "image-folder").flip is False
    assert _resolve("--dataset", "image-folder", "--flip").flip is True
    assert _resolve("--dataset", "fashion-mnist", "--no-flip").flip is False
    assert _resolve("--flip").flip is True


def test_unknown_dataset_has_no_recipe() -> None:
    assert recipe_for("my-image-folder") == {}
    cfg = _resolve("--dataset", "my-image-folder")
    assert cfg.dataset == "my-image-folder"
    assert cfg.model == TrainConfig().model and cfg.epochs == TrainConfig().epochs


def test_recipe_is_a_copy() -> None:
    recipe_for("svhn")["model"]["num_classes"] = 3
    assert RECIPES["svhn"]["model"]["num_classes"] == 10


def test_precedence_defaults_recipe_config_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 5, "model": {"codewords": 16}}))
    cfg = _resolve("--dataset", "cifar100", "--config", str(path))
    assert (cfg.epochs, cfg.model.codewords, cfg.model.num_classes) == (5, 16, 100)  # file over recipe
    assert cfg.exit_epochs == RECIPES["cifar100"]["exit_epochs"]  # recipe over defaults
    cfg = _resolve("--dataset", "cifar100", "--config", str(path), "--epochs", "7", "--exit-head", "conv")
    assert (cfg.epochs, cfg.model.exit_head, cfg.model.codewords) == (7, "conv", 16)  # flags over all
    cfg = _resolve("--dataset", "svhn", "--crop-padding", "0", "--backbone", "vgg32")
    assert (cfg.crop_padding, cfg.flip, cfg.model.backbone) == (0, False, "vgg32")


def test_config_file_dataset_picks_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": "svhn", "epochs": 2}))
    cfg = _resolve("--config", str(path))
    assert (cfg.dataset, cfg.epochs, cfg.model.in_channels, cfg.flip) == ("svhn", 2, 3, False)
    assert _resolve("--no-flip").flip is False


def test_augmentation_honours_flip() -> None:
    data = ImageDataset(
        torch.zeros(4, 1, 4, 4, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        ("a",),
        (0.5,),
        (0.25,),
        "t",
    )
    assert _augmentation(data, 0, flip=False) is None
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    crop_only = _augmentation(data, 1, flip=False)
    assert crop_only is not None
    out = crop_only(x, generator=gen)
    # A crop only shifts: no sample's rows read right to left. A flip would reverse half of them.
    row = out[:, 0, 1, 1:3]
    assert bool((row[:, 1] > row[:, 0]).all())
    flipped = _augmentation(data, 0, flip=True)
    assert flipped is not None and bool((flipped(x, generator=gen)[:, 0, 0, 0] == 3).any())
