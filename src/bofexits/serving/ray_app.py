"""Scale out on Ray Serve: each replica runs the whole engine behind the same HTTP app.

Ray Serve's proxy routes requests to replicas and can autoscale them; inside a replica the
engine batches stage by stage as the embedded server does. Stages are not split across
deployments: one Ray hop costs milliseconds on a small machine, more than the whole demo
network (docs/serving.md). Each replica reserves `num_cpus` (0.5 by default, so two fit
on one core pair) and takes up to ``max_ongoing_requests = 2 x max_batch`` requests, since
Ray's default of 5 would cap the engine's batches.

Multi-node: start a cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others), then run ``RAY_ADDRESS=auto bofexits serve SOURCE --ray
--replicas N`` on the head; docs/serving.md has the recipe.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from bofexits.errors import ConfigError
from bofexits.serving.server import API_KEY_ENV, ServeOptions, build_engine

__all__ = ["EngineReplica", "ray_application", "run_ray"]

logger = logging.getLogger(__name__)


class EngineReplica:
    """One Ray Serve replica: a whole engine and the HTTP app over it (built on the replica)."""

    def __init__(self, source: str, opts: ServeOptions, api_key: str | None) -> None:
        self.engine = build_engine(source, opts)
        self.engine.start()
        self.opts, self.api_key = opts, api_key

    def __serve_build_asgi_app__(self) -> Any:
        from bofexits.serving.http import create_app

        return create_app(
            self.engine, self.engine.backend.facts, api_key=self.api_key, max_body=self.opts.max_body
        )


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise ConfigError("serving on Ray needs the ray extra: pip install 'bofexits[ray]'") from exc
    return serve


def ray_application(
    source: str | Path,
    opts: ServeOptions,
    *,
    replicas: int = 1,
    num_cpus: float = 0.5,
    api_key: str | None = None,
) -> Any:
    """The bound Ray Serve application: `replicas` copies of `EngineReplica` behind Serve's proxy."""
    serve = _serve()
    deployment = serve.deployment(
        serve.ingress()(EngineReplica),
        name="bofexits",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        max_ongoing_requests=max(8, 2 * opts.max_batch),
    )
    return deployment.bind(str(source), opts, api_key)


def run_ray(source: str | Path, opts: ServeOptions, *, replicas: int = 1) -> int:
    """Serve `source` on Ray Serve at opts.host:opts.port until SIGTERM/SIGINT; returns 0 after shutting down.

    Joins the cluster named by ``RAY_ADDRESS`` when set, else starts a local one.
    """
    import os

    serve = _serve()
    import ray

    key = opts.api_key or os.environ.get(API_KEY_ENV) or None
    ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": opts.host, "port": opts.port})
    serve.run(
        ray_application(source, opts, replicas=replicas, api_key=key), name="bofexits", route_prefix="/"
    )
    logger.info("Ray Serve: %d replica(s) of %s on http://%s:%d", replicas, source, opts.host, opts.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    serve.shutdown()  # drains the replicas' requests in flight
    ray.shutdown()
    return 0
