"""Fixtures of the loader tests: a fake upstream server for the download paths."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Callable

import pytest


class FakeResponse(io.BytesIO):
    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


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
