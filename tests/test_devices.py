"""The one reading of `--device`: spellings, "auto", a GPU that is not there, and moving a model."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch
from torch import nn

from bofexits.devices import (
    check_device_name,
    describe_device,
    device_argument,
    device_of,
    place_model,
    resolve_device,
)
from bofexits.errors import ConfigError


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_accepted_spellings(name: str) -> None:
    assert check_device_name(name) == name == device_argument(name)


@pytest.mark.parametrize(
    "name", ["bogus", "", "CPU", "gpu", "cuda:", "cuda:x", "cuda:-1", "mps", " cpu", None]
)
def test_other_spellings_are_refused_naming_the_accepted_ones(name: object) -> None:
    with pytest.raises(ConfigError, match=r"unknown device .*; use auto, cpu, cuda or cuda:N"):
        check_device_name(name)


def test_the_argparse_type_reports_the_message() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="unknown device 'bogus'"):
        device_argument("bogus")


def test_auto_is_the_cpu_without_a_gpu(no_gpu: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))


def test_auto_is_the_gpu_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_a_gpu_is_refused_with_what_to_do(no_gpu: None, name: object) -> None:
    with pytest.raises(ConfigError, match=r"sees no CUDA GPU; use --device cpu or auto") as info:
        resolve_device(name)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(
        ConfigError, match=r"'cuda:3' asked for, but torch sees 1 CUDA GPU\(s\) \(cuda:0 to cuda:0\)"
    ):
        resolve_device("cuda:3")


def test_other_torch_devices_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown device 'meta'"):
        resolve_device(torch.device("meta"))


def test_describe_and_place() -> None:
    assert describe_device(torch.device("cpu")) == "cpu"
    net = nn.Sequential(nn.ReLU(), nn.Linear(2, 2))
    assert device_of(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    assert place_model(net) == torch.device("cpu") == device_of(net)  # None: left where it is
    assert place_model(net, "auto" if not torch.cuda.is_available() else "cpu") == torch.device("cpu")


def test_the_spelling_check_needs_no_torch() -> None:
    # `bofexits predict EXPORT_DIR --device cuda` is parsed on machines without torch.
    code = (
        "import sys; sys.modules['torch'] = None; from bofexits.devices import check_device_name; "
        "print(check_device_name('cuda:1'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "cuda:1", out.stderr
