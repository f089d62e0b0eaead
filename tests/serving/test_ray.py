"""Ray Serve: one local cluster for the whole test session, two replicas, answers as the runtime gives.

Skipped when ray is not installed (the `bofexits[ray]` extra); CI installs it (requirements-ci.txt).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray Serve tests need the ray extra: pip install 'bofexits[ray]'")
httpx = pytest.importorskip("httpx", reason="the Ray test talks HTTP with httpx (the serve extra)")

from bofexits.deploy.predict import predict_files  # noqa: E402
from bofexits.serving.ray_app import ray_application  # noqa: E402
from bofexits.serving.server import ServeOptions  # noqa: E402


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[int]:
    """A local Ray cluster (2 CPUs declared, no dashboard) and Serve's proxy on a free loopback port."""
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
def test_two_replicas_answer_as_the_runtime_does(ray_serve: int, small_run: dict[str, Any]) -> None:
    from ray import serve

    opts = ServeOptions(max_batch=8, threads=1, device="cpu")
    serve.run(ray_application(small_run["ckpt"], opts, replicas=2), name="bofexits", route_prefix="/")
    url = f"http://127.0.0.1:{ray_serve}"
    want, _ = predict_files(small_run["ckpt"], small_run["pngs"], threads=1)
    with httpx.Client(timeout=30) as client:
        got = [
            client.post(
                f"{url}/predict", content=p.read_bytes(), headers={"content-type": "image/png"}
            ).json()
            for p in small_run["pngs"] * 3  # bounded: 12 requests over both replicas
        ]
        assert client.get(f"{url}/health").json()["status"] == "ok"
        assert (
            client.post(f"{url}/predict", content=b"x", headers={"content-type": "text/plain"}).status_code
            == 415
        )
    assert [(g["class_index"], g["exit"]) for g in got] == [(p.class_index, p.exit) for p in want] * 3
    status = serve.status().applications["bofexits"].deployments["bofexits"]
    assert status.replica_states.get("RUNNING") == 2
    serve.delete("bofexits")
