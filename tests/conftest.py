"""Shared fixtures: tiny multi-exit networks that build and run in milliseconds; isolation from the machine.

Every test runs as on a new machine: the installed data sets, the user's cache and the network are
hidden by the autouse fixture `_machine_hidden`, so a test that passes only where `make demo` once
installed Fashion-MNIST fails everywhere. A test that needs the real data set says so with
``@pytest.mark.real_data`` and is skipped, with the reason, where it is absent.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


# The machine as the suite found it, for tests marked `real_data`.
_MACHINE_ENV = {
    name: os.environ.get(name)
    for name in (
        _files.ENV_VAR,
        "XDG_CACHE_HOME",
        "TORCH_HOME",
        _files.SYSTEM_ENV_VAR,
        _files.OFFLINE_ENV_VAR,
    )
}
_MACHINE_SYSTEM_ROOT = _files.SYSTEM_DATA_ROOT
_MACHINE_URLOPEN = urllib.request.urlopen


def _no_network(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError(
        "the network is off in the test suite (tests/conftest.py); mark a test that means to reach it"
    )


def _real_data_present() -> bool:
    """Whether Fashion-MNIST is where the loaders look on this machine, without downloading."""
    from bofexits.data.fashion_mnist import FASHION_MNIST_FILES
    from bofexits.errors import DataError

    try:
        _files.locate(FASHION_MNIST_FILES, download=False)
    except DataError:
        return False
    return True


def _hide_machine(mp: pytest.MonkeyPatch, empty: Path) -> None:
    """Point every place the loaders look at folders under `empty`, and refuse downloads at once.

    Environment variables reach the subprocesses tests start (the CLI, torchrun, benchmarks);
    the module attributes cover code already imported in this process. `TORCH_HOME` keeps any
    torch.hub cache out of the user's home as well.
    """
    mp.delenv(_files.ENV_VAR, raising=False)
    mp.setenv("XDG_CACHE_HOME", str(empty / "cache"))
    mp.setenv("TORCH_HOME", str(empty / "torch"))
    mp.setenv(_files.SYSTEM_ENV_VAR, str(empty / "system"))
    mp.setenv(_files.OFFLINE_ENV_VAR, "1")
    mp.setattr(_files, "SYSTEM_DATA_ROOT", empty / "system")
    mp.setattr(urllib.request, "urlopen", _no_network)


@pytest.fixture(scope="session", autouse=True)
def _machine_hidden_for_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The machine hidden before any fixture of a wider scope runs (module fixtures train on data too)."""
    with pytest.MonkeyPatch.context() as mp:
        _hide_machine(mp, tmp_path_factory.mktemp("machine"))
        yield


@pytest.fixture(autouse=True)
def _machine_hidden(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own empty places (nothing one test caches reaches the next), unless it asks
    for the real data with ``@pytest.mark.real_data``: then it sees the machine as it is, or is skipped."""
    if request.node.get_closest_marker("real_data") is None:
        _hide_machine(monkeypatch, tmp_path_factory.mktemp("machine"))
        return
    for name, value in _MACHINE_ENV.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(_files, "SYSTEM_DATA_ROOT", _MACHINE_SYSTEM_ROOT)
    monkeypatch.setattr(urllib.request, "urlopen", _MACHINE_URLOPEN)
    if not _real_data_present():
        pytest.skip("needs the real Fashion-MNIST, absent here (`make demo` installs dataset-fashion-mnist)")


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
def fake_data(tmp_path: Path) -> Path:
    """A small Fashion-MNIST folder (the system copy, the cache and the network are hidden for every test)."""
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
