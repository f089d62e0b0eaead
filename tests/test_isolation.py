"""The suite sees no machine state: installed data sets, the user's cache and the network are hidden.

`make test` once passed only where `make demo` had installed Fashion-MNIST; these tests fail if the
isolation in tests/conftest.py stops covering a place the loaders look, in this process or in a
subprocess the suite starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bofexits.data import _files
from bofexits.data.fashion_mnist import FASHION_MNIST_FILES, load_fashion_mnist
from bofexits.data.registry import load_dataset
from bofexits.errors import DataError
from tests.conftest import write_fake_fashion_mnist


def test_loading_without_data_dir_is_refused_in_the_suite() -> None:
    # Even where `dataset-fashion-mnist` is installed, the suite's loaders must not find it.
    with pytest.raises(DataError, match=r"downloads are off \(\$BOFEXITS_OFFLINE is set\)"):
        load_fashion_mnist()
    with pytest.raises(DataError, match="Fashion-MNIST"):
        load_dataset("fashion-mnist")


def test_no_place_the_loaders_search_is_the_machines() -> None:
    searched = _files.candidate_dirs(FASHION_MNIST_FILES, None)
    home_cache = Path.home() / ".cache" / "bofexits"
    for place in searched:
        assert not place.is_relative_to("/usr/share/datasets"), place
        assert not place.is_relative_to(home_cache), place
    assert "BOFEXITS_DATA" not in os.environ


def test_a_download_attempt_fails_at_once_even_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # With $BOFEXITS_OFFLINE lifted, the download itself reaches the suite's refusing urlopen.
    monkeypatch.delenv(_files.OFFLINE_ENV_VAR)
    with pytest.raises(DataError, match="network is off in the test suite"):
        load_fashion_mnist()


def test_a_subprocess_sees_the_same_hidden_machine(tmp_path: Path) -> None:
    code = (
        "from bofexits.data.fashion_mnist import load_fashion_mnist\n"
        "from bofexits.errors import DataError\n"
        "try:\n    load_fashion_mnist()\nexcept DataError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("refused:") and "downloads are off" in out.stdout


def test_fake_data_in_the_system_place_is_found_only_through_it(tmp_path: Path) -> None:
    # The hidden system folder is a real, empty folder: writing there is what a test that wants
    # "installed" data does, and it is found; nothing else is.
    write_fake_fashion_mnist(_files.system_root() / "fashion-mnist", n_train=7, n_test=3)
    train, test = load_fashion_mnist()
    assert (len(train), len(test)) == (7, 3)


@pytest.mark.real_data
def test_real_fashion_mnist_when_installed() -> None:
    # Skipped (with the reason) on a machine without the data set; where `make demo` installed it,
    # the loader finds the full set without a download.
    train, test = load_fashion_mnist(download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape[1:] == (1, 28, 28)
