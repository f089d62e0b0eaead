"""Reference backbones behind a small registry: `create_backbone(name)`, `list_backbones()`.

Each builder returns its stages already split at the default exit points (one exit after
each of the first three stages, each stage halving the resolution), plus the input shape and
the per-exit pre-pool factors that keep BoF exits cheap on large early maps.

`vgg28` is for 28x28 grey images (Fashion-MNIST, MNIST); `resnet32` (residual) and `vgg32`
(a plain chain, like the VGG-16 of SDN's CIFAR experiments) for 32x32 RGB (CIFAR-10/100, SVHN).
The `tv:` names (`tv:resnet18`, ...) are torchvision classifiers cut into stages by
`bofexits.models.vision`; that module, and torchvision, load only when one is built, so the
names are listed without torchvision.

Builders share keyword options (`num_classes`, `in_channels`, and where they apply `widths`,
`image_size`, `weights`); `backbone_options(name)` says which one takes, and an option a
builder does not take is refused by name.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bofexits.errors import ConfigError

__all__ = [
    "TORCHVISION_BACKBONES",
    "Backbone",
    "backbone_options",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]


@dataclass
class Backbone:
    """Stages of a reference network and the facts a multi-exit wrapper needs."""

    stages: list[nn.Module]
    input_shape: tuple[int, int, int]
    exit_pools: list[int] = field(default_factory=list)


_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator adding a builder to the registry under `name`."""

    def add(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ConfigError(f"backbone {name!r} is already registered; pick another name")
        _REGISTRY[name] = fn
        return fn

    return add


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names accepted by `create_backbone`, optionally filtered by a glob `pattern` ("vgg*").

    >>> "vgg28" in list_backbones()
    True
    >>> list_backbones("vgg*")
    ['vgg28', 'vgg32']
    """
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _builder(name: str) -> Callable[..., Backbone]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    return _REGISTRY[name]


def backbone_options(name: str) -> tuple[str, ...]:
    """The keyword options the builder of backbone `name` takes.

    >>> backbone_options("vgg28")
    ('num_classes', 'in_channels', 'widths')
    """
    return tuple(inspect.signature(_builder(name)).parameters)


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone, e.g. ``create_backbone("vgg28", num_classes=10)``.

    Raises:
        ConfigError: an unknown name, or an option this backbone does not take (``image_size``
            for a fixed-size reference backbone, ``widths`` for a torchvision one).
    """
    builder = _builder(name)
    unknown = sorted(set(kwargs) - set(backbone_options(name)))
    if unknown:
        raise ConfigError(
            f"backbone {name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(backbone_options(name))}"
        )
    return builder(**kwargs)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone("vgg28")
def vgg28(num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128)) -> Backbone:
    """VGG-style CNN for 28x28 images: four stages of 3x3 conv-BN-ReLU, 2x2 max-pool between.

    Stages end after their max-pool, so the exits read the pooled maps (14x14, 7x7, 3x3): the
    pooling the backbone does anyway keeps the BoF exits cheap. Exit 1 also average-pools its
    14x14 map to 7x7 before quantising (the histogram is an average, so a quarter of the
    positions carry nearly the same information): 4x cheaper in batches, and on Fashion-MNIST
    0.75 pp more accurate at exit 1 and a cheaper knee (46 vs 51 % of the MACs;
    docs/decisions.md, "Cheaper exits").
    """
    if len(widths) != 4:
        raise ConfigError(f"vgg28 takes 4 widths, got {list(widths)}")
    a, b, c, d = widths
    stages: list[nn.Module] = [
        nn.Sequential(*_conv_bn(in_channels, a), *_conv_bn(a, a), nn.MaxPool2d(2)),  # (B, a, 14, 14)
        nn.Sequential(*_conv_bn(a, b), *_conv_bn(b, b), nn.MaxPool2d(2)),  # (B, b, 7, 7)
        nn.Sequential(*_conv_bn(b, c), *_conv_bn(c, c), nn.MaxPool2d(2)),  # (B, c, 3, 3)
        nn.Sequential(*_conv_bn(c, d), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, num_classes)),
    ]
    return Backbone(stages, (in_channels, 28, 28), exit_pools=[2, 1, 1])


@register_backbone("vgg32")
def vgg32(
    num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256)
) -> Backbone:
    """VGG-style CNN for 32x32 RGB images: four stages of two 3x3 conv-BN-ReLU, 2x2 max-pool between.

    Exits read the pooled maps (16x16, 8x8, 4x4). The default widths are twice vgg28's: RGB
    natural images need the capacity (about 53 M MACs, 1.2 M parameters).
    """
    if len(widths) != 4:
        raise ConfigError(f"vgg32 takes 4 widths, got {list(widths)}")
    a, b, c, d = widths
    stages: list[nn.Module] = [
        nn.Sequential(*_conv_bn(in_channels, a), *_conv_bn(a, a), nn.MaxPool2d(2)),  # (B, a, 16, 16)
        nn.Sequential(*_conv_bn(a, b), *_conv_bn(b, b), nn.MaxPool2d(2)),  # (B, b, 8, 8)
        nn.Sequential(*_conv_bn(b, c), *_conv_bn(c, c), nn.MaxPool2d(2)),  # (B, c, 4, 4)
        nn.Sequential(
            *_conv_bn(c, d), *_conv_bn(d, d), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, num_classes)
        ),
    ]
    return Backbone(stages, (in_channels, 32, 32), exit_pools=[1, 1, 1])


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016) with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.act(self.body(x) + self.shortcut(x))


@register_backbone("resnet32")
def resnet32(
    num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128), blocks: int = 2
) -> Backbone:
    """Small ResNet for 32x32 RGB images: four stages of `blocks` basic blocks (32, 16, 8, 4 px)."""
    if len(widths) != 4:
        raise ConfigError(f"resnet32 takes 4 widths, got {list(widths)}")

    def group(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [BasicBlock(cin, cout, stride), *[BasicBlock(cout, cout) for _ in range(blocks - 1)]]

    a, b, c, d = widths
    stages: list[nn.Module] = [
        nn.Sequential(*_conv_bn(in_channels, a), *group(a, a, 1)),
        nn.Sequential(*group(a, b, 2)),
        nn.Sequential(*group(b, c, 2)),
        nn.Sequential(*group(c, d, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, num_classes)),
    ]
    return Backbone(stages, (in_channels, 32, 32), exit_pools=[2, 1, 1])


#: torchvision architectures registered as `tv:NAME` (`bofexits.models.vision`).
TORCHVISION_BACKBONES: tuple[str, ...] = (
    "convnext_tiny",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "resnet18",
    "resnet50",
)


def _torchvision_entry(arch: str) -> Callable[..., Backbone]:
    def build(
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        weights: str | Path | None = None,
        points: Sequence[str] | None = None,
    ) -> Backbone:
        from bofexits.models.vision import torchvision_backbone  # imports torchvision on first use

        return torchvision_backbone(
            arch,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            weights=weights,
            points=points,
        )

    build.__doc__ = f"torchvision's {arch} cut into stages (`bofexits.models.vision.torchvision_backbone`)."
    return build


for _arch in TORCHVISION_BACKBONES:
    register_backbone(f"tv:{_arch}")(_torchvision_entry(_arch))
