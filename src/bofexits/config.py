"""Resolved configuration of a run: what builds the network and what trains it.

Stored verbatim in every checkpoint and dumped to the run folder, so a run can be rebuilt
and resumed from its files alone.

`resolve_config` is the one place where the layers meet: defaults < the dataset's recipe
(`bofexits.recipes`) < a config file < explicit overrides (the command line's
flags). Every key, the section it lives in and its type are read from the dataclass fields
below (`dataclasses.fields`, `typing.get_type_hints`), so a new field is resolved and
type-checked, and a flag named after it reaches it, without touching the resolver.
The names a string option may take are `Literal` types from `bofexits.options`; the range of
every numeric key is one table, `BOUNDS`, which the command line's flags, `check_ranges` and
training (`check_config`) all read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from bofexits.devices import check_device_name
from bofexits.errors import ConfigError
from bofexits.options import (  # the option names: re-exported, their home is options
    CALIBRATION_SPLITS,
    DEFAULT_SCORE,
    DEFAULT_VARIANT,
    MODES,
    OPTIMIZERS,
    Aggregation,
    CalibrationSplit,
    ExitHead,
    Membership,
    Mode,
    Optimizer,
    Score,
    Variant,
)
from bofexits.recipes import apply_recipe, recipe_for

__all__ = [
    "BOUNDS",
    "CALIBRATION_SPLITS",
    "FINETUNE_KEYS",
    "MODES",
    "OPTIMIZERS",
    "CalibrationSplit",
    "Mode",
    "ModelConfig",
    "Optimizer",
    "MAX_EPOCHS",
    "MAX_IMAGE_SIZE",
    "Bound",
    "TrainConfig",
    "check_config",
    "check_ranges",
    "config_keys",
    "from_dict",
    "load_config_file",
    "resolve_config",
    "stored_config",
]


@dataclass
class ModelConfig:
    """Backbone and exit heads.

    Attributes:
        backbone: registered backbone name (`bofexits backbones`); `tv:NAME` cuts a torchvision
            classifier (`bofexits.models.vision`, needs `pip install 'bofexits[vision]'`).
        num_classes: classifier outputs.
        in_channels: image channels.
        widths: backbone stage widths (None: the backbone's default).
        image_size: input height and width for backbones that take any size (the `tv:` ones;
            the reference backbones have a fixed size). None: training fills in the dataset's
            size; elsewhere the backbone's default (224).
        backbone_weights: a state_dict file (`torch.save(model.state_dict(), PATH)`) loaded into
            a `tv:` backbone before it is cut; None: random weights. Never downloaded; read with
            `torch.load(weights_only=True)`, so the file cannot run code.
        codewords: K, shared by all BoF exits.
        membership: "rbf" or "logistic".
        squared: RBF on squared distances.
        spatial_level: 0 or 1.
        reduce_channels: optional 1x1 channel reduction before quantising.
        exit_pools: per-exit pre-pool factors (None: the backbone's defaults).
        exit_points: where the exits sit, as indices of the backbone's units
            (`bofexits.models.placement.fine_units`: conv-BN-ReLU blocks, pools, residual
            blocks), an exit after each; None: after each of the backbone's default stages but
            the last. Written by `bofexits place`, which keeps the exits that pay.
        aggregation: "mean", "sum" or "none" (independent exits).
        shared_classifier: one classifier for all exits.
        shared_width: one RBF width per exit (shared by its codewords) instead of one per
            codeword; the exit's inference form is then one 1x1 convolution and a softmax
            before the classifier (docs/decisions.md, "Fused exit heads"). On by default
            since it cost no accuracy and made beta 1 cheaper; a stored config written before
            it existed reads as off (`stored_config`).
        exit_head: "bof" (the method), or a baseline head for side-by-side numbers: "pooled"
            (SDN, mixed pooling + linear) or "conv" (BranchyNet-style conv branch). The
            codebook options above apply to "bof" only.
    """

    backbone: str = "vgg28"
    num_classes: int = 10
    in_channels: int = 1
    widths: list[int] | None = None
    image_size: int | None = None
    backbone_weights: str | None = None
    codewords: int = 32
    membership: Membership = "rbf"
    squared: bool = True
    spatial_level: int = 1
    reduce_channels: int | None = None
    exit_pools: list[int] | None = None
    exit_points: list[int] | None = None
    aggregation: Aggregation = "mean"
    shared_classifier: bool = True
    shared_width: bool = True
    exit_head: ExitHead = "bof"


@dataclass
class TrainConfig:
    """How the exits (and the backbone) are trained, calibrated and checkpointed.

    Attributes:
        mode: "joint" (backbone + exits, weighted loss), "frozen" (exits only, on a trained
            backbone: your classifier's `model.backbone_weights` on a `tv:` backbone, or a bofexits
            run's `backbone_checkpoint`), or "two-phase" (backbone alone, then exits on it frozen).
        epochs: epochs of joint/frozen training, or of phase 1 in two-phase mode.
        exit_epochs: epochs of exit training in two-phase mode. In frozen mode, where every
            epoch trains exits, `exit_epochs` given (a flag or a config file) without `epochs`
            sets `epochs` (`resolve_config`; docs/decisions.md, "Exits for a model you already trained").
        lr: peak learning rate of the backbone (joint and backbone phases).
        exit_lr: peak learning rate when only the exits train (frozen mode, two-phase phase 2);
            BoF exits on a frozen backbone learned far faster at 3e-2 than at 3e-3.
        exit_weights: loss weight per exit, final exit last (None: all 1).
        augment: random augmentation: horizontal flips (when `flip`) and crops (when
            `crop_padding` > 0); False turns both off.
        flip: random horizontal flips when augmenting; off for digits (MNIST, SVHN), whose
            mirror images are other symbols.
        crop_padding: random-crop padding in pixels; 0 (default) because on short schedules the
            crops slowed convergence (Fashion-MNIST, 2 epochs: 87.9% with 2-px crops, 90.6% without).
        calibration_split: "train" (the paper) or "val" (held-out).
        distill: weight of self-distillation in each early exit's loss, in [0, 1]: the exit
            learns (1 - distill) x cross-entropy on the labels + distill x the KL divergence
            from the final classifier's softened outputs (docs/decisions.md, "Better exits").
        distill_temperature: the softening temperature T of the distillation term (scaled
            by T^2, so its gradients keep their size as T changes).
        score / variant: the confidence score and rule variant the calibration serves.
        finetune_epochs: epochs of joint fine-tuning after the exits are trained on the frozen
            backbone (two-phase or frozen mode): backbone and exits together on the weighted sum
            of every exit's loss (`exit_weights`), so the early stages learn features their
            exits can separate (docs/method.md §4, docs/decisions.md "Joint fine-tuning").
        finetune_lr: peak learning rate of the backbone's stages while fine-tuning. The
            backbone phase's own rate (3e-3) gave the cheapest validation knee of 3e-4, 1e-3,
            3e-3 and 1e-2 on the demo network; the teacher keeps the final exit where it was.
        finetune_exit_lr: peak learning rate of the exit heads while fine-tuning.
        finetune_distill: weight of distillation in the final exit's fine-tuning loss, in
            [0, 1]: (1 - w) x cross-entropy + w x KL from the frozen two-phase network's final
            logits (the teacher, softened by `distill_temperature`), which keeps the final
            exit's accuracy while the stages change under it.
        finetune_weights: loss weight per exit while fine-tuning, final exit last (None: the
            `exit_weights`).
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    mode: Mode = "two-phase"
    epochs: int = 10
    exit_epochs: int = 12
    batch_size: int = 128
    optimizer: Optimizer = "adamw"
    lr: float = 3e-3
    exit_lr: float = 3e-2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    exit_weights: list[float] | None = None
    augment: bool = True
    flip: bool = True
    crop_padding: int = 0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    kmeans_images: int = 512
    calibration_split: CalibrationSplit = "train"
    distill: float = 0.0
    distill_temperature: float = 3.0
    score: Score = DEFAULT_SCORE
    variant: Variant = DEFAULT_VARIANT
    backbone_checkpoint: str | None = None
    limit_train: int | None = None
    finetune_epochs: int = 0
    finetune_lr: float = 3e-3
    finetune_exit_lr: float = 3e-3
    finetune_distill: float = 0.5
    finetune_weights: list[float] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


C = TypeVar("C")


def from_dict(data: Mapping[str, Any], cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """Rebuild a `TrainConfig` (or `cls`, a subclass) from its dict form, as a config file holds it.

    Refuses unknown keys (typos, other versions) and values of the wrong type, naming the
    key, the type its field expects and the value; an int is taken for a float field.

    >>> from_dict({"epochs": 2, "model": {"codewords": 8}}).model.codewords
    8
    >>> from_dict({"epochs": "2"})
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: config key 'epochs' expects int, got '2' (str)
    """
    return _build(cls, data, "train", "")


def config_keys(cls: type[TrainConfig] = TrainConfig) -> dict[str, tuple[str, ...]]:
    """Every settable key of `cls`, flat, with the path of the section holding it.

    Top-level fields map to `()`, the network's to `("model",)`. A flag or override named
    after a key reaches it, which is why names must be unique across sections.

    >>> config_keys()["epochs"], config_keys()["codewords"]
    ((), ('model',))
    """
    return dict(_keys(cls, ()))


STORED_BEFORE: dict[str, Any] = {"shared_width": False}
"""Network keys whose default changed after runs were stored without them, with the value those
runs were built with. A complete stored network config (a checkpoint's, a run's `config.json`)
that lacks one of these keys was written before the key existed, so it takes that value, not
the new default; a partial config file still takes the defaults."""


_ADDED_AFTER = ("exit_points",)
"""Network keys added after those of `STORED_BEFORE`, whose defaults are what older runs did:
a stored dump may lack them too and is still complete."""


def stored_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with the `STORED_BEFORE` values filled in when it is a complete dump that lacks them.

    >>> old = TrainConfig().to_dict()
    >>> del old["model"]["shared_width"]
    >>> from_dict(stored_config(old)).model.shared_width, from_dict(stored_config({})).model.shared_width
    (False, True)
    """
    model = data.get("model")
    if not isinstance(model, dict):
        return dict(data)
    keys = {f.name for f in dataclasses.fields(ModelConfig)} - set(STORED_BEFORE) - set(_ADDED_AFTER)
    if not keys <= set(model):
        return dict(data)  # partial: the defaults apply
    return {**data, "model": {**{k: v for k, v in STORED_BEFORE.items() if k not in model}, **model}}


def _recipe_finetuning(data: dict[str, Any], overrides: Mapping[str, Any], loaded: Mapping[str, Any]) -> None:
    """A recipe's fine-tuning applies to two-phase runs only: joint mode has no frozen-backbone
    phase to follow, and a frozen run keeps the backbone it was given unless asked otherwise.

    Asked for (a flag or the config file), it stays, and `check_config` judges it.
    """
    asked = "finetune_epochs" in overrides or "finetune_epochs" in loaded
    if data.get("mode") != "two-phase" and not asked:
        data["finetune_epochs"] = 0


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path` (a run's `config.json`, or a partial one), unchecked.

    Raises:
        ConfigError: the file cannot be read, is not JSON or holds no object.
    """
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except RecursionError:  # json recurses once per level: 100 000 nested brackets overflow it
        raise ConfigError(
            f"config {path} is nested too deeply to be a config; pass a run's config.json"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must hold a JSON object, like a run's config.json")
    return stored_config(loaded)  # an older run's config.json rebuilds the network it trained


def resolve_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    cls: type[TrainConfig] = TrainConfig,
) -> TrainConfig:
    """Defaults < the dataset's recipe < `config_file` < `overrides`, checked.

    The dataset (whose recipe applies) is the override's, else the file's, else the default.

    Args:
        overrides: flat keys of `config_keys(cls)` (what the command line's flags set); a
            network key such as "codewords" needs no "model" prefix.
        config_file: a JSON object in the nested form of `TrainConfig.to_dict()`.
        cls: the config class; its fields decide every key, section and type.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or an unreadable file.

    >>> resolve_config({"dataset": "cifar100", "epochs": 3}).model.num_classes
    100
    """
    overrides = dict(overrides or {})
    keys = config_keys(cls)
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {', '.join(sorted(keys))}")
    loaded = load_config_file(config_file) if config_file is not None else {}
    data = dataclasses.asdict(cls())
    dataset = overrides.get("dataset") or loaded.get("dataset") or data["dataset"]
    data = apply_recipe(data, recipe_for(str(dataset)))
    if loaded:
        data = _merge(data, loaded)
        try:  # check the file on its own, so the error names the file
            _build(cls, data, "train", "")
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from exc
    for key, value in overrides.items():
        section = data
        for name in keys[key]:
            section = section[name]
        section[key] = value
    _frozen_epochs(data, overrides, loaded)
    _recipe_finetuning(data, overrides, loaded)
    cfg = from_dict(data, cls)
    try:
        check_ranges(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{config_file}: {exc}" if config_file is not None else str(exc)) from None
    return cfg


def _frozen_epochs(data: dict[str, Any], overrides: Mapping[str, Any], loaded: Mapping[str, Any]) -> None:
    """In frozen mode, `exit_epochs` set without `epochs` is the run's epoch count (`epochs`).

    Frozen mode trains exits for `epochs` epochs (every stored frozen config means that), so
    `--mode frozen --exit-epochs 2` would silently train the default 10. The highest layer
    that sets either key decides: the flags, else the config file. Flags giving both must
    agree; a file giving both (a run's config.json) keeps its meaning, `epochs`.
    """
    if data.get("mode") != "frozen":
        return
    layer = next((part for part in (overrides, loaded) if "epochs" in part or "exit_epochs" in part), None)
    if layer is None or "exit_epochs" not in layer:
        return
    if "epochs" in layer and layer is overrides and layer["epochs"] != layer["exit_epochs"]:
        raise ConfigError(
            f"frozen mode trains only exits, so --epochs ({layer['epochs']}) and --exit-epochs "
            f"({layer['exit_epochs']}) both count its epochs; give one"
        )
    if "epochs" not in layer:
        data["epochs"] = layer["exit_epochs"]


#: Largest `image_size` accepted: 4096x4096 inputs are already far beyond any classifier's training size.
MAX_IMAGE_SIZE = 4096

#: Largest epoch count accepted: beyond it a typo (1e9) would run for years or exhaust memory
#: in the schedule before the first step.
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class Bound:
    """The values a numeric config key accepts (each item, for a list key).

    Attributes:
        low, high: the range (`high` None: no upper end).
        integer: whole numbers only.
        open_low, open_high: the end itself is excluded.
        unset: for an optional key, what leaving it unset (None) means, named in the error.
    """

    low: float
    high: float | None = None
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    unset: str | None = None

    def admits(self, value: float) -> bool:
        """Whether `value` is in range (finite, and whole for an integer bound).

        >>> Bound(0, 1, open_high=True).admits(1.0), Bound(1, integer=True).admits(2)
        (False, True)
        """
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def describe(self, *, with_unset: bool = True) -> str:
        """How an error names the range: "an integer in [1, 1024]", "a finite number > 0".

        >>> Bound(0, 100, open_low=True).describe(), Bound(1, integer=True, unset="all images").describe()
        ('a finite number in (0, 100]', 'an integer >= 1 (or unset for all images)')
        """
        what = "an integer" if self.integer else "a finite number"
        low, high = f"{self.low:g}", f"{self.high:g}" if self.high is not None else ""
        if self.high is None:
            text = f"{what} {'>' if self.open_low else '>='} {low}"
        else:
            text = f"{what} in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
        return f"{text} (or unset for {self.unset})" if self.unset and with_unset else text


FINETUNE_KEYS = ("finetune_epochs", "finetune_lr", "finetune_exit_lr", "finetune_distill", "finetune_weights")
"""The settings of joint fine-tuning, the last phase: a finished run may be resumed with other
values of these (and only these) to fine-tune it (`training.progress.adds_finetuning`)."""

BOUNDS: dict[str, Bound] = {
    "epochs": Bound(0, MAX_EPOCHS, integer=True),
    "exit_epochs": Bound(0, MAX_EPOCHS, integer=True),
    "batch_size": Bound(1, integer=True),
    "lr": Bound(0, open_low=True),
    "exit_lr": Bound(0, open_low=True),
    "weight_decay": Bound(0),
    "momentum": Bound(0),
    "exit_weights": Bound(0),
    "crop_padding": Bound(0, 1024, integer=True),
    "val_fraction": Bound(0, 1, open_high=True),
    "threads": Bound(1, 1024, integer=True, unset="torch's default"),
    "kmeans_images": Bound(1, integer=True),
    "distill": Bound(0, 1),
    "distill_temperature": Bound(0, 100, open_low=True),
    "limit_train": Bound(1, integer=True, unset="all images"),
    "finetune_epochs": Bound(0, MAX_EPOCHS, integer=True),
    "finetune_lr": Bound(0, open_low=True),
    "finetune_exit_lr": Bound(0, open_low=True),
    "finetune_distill": Bound(0, 1),
    "finetune_weights": Bound(0),
    "widths": Bound(1, 65536, integer=True),
    "image_size": Bound(1, MAX_IMAGE_SIZE, integer=True),
    "codewords": Bound(2, 65536, integer=True),
    "num_classes": Bound(2, integer=True),
    "in_channels": Bound(1, integer=True),
    "spatial_level": Bound(0, 1, integer=True),
    "reduce_channels": Bound(1, 65536, integer=True),
    "exit_pools": Bound(1, integer=True),
    "exit_points": Bound(0, 65536, integer=True),
}
"""The range of every numeric config key, by its flat name (`config_keys`): the one table the
command line's flags (`cli._parser`), `check_ranges` (config files, the Python API) and
training read. The types come from the dataclass fields; this adds what a type cannot say."""


def check_config(cfg: TrainConfig) -> None:
    """Everything `resolve_config` checks, for a `TrainConfig` built in Python, and what one key asks of another.

    The types of every field (a `TrainConfig(mode="bogus")` is refused as a config file
    holding it would be), the ranges (`check_ranges`), and a frozen run's trained backbone.
    """
    from_dict(cfg.to_dict(), type(cfg))  # the types, each named like a config file's key
    check_ranges(cfg)
    if cfg.mode == "joint" and cfg.finetune_epochs:
        raise ConfigError(
            "fine-tuning follows exits trained on a frozen backbone; joint mode already trains backbone and "
            "exits together: use --mode two-phase (or frozen) with --finetune-epochs, or drop --finetune-epochs"
        )
    if cfg.mode == "frozen":
        _check_frozen_backbone(cfg)


def _check_frozen_backbone(cfg: TrainConfig) -> None:
    """Frozen mode's backbone comes from exactly one place: your classifier's weights or a bofexits run."""
    weights, checkpoint, backbone = cfg.model.backbone_weights, cfg.backbone_checkpoint, cfg.model.backbone
    if weights and checkpoint:
        raise ConfigError(
            f"frozen mode takes its trained backbone from one place, got two: --backbone-weights {weights} "
            f"(your classifier) and --backbone-checkpoint {checkpoint} (a bofexits run); drop one"
        )
    if weights and not backbone.startswith("tv:"):
        raise ConfigError(
            f"--backbone-weights loads your torchvision classifier into a tv: backbone, not {backbone!r}; "
            "pass --backbone tv:NAME (e.g. tv:resnet18), or reuse a bofexits run with --backbone-checkpoint PATH"
        )
    if not weights and not checkpoint:
        raise ConfigError(
            "frozen mode trains exits on a trained backbone: pass your classifier "
            "(--backbone tv:NAME --backbone-weights FILE, saved with torch.save(model.state_dict(), FILE)) "
            "or a bofexits run (--backbone-checkpoint PATH)"
        )


def check_ranges(cfg: TrainConfig) -> None:
    """Refuse values of the right type that mean nothing, naming the key and the allowed range (`BOUNDS`).

    Without this, `limit_train 0` trained on everything (0 read as "no limit"), `lr nan` or
    `exit_weights nan` trained to the end and failed at the last step, `epochs 1e9`
    exhausted memory, and `kmeans_images 1` trained the whole backbone phase before k-means
    found too few feature vectors for its codewords.

    >>> check_ranges(TrainConfig(limit_train=0))
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: config key 'limit_train' must be an integer >= 1 (or unset for all images), got 0
    """
    keys = config_keys(type(cfg))
    for key, bound in BOUNDS.items():
        section: Any = cfg
        for name in keys[key]:
            section = getattr(section, name)
        value = getattr(section, key)
        name = ".".join((*keys[key], key))
        items = value if isinstance(value, list) else [value]
        if value is None or all(bound.admits(v) for v in items):
            continue
        each = " each" if isinstance(value, list) else ""
        raise ConfigError(f"config key {name!r} must be {bound.describe()}{each}, got {value}")
    for key in ("exit_weights", "finetune_weights"):
        weights = getattr(cfg, key)
        if weights and sum(weights) <= 0:
            raise ConfigError(f"config key {key!r} needs finite values >= 0, not all zero; got {weights}")
    try:  # the spelling only: whether a GPU is there is checked when training starts
        check_device_name(cfg.device)
    except ConfigError as exc:
        raise ConfigError(f"config key 'device': {exc}") from None
    _check_kmeans_sample(cfg)


def _check_kmeans_sample(cfg: TrainConfig) -> None:
    """Enough images for k-means to find `codewords` centres at every exit, before any training.

    An image gives each exit one feature vector per position of its (pre-pooled) feature map,
    but how many depends on the backbone; one vector per image is the count every backbone
    reaches, so `kmeans_images` must be at least `codewords`.
    """
    m = cfg.model
    if m.exit_head == "bof" and cfg.kmeans_images < m.codewords:
        raise ConfigError(
            f"config key 'kmeans_images' ({cfg.kmeans_images}) must be at least 'codewords' ({m.codewords}): "
            "k-means needs one feature vector per codeword; raise kmeans_images or lower codewords"
        )


def _build(cls: type[C], data: Mapping[str, Any], what: str, prefix: str) -> C:
    """An instance of the dataclass `cls` from `data`, nested dataclasses from nested dicts."""
    hints = _hints(cls)
    nested = {name for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    known = set(hints) - nested
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown {what} config keys {unknown}; known keys: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        key, hint = f"{prefix}{name}", hints[name]
        if name in nested:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {key!r} expects an object of {hint.__name__} fields, got {value!r} "
                    f"({type(value).__name__})"
                )
            values[name] = _build(hint, value, name, f"{key}.")
            continue
        try:
            values[name] = _coerce(value, hint)
        except _Mismatch:
            raise ConfigError(
                f"config key {key!r} expects {_type_name(hint)}, got {value!r} ({type(value).__name__})"
            ) from None
    return cls(**values)


def _hints(cls: Any) -> dict[str, Any]:
    """Field name -> resolved type of the dataclass `cls` (the annotations are strings here)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _keys(cls: Any, path: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    found: list[tuple[str, tuple[str, ...]]] = []
    for name, hint in _hints(cls).items():
        if dataclasses.is_dataclass(hint):
            found += _keys(hint, (*path, name))
        else:
            found.append((name, path))
    names = [name for name, _ in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # a programming error: a flat flag would not know which field it sets
        raise TypeError(f"config fields {clashes} appear in two sections of {cls.__name__}")
    return found


class _Mismatch(Exception):
    """A value does not fit a field's type (turned into a `ConfigError` naming the key)."""


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as a field typed `hint` holds it, or `_Mismatch`.

    Covers what config fields use: str, int, float (an int is taken, as JSON writes 1.0 as
    1), bool, None, `X | None`, `list[X]` and `Literal[...]`. A bool is not taken for a number.
    """
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in get_args(hint):
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(hint)):
            return value
        raise _Mismatch
    if origin is list and isinstance(value, (list, tuple)):
        (item,) = get_args(hint) or (Any,)
        return [_coerce(v, item) for v in value]
    if hint is type(None) and value is None:
        return None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise _Mismatch


def _type_name(hint: Any) -> str:
    """How an error names a field's type: "int", "list[int] | None", "one of 'joint', 'frozen'"."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "None"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on it, recursing where both hold an object (a section)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
