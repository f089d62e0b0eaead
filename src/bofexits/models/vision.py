"""torchvision classifiers cut into stages: early exits on the model a user already has.

`attach(model)` cuts a torchvision classifier (built by the user, with the user's weights)
into stages, keeps its own head as the final exit and adds BoF exits. The `tv:NAME` backbones
(`tv:resnet18`, `tv:resnet50`, `tv:mobilenet_v3_large`, `tv:efficientnet_b0`,
`tv:convnext_tiny`) do the same for configs and the CLI: they build the architecture with
``weights=None`` and load a state_dict file when one is given; nothing is ever downloaded.
torchvision is imported only when a network is built (`pip install 'bofexits[vision]'`).

Default split points are stage ends (ResNet ``layerN``, children of ``features``) nearest to
1/4, 1/2 and 3/4 of the backbone's MACs at 224x224, so the three exits split the compute into
roughly even parts (the per-model choice and its numbers: docs/decisions.md, "torchvision
backbones"):

=================  ===================================  ===========================
architecture       points                               MACs before each exit
=================  ===================================  ===========================
ResNet (any)       layer1, layer2, layer3               18: 32/55/77 %, 50: 19/44/80 %
MobileNetV3 large  features.3, features.10, features.12  20/47/70 %
MobileNetV3 small  features.3, features.6, features.8    29/51/62 %
EfficientNet B0-7  features.3, features.4, features.5    B0: 30/41/63 %
ConvNeXt           features.1, features.3, features.5    tiny: 17/34/83 %
=================  ===================================  ===========================

Exits read maps of at most 28x28 (`exit_pools`): at 224x224 the 56x56 maps are average-pooled
by 2 first. All three exits together then cost, as a share of the backbone's MACs at 224x224
(`measure_costs`, `ModelConfig` defaults: K = 32, spatial level 1, 1000 classes): resnet18
0.38 %, resnet50 0.64 %, mobilenet_v3_large 1.01 %, efficientnet_b0 0.67 %, convnext_tiny 0.22 %.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from bofexits._checks import require_int, state_mismatch, unsafe_load_reason
from bofexits.errors import CheckpointError, ConfigError
from bofexits.models.backbones import Backbone
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import ExitFactory, MultiExitNetwork, _Flatten2d, check_chain

__all__ = [
    "MAX_EXIT_SIDE",
    "WeightsFile",
    "attach",
    "check_torchvision_installed",
    "check_weights_file",
    "default_points",
    "exit_pools",
    "load_weights_file",
    "read_weights_file",
    "torchvision_backbone",
]

log = logging.getLogger(__name__)

#: Largest map side an exit quantises; larger maps are average-pooled first (56 -> 28 at 224x224).
MAX_EXIT_SIDE = 28
_INSTALL = "pip install 'bofexits[vision]' (e.g. torch 2.14.1 with torchvision 0.29.1)"
_MISSING = f"torchvision backbones need torchvision, which is not installed: {_INSTALL}"

# (class name, number of children of `features`, None when it has none) -> default split points.
_DEFAULT_POINTS: dict[tuple[str, int | None], tuple[str, ...]] = {
    ("ResNet", None): ("layer1", "layer2", "layer3"),
    ("MobileNetV3", 17): ("features.3", "features.10", "features.12"),  # large
    ("MobileNetV3", 13): ("features.3", "features.6", "features.8"),  # small
    ("EfficientNet", 9): ("features.3", "features.4", "features.5"),  # B0-B7 (V2 differs)
    ("ConvNeXt", 8): ("features.1", "features.3", "features.5"),
}


def attach(
    model: nn.Module,
    *,
    points: Sequence[str] | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] = (3, 224, 224),
    exits: ExitFactory | Mapping[str, Any] | None = None,
) -> MultiExitNetwork:
    """Early exits on a torchvision classifier: its stages, its own head last, BoF exits between.

    The stages are the model's own modules, not copies: training the network trains `model`,
    and the changes below (head, first convolution) are made to `model` itself.

    Args:
        model: a torchvision ResNet, MobileNetV3, EfficientNet or ConvNeXt with your weights, or
            any classifier whose forward chains its children (``features`` opened up) given `points`.
        points: layers to exit after, e.g. ``["layer1", "layer3"]`` or ``["features.5"]``;
            None: the architecture's defaults (`default_points`).
        num_classes: None keeps the model's head. Another count replaces the head's last Linear
            with a freshly initialised one; the rest of the network keeps its weights.
        input_shape: (C, H, W) of one input. A C other than the first convolution's replaces
            that convolution: for C = 1 its kernels summed over the input channels (a grey image
            then gives what the grey image copied to 3 channels gave), else cycled and rescaled.
        exits: an exit factory (``lambda channels: BoFExits(channels, 10)``), or keyword options
            of `BoFExits` (``{"codewords": 16}``); None: `BoFExits` with its defaults. Unless
            given, BoF exits pre-pool by `exit_pools`.

    Raises:
        ConfigError: unknown or repeated points, no defaults for this model, or stages whose
            chain does not give the model's own output (checked on a random input).

    >>> from collections import OrderedDict
    >>> toy = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 3, padding=1), body=nn.Conv2d(4, 4, 3, 2, 1),
    ...     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 5)))
    >>> net = attach(toy, points=["stem", "body"], input_shape=(3, 8, 8))
    >>> [tuple(logits.shape) for logits in net(torch.zeros(2, 3, 8, 8))]
    [(2, 5), (2, 5), (2, 5)]
    """
    points = tuple(points) if points is not None else default_points(model)
    _positions(model, points)  # before `model` is changed
    _adapt_input_conv(model, require_int("input channels", input_shape[0], minimum=1))
    if num_classes is not None:
        _replace_head(model, num_classes)
    stages, shapes = _cut(model, points, input_shape)
    if callable(exits):
        return MultiExitNetwork(stages, exits, input_shape)
    options = {"pools": exit_pools([s[1:] for s in shapes[:-1]]), **(exits or {})}
    classes = shapes[-1][0]
    return MultiExitNetwork(stages, lambda ch: BoFExits(ch, classes, **options), input_shape)


def default_points(model: nn.Module) -> tuple[str, ...]:
    """The layers `attach` exits after by default (table in the module docstring).

    Raises:
        ConfigError: no defaults for this architecture; the message lists the layer names.
    """
    features = getattr(model, "features", None)
    key = (type(model).__name__, len(features) if isinstance(features, nn.Sequential) else None)
    if key not in _DEFAULT_POINTS:
        names = [name for name, _ in _units(model)][:-1]
        raise ConfigError(
            f"no default split points for {type(model).__name__}; pass points=[...] naming the layers to "
            f"exit after, from: {', '.join(names)}"
        )
    return _DEFAULT_POINTS[key]


def exit_pools(map_sizes: Sequence[Sequence[int]]) -> list[int]:
    """Average-pool factor per exit so that no BoF exit quantises a map larger than 28x28.

    An exit's quantiser costs H*W*C*K MACs plus a softmax per position; a 56x56 map has four
    times the positions of a 28x28 one for little more than the backbone already summarises.

    >>> exit_pools([(56, 56), (28, 28), (14, 14)])
    [2, 1, 1]
    """
    return [max(1, math.ceil(max(h, w) / MAX_EXIT_SIDE)) for h, w in map_sizes]


def torchvision_backbone(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights: str | Path | None,
    points: Sequence[str] | None,
) -> Backbone:
    """torchvision's `arch` built with ``weights=None``, your weights loaded, cut as `attach` cuts it.

    What the ``tv:NAME`` registry entries run; ``create_backbone("tv:resnet18")`` supplies the
    defaults (1000 classes, 3 channels, 224x224, no weights file, default points).

    Args:
        arch: a torchvision model name ("resnet18").
        num_classes, in_channels: as `attach`'s; a new head is freshly initialised.
        image_size: input height and width.
        weights: a state_dict file of torchvision's `arch` (any head size and input channels:
            it is loaded first, then the head and first convolution are adapted). Read with
            ``torch.load(weights_only=True)``. Hub names ("DEFAULT") are refused: nothing is downloaded.
        points: split points (None: `default_points`).

    Raises:
        ConfigError: torchvision missing, a weights name instead of a file, a missing file.
        CheckpointError: a file that is corrupt, unsafe, not a state_dict, or of another architecture.
    """
    models = _torchvision()
    state = load_weights_file(weights) if weights is not None else None
    try:
        model = models.get_model(
            arch, weights=None, **({} if state is not None else {"num_classes": num_classes})
        )
    except ValueError as exc:
        raise ConfigError(f"torchvision has no model {arch!r} ({exc})") from None
    if state is not None:
        _load_into(model, state, arch, weights)
        head, linear = _head(model)
        if linear.out_features != num_classes:  # fine-tuning to new classes; frozen mode refuses it first
            log.info(
                "the head %s of %s has %d outputs, the network %d: it is replaced by a freshly initialised one",
                head, weights, linear.out_features, num_classes,
            )
        _replace_head(model, num_classes)
    _adapt_input_conv(model, require_int("in_channels", in_channels, minimum=1))
    input_shape = (in_channels, require_int("image_size", image_size, minimum=1), image_size)
    stages, shapes = _cut(model, points if points is not None else default_points(model), input_shape)
    return Backbone(stages, input_shape, exit_pools=exit_pools([s[1:] for s in shapes[:-1]]))


# --- weights files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFile:
    """What a torchvision weights file fixes of the network: its head and its input channels.

    Attributes:
        head: the name of the classifier's last Linear ("fc", "classifier.3").
        num_classes: that Linear's outputs in the file.
        first_conv: the name of the first convolution ("conv1", "features.0.0").
        in_channels: that convolution's input channels in the file.
    """

    head: str
    num_classes: int
    first_conv: str
    in_channels: int


def read_weights_file(arch: str, weights: str | Path) -> WeightsFile:
    """The head and input channels of a state_dict file of torchvision's `arch`, checked to fit it.

    Frozen mode reads this before the data: the file's head is the final exit, so its class
    count must be the data's, and its first convolution says which channels the images load as.

    Raises:
        ConfigError, CheckpointError: as `torchvision_backbone` raises them for this file.
    """
    state = load_weights_file(weights)
    try:
        model = _torchvision().get_model(arch, weights=None)
    except ValueError as exc:
        raise ConfigError(f"torchvision has no model {arch!r} ({exc})") from None
    _load_into(model, state, arch, weights)  # refuses a file of another architecture
    head, linear = _head(model)
    conv, first = _first_conv(model)
    return WeightsFile(head, linear.out_features, conv, first.in_channels)


# A torchvision weights name rather than a file: "DEFAULT", "IMAGENET1K_V2", "ResNet18_Weights.DEFAULT".
_WEIGHTS_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Z0-9_]+)?")


def check_weights_file(weights: object) -> Path:
    """The path of an existing weights file; a weights name or enum (which would need a download) is refused.

    >>> check_weights_file("DEFAULT")
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: bofexits never downloads weights (asked for 'DEFAULT'): save them yourself, \
e.g. torch.save(torchvision.models.get_model('resnet18', weights='DEFAULT').state_dict(), 'resnet18.pt'), \
then pass the file: --backbone-weights resnet18.pt (backbone_weights in a config, weights= in Python)
    """
    text = str(weights)
    path = Path(text).expanduser()
    if isinstance(weights, (str, Path)) and path.is_file():
        return path
    if not isinstance(weights, (str, Path)) or (_WEIGHTS_NAME.fullmatch(text) and not path.exists()):
        raise ConfigError(
            f"bofexits never downloads weights (asked for {text!r}): save them yourself, e.g. "
            "torch.save(torchvision.models.get_model('resnet18', weights='DEFAULT').state_dict(), 'resnet18.pt'), "
            "then pass the file: --backbone-weights resnet18.pt (backbone_weights in a config, weights= in Python)"
        )
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    raise ConfigError(
        f"weights file {text or repr(text)} {what}; pass a file saved with torch.save(model.state_dict(), PATH)"
    )


def load_weights_file(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file, loaded without unpickling code (``weights_only=True``).

    Raises:
        ConfigError: see `check_weights_file`.
        CheckpointError: the file is corrupt, unsafe, a bofexits checkpoint, or not a state_dict.
    """
    path = check_weights_file(weights)
    save_hint = "save one with torch.save(model.state_dict(), PATH)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises almost any type on garbage
        raise CheckpointError(
            f"{path} is not a safe weights file: it is corrupt or truncated, or holds objects that would run "
            f"code when loaded ({unsafe_load_reason(exc)}); {save_hint}"
        ) from None
    if isinstance(state, Mapping) and state.get("format") == "bofexits-checkpoint":
        raise CheckpointError(
            f"{path} is a bofexits checkpoint, not a backbone state_dict; reuse its backbone with "
            "--mode frozen --backbone-checkpoint PATH"
        )
    if not (
        isinstance(state, Mapping)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointError(f"{path} holds no state_dict (layer names mapped to tensors); {save_hint}")
    return dict(state)


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, source: object) -> None:
    """Load `state`, first giving the head and first convolution the file's sizes."""
    head, _ = _head(model)
    conv, _ = _first_conv(model)
    if state.get(f"{head}.weight") is not None and state[f"{head}.weight"].ndim == 2:
        _replace_head(model, int(state[f"{head}.weight"].shape[0]))
    if state.get(f"{conv}.weight") is not None and state[f"{conv}.weight"].ndim == 4:
        _adapt_input_conv(model, int(state[f"{conv}.weight"].shape[1]))
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"{source} does not fit torchvision's {arch} ({mismatch}); pass the state_dict of a torchvision "
            f"{arch}, saved with torch.save(model.state_dict(), PATH)"
        )
    model.load_state_dict(state)


