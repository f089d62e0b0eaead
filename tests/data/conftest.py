"""Fixtures of the loader tests: isolation from the machine's data and network, a fake upstream server."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from bofexits.data import _files


class FakeResponse(io.BytesIO):
    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the real env var, user cache and system directory; any network access fails the test.

    Downloads are allowed here (the suite-wide fixture refuses them) because these tests serve
    them from a fake upstream; the real network is still unreachable through `urlopen`.
    """
    monkeypatch.delenv("BOFEXITS_DATA", raising=False)
    monkeypatch.delenv(_files.OFFLINE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(_files.SYSTEM_ENV_VAR, str(tmp_path / "system"))
    monkeypatch.setattr(_files, "SYSTEM_DATA_ROOT", tmp_path / "system")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("unexpected network access")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


Serve = Callable[[dict[str, bytes], list[tuple[str, float]]], None]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Serve:
    """serve(payloads, seen): urlopen returns payloads[file name] and records (url, timeout) in seen."""

    def install(payloads: dict[str, bytes], seen: list[tuple[str, float]]) -> None:
        def fake_urlopen(url: str, timeout: float | None = None) -> FakeResponse:
            seen.append((url, timeout or 0.0))
            return FakeResponse(payloads[url.rsplit("/", 1)[1]])

        monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)

    return install
