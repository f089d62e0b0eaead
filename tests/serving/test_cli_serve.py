"""`bofexits serve`'s flags reach the server options; a non-loopback host without a key is warned about."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bofexits.cli import main
from bofexits.serving import server
from bofexits.serving.server import ServeOptions, run_server


def test_flags_reach_the_options(monkeypatch: pytest.MonkeyPatch, small_run: dict[str, Any]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "run_server", lambda source, opts: seen.update(source=source, opts=opts) or 0)
    argv = [
        "-q",
        "serve",
        str(small_run["ckpt"]),
        "--port",
        "9001",
        "--max-batch",
        "8",
        "--max-wait-ms",
        "2",
        "--max-queue",
        "50",
        "--latency-slo-ms",
        "40",
        "--beta",
        "0.3",
        "--api-key",
        "k",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    opts: ServeOptions = seen["opts"]
    assert (opts.port, opts.max_batch, opts.max_wait_ms, opts.max_queue) == (9001, 8, 2.0, 50)
    assert (opts.latency_slo_ms, opts.beta, opts.api_key, opts.device, opts.host) == (
        40.0,
        0.3,
        "k",
        "cpu",
        "127.0.0.1",
    )


@pytest.mark.parametrize("flag", [["--max-batch", "0"], ["--latency-slo-ms", "0"], ["--port", "70000"]])
def test_bad_flags_are_one_line_errors(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "ckpt.pt", *flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bofexits: error: argument " + flag[0])


def test_a_missing_source_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert main(["-q", "serve", str(tmp_path / "nothing.pt"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_public_host_without_a_key_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, small_run: dict[str, Any]
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # build everything, serve nothing
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="bofexits.serving.server"):
        assert run_server(small_run["ckpt"], ServeOptions(host="0.0.0.0", threads=1, device="cpu")) == 0
    assert "without an API key" in caplog.text
    caplog.clear()
    monkeypatch.setenv(server.API_KEY_ENV, "from-env")
    with caplog.at_level(logging.WARNING, logger="bofexits.serving.server"):
        run_server(small_run["ckpt"], ServeOptions(host="0.0.0.0", threads=1, device="cpu"))
    assert "without an API key" not in caplog.text