# --- cutting ------------------------------------------------------------------------------------


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's forward as a chain of named pieces: its children, with ``features`` opened up.

    A Linear that receives a map gets it flattened, as the forwards of ResNet, MobileNetV3 and
    EfficientNet do with `torch.flatten`; ConvNeXt's classifier holds its own `nn.Flatten`.
    """
    children = dict(model.named_children())
    features = children.get("features")
    if isinstance(features, nn.Sequential) and list(children) == ["features", "avgpool", "classifier"]:
        head = children["classifier"]
        if not any(isinstance(m, nn.Flatten) for m in head.modules()):
            head = _Flatten2d(head)
        opened = [(f"features.{name}", m) for name, m in features.named_children()]
        return [*opened, ("avgpool", children["avgpool"]), ("classifier", head)]
    return [(name, _Flatten2d(m) if isinstance(m, nn.Linear) else m) for name, m in children.items()]


def _stage(units: Sequence[tuple[str, nn.Module]]) -> nn.Sequential:
    """One stage, keeping the model's names: features.3, features.4 -> Sequential(features=Sequential(3, 4))."""
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in units:
        parent, _, child = name.rpartition(".")
        if parent:
            parts.setdefault(parent, nn.Sequential()).add_module(child, module)
        else:
            parts[name] = module
    return nn.Sequential(parts)


