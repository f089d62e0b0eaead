"""Shared fixtures: tiny multi-exit networks that build and run in milliseconds."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bofexits.config import ModelConfig, TrainConfig
from bofexits.data import _files, write_idx
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import MultiExitNetwork

# Tiny tensors gain nothing from intra-op threads, and threads thrash on a busy machine.
torch.set_num_threads(1)
# The first torch.testing.assert_close call pays ~1 s of lazy imports; pay it once at collection.
# The same holds for the first FlopCounterMode (~0.8 s).
torch.testing.assert_close(torch.zeros(1), torch.zeros(1))
with FlopCounterMode(display=False):
    torch.zeros(1, 1) @ torch.zeros(1, 1)

TINY_SHAPE = (2, 8, 8)
TINY_CLASSES = 5


def tiny_stages(seed: int = 0) -> list[nn.Module]:
    """Four stages on (2, 8, 8) inputs: maps (4, 8, 8), (6, 4, 4), (8, 4, 4), then 5 logits."""
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, TINY_CLASSES)),
    ]


def make_tiny_net(
    seed: int = 0, *, kmeans_init: bool = True, dtype: torch.dtype = torch.float64, **exit_kwargs: object
) -> MultiExitNetwork:
    """A random tiny multi-exit network, exits k-means-initialised on random images."""
    kwargs: dict[str, object] = {"codewords": 4}
    kwargs.update(exit_kwargs)
    net = MultiExitNetwork(
        tiny_stages(seed),
        lambda ch: BoFExits(ch, TINY_CLASSES, **kwargs),
        TINY_SHAPE,  # type: ignore[arg-type]
    )
    if kmeans_init:
        # k-means runs in float32 (see test_kmeans), so initialise first and convert after.
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(8, *TINY_SHAPE, generator=gen)
        with torch.no_grad():
            maps, _ = net.features(x)
        net.exits.init_from_features(maps, generator=gen)
    return net.to(dtype).eval()


@pytest.fixture
def tiny_net() -> MultiExitNetwork:
    return make_tiny_net()


@pytest.fixture
def tiny_net_factory() -> Callable[..., MultiExitNetwork]:
    return make_tiny_net


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    """images(n, seed) -> (n, 2, 8, 8) float64 random inputs."""

    def make(n: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.randn(n, *TINY_SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)

    return make


def write_fake_fashion_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Fashion-MNIST-format IDX files (gzip) with an orderless cue: class c paints a square at grey level 24c+20."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 12, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 6:22, 6:22] += np.uint8(24 * c + 20)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def write_fake_data() -> Callable[..., Path]:
    """write_fake_data(root, n_train=300, n_test=100, seed=0): the writer behind `fake_data`, for wider scopes."""
    return write_fake_fashion_mnist


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small Fashion-MNIST folder; the system copy, the cache and the network are hidden."""
    monkeypatch.delenv("BOFEXITS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(_files, "SYSTEM_DATA_ROOT", tmp_path / "system")

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return write_fake_fashion_mnist(tmp_path / "fmnist")


def _tiny_train_config(data_dir: Path, **overrides: object) -> TrainConfig:
    cfg = TrainConfig(
        data_dir=str(data_dir),
        mode="joint",
        epochs=2,
        batch_size=32,
        lr=3e-3,
        kmeans_images=64,
        threads=1,
        device="cpu",  # deterministic on any machine (a GPU's backward passes are not bit-reproducible)
        model=ModelConfig(widths=[4, 8, 8, 16], codewords=8),
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def tiny_config() -> Callable[..., TrainConfig]:
    """tiny_config(data_dir, **overrides): trains a small vgg28 on the fake data in about a second."""
    return _tiny_train_config
