"""Per-dataset training recipes: the defaults `bofexits train --dataset NAME` starts from.

A recipe is a partial config in the nested form of `TrainConfig.to_dict()` (the form of a
run's `config.json`), so it merges like a `--config` file: defaults < recipe < --config <
flags. It fixes what the dataset decides (image channels, classes, a backbone for its image
size, whether mirror images are the same class) and a schedule that suits its size.

The Fashion-MNIST recipe is what `make demo` trains and measures (`demo.DEMO_CONFIG` is it,
resolved): the `TrainConfig` defaults plus joint fine-tuning after the exits, which was
measured there (docs/decisions.md, "Joint fine-tuning"); a recipe's fine-tuning applies to
two-phase runs only (`config.resolve_config`). The RGB recipes are starting points chosen
from the literature's usual CIFAR/SVHN practice (crops
with 4-px padding, flips for objects but not digits, more epochs than the 28x28 sets need),
not yet tuned here.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["RECIPES", "apply_recipe", "recipe_for"]

_GREY = {"backbone": "vgg28", "in_channels": 1}
_RGB = {"backbone": "resnet32", "in_channels": 3}

RECIPES: dict[str, dict[str, Any]] = {
    # The demo's: the TrainConfig defaults, fewer exit epochs and joint fine-tuning after them.
    "fashion-mnist": {
        "epochs": 10,
        "exit_epochs": 8,
        "finetune_epochs": 2,
        "lr": 3e-3,
        "augment": True,
        "flip": True,
        "crop_padding": 0,
        "model": {**_GREY, "num_classes": 10},
    },
    # Digits: a mirrored digit is another symbol (or none), so crops instead of flips.
    "mnist": {
        "epochs": 10,
        "exit_epochs": 4,
        "lr": 3e-3,
        "augment": True,
        "flip": False,
        "crop_padding": 2,
        "model": {**_GREY, "num_classes": 10},
    },
    "cifar10": {
        "epochs": 60,
        "exit_epochs": 10,
        "lr": 3e-3,
        "augment": True,
        "flip": True,
        "crop_padding": 4,
        "model": {**_RGB, "num_classes": 10},
    },
    # 100 classes from the same images: a larger shared histogram space for the classifier.
    "cifar100": {
        "epochs": 60,
        "exit_epochs": 10,
        "lr": 3e-3,
        "augment": True,
        "flip": True,
        "crop_padding": 4,
        "model": {**_RGB, "num_classes": 100, "codewords": 64},
    },
    # Your own images: their channels, size and classes come from the files. Nothing says a
    # mirror image is the same class (digits, text, arrows, road signs are not), so no flips
    # unless asked (`--flip`); crops keep the default. Measured on scikit-learn's digits in
    # docs/decisions.md ("Your own images: no flips by default").
    "image-folder": {"augment": True, "flip": False},
    # House-number digits: no flips; 73k training images converge in fewer epochs than CIFAR.
    "svhn": {
        "epochs": 30,
        "exit_epochs": 6,
        "lr": 3e-3,
        "augment": True,
        "flip": False,
        "crop_padding": 2,
        "model": {**_RGB, "num_classes": 10},
    },
}


def recipe_for(dataset: str) -> dict[str, Any]:
    """The recipe of `dataset` (a copy, with "dataset" set), or {} for an unknown name.

    Unknown names are other user data: their shape and classes come from the data, so there
    is nothing to default.

    >>> recipe_for("cifar100")["model"]["num_classes"]
    100
    >>> recipe_for("my-folder")
    {}
    >>> recipe_for("image-folder")["flip"]
    False
    """
    if dataset not in RECIPES:
        return {}
    return {**copy.deepcopy(RECIPES[dataset]), "dataset": dataset}


def apply_recipe(config: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """`config` (nested `TrainConfig.to_dict()` form) with the recipe's values laid over it.

    >>> merged = apply_recipe({"epochs": 1, "model": {"num_classes": 10}}, recipe_for("cifar100"))
    >>> merged["epochs"], merged["model"]["num_classes"]
    (60, 100)
    """
    merged = {**copy.deepcopy(config), **{k: v for k, v in copy.deepcopy(recipe).items() if k != "model"}}
    merged["model"] = {**config.get("model", {}), **copy.deepcopy(recipe.get("model", {}))}
    return merged