def _positions(model: nn.Module, points: Sequence[str]) -> list[int]:
    """Where the stages end in `_units(model)`, refusing unknown, repeated and final points."""
    names = [name for name, _ in _units(model)]
    unknown = [p for p in points if p not in names]
    if unknown or not points:
        raise ConfigError(
            f"split points {list(points)} must name layers of {type(model).__name__}; choose from: "
            f"{', '.join(names[:-1])}"
        )
    at = sorted(names.index(p) for p in points)
    if len(set(at)) != len(at) or at[-1] >= len(names) - 1:
        raise ConfigError(
            f"split points {list(points)} must be distinct layers before the last one ({names[-1]})"
        )
    return at


def _cut(
    model: nn.Module, points: Sequence[str], input_shape: Sequence[int]
) -> tuple[list[nn.Module], list[tuple[int, ...]]]:
    """Stages ending after each named layer and their output shapes, checked against `model(x)`."""
    at = _positions(model, points)
    units = _units(model)
    bounds = [0, *(i + 1 for i in at), len(units)]
    stages: list[nn.Module] = [_stage(units[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return stages, check_chain(stages, model, input_shape)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's last Linear (name, module): what a new class count replaces."""
    last, head = list(model.named_children())[-1]
    linears = [(f"{last}.{n}".rstrip("."), m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{type(model).__name__}'s last layer ({last}) holds no Linear classifier to resize; "
            "pass num_classes=None and replace the head yourself"
        )
    return linears[-1]


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no Conv2d; attach cuts convolutional classifiers")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """A freshly initialised last Linear with `num_classes` outputs, unless it has them already."""
    name, linear = _head(model)
    if linear.out_features == require_int("num_classes", num_classes, minimum=1):
        return
    new = nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None)
    _set_module(model, name, new.to(linear.weight.device, linear.weight.dtype))


@torch.no_grad()
def _adapt_input_conv(model: nn.Module, channels: int) -> None:
    """The first convolution for `channels` inputs, its kernels summed (1) or cycled and rescaled."""
    name, conv = _first_conv(model)
    if conv.in_channels == channels:
        return
    if conv.groups != 1:
        raise ConfigError(
            f"the first convolution of {type(model).__name__} is grouped; give it {conv.in_channels} channels"
        )
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    w = conv.weight  # (O, C0, kh, kw)
    if channels == 1:
        new.weight.copy_(w.sum(1, keepdim=True))
    else:
        new.weight.copy_(
            w.repeat(1, math.ceil(channels / w.shape[1]), 1, 1)[:, :channels] * (w.shape[1] / channels)
        )
    if conv.bias is not None and new.bias is not None:
        new.bias.copy_(conv.bias)
    _set_module(model, name, new)


def check_torchvision_installed() -> None:
    """Refuse a `tv:` backbone up front (before any data is read) when torchvision is not installed.

    Looks for the package without importing it, which takes seconds.
    """
    if importlib.util.find_spec("torchvision") is None:
        raise ConfigError(_MISSING)


def _torchvision() -> ModuleType:
    """`torchvision.models`, imported on first use so that bofexits runs without torchvision."""
    try:
        import torchvision.models
    except ImportError:
        raise ConfigError(_MISSING) from None
    except Exception as exc:  # installed, but built for another torch (missing operators)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"torchvision is installed but fails to load ({reason}); install the torchvision built for "
            f"torch {torch.__version__}: {_INSTALL}"
        ) from None
    return torchvision.models
