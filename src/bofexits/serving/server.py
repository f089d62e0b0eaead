"""`bofexits serve`: build the engine for a checkpoint or an export and run the HTTP app under uvicorn.

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, lets the requests in
flight finish, then runs the app's lifespan shutdown, which drains the engine
(`Engine.stop`); the process exits 0. Binding a non-loopback host without an API key logs a
warning: anyone who can reach the port can then use the model.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from bofexits.errors import ConfigError
from bofexits.serving.engine import Engine
from bofexits.serving.load import open_stages
from bofexits.serving.slo import SloController

__all__ = ["API_KEY_ENV", "ServeOptions", "build_engine", "is_loopback", "run_server"]

logger = logging.getLogger(__name__)

#: Environment variable read for the API key when --api-key is not given.
API_KEY_ENV = "BOFEXITS_API_KEY"


@dataclass
class ServeOptions:
    """Everything `bofexits serve` takes besides the model (the CLI flags)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_body: int = 1 << 20
    device: str | None = None
    beta: float | None = None
    threads: int | None = None
    data_dir: str | None = None
    latency_slo_ms: float | None = None
    slo_min_beta: float = 0.0
    api_key: str | None = None


def build_engine(source: str | Path, opts: ServeOptions) -> Engine:
    """The engine serving `source` under `opts`, with the SLO controller when a latency target is set."""
    backend = open_stages(
        source, beta=opts.beta, threads=opts.threads, data_dir=opts.data_dir, device=opts.device
    )
    controller = None
    if opts.latency_slo_ms is not None:
        controller = SloController(
            opts.latency_slo_ms / 1e3,
            backend.beta,
            min(opts.slo_min_beta, backend.beta),
            log_scale=backend.facts.variant != "mean",
        )
        logger.info(
            "latency SLO %g ms: beta moves between %g and its set point %g",
            opts.latency_slo_ms,
            controller.beta_min,
            controller.set_point,
        )
    return Engine(
        backend,
        max_batch=opts.max_batch,
        max_wait_ms=opts.max_wait_ms,
        max_queue=opts.max_queue,
        controller=controller,
    )


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(source: str | Path, opts: ServeOptions) -> int:
    """Serve `source` over HTTP until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("serving needs the serve extra: pip install 'bofexits[serve]'") from exc
    from bofexits.serving.http import create_app

    key = opts.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(opts.host) and key is None:
        logger.warning(
            "serving on %s without an API key: anyone who can reach port %d can use the model; "
            "pass --api-key or set %s",
            opts.host,
            opts.port,
            API_KEY_ENV,
        )
    engine = build_engine(source, opts)
    app = create_app(engine, engine.backend.facts, api_key=key, max_body=opts.max_body)
    facts = engine.backend.facts
    logger.info(
        "serving %s (%s on %s, %d exits, beta %g) on http://%s:%d",
        source,
        facts.backend,
        facts.device,
        engine.num_exits,
        engine.beta,
        opts.host,
        opts.port,
    )
    config = uvicorn.Config(app, host=opts.host, port=opts.port, log_level="warning", lifespan="on")
    # uvicorn catches SIGTERM, shuts down gracefully (the lifespan drains the engine), then raises
    # the signal again for the handler it found; a no-op one lets the drained process exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    logger.info("server stopped")
    return 0
