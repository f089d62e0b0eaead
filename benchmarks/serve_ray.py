"""Ray Serve's per-request overhead against the embedded server, on the same engine and checkpoint.

    python benchmarks/serve_ray.py --checkpoint runs/demo/checkpoint.pt [--requests 300] [--out runs/serve_ray]

Starts `bofexits serve` (uvicorn) in a subprocess and a local Ray cluster serving one replica
of the same engine (`bofexits.serving.ray_app`), then sends the same PNG to both, one request
at a time, alternating between them (so load drift on a shared machine hits both alike), and
reports p50/p95 of the round trip as the client sees it. One request at a time isolates the
per-request path (proxy, routing, replica) from queueing; the difference of the medians is
Ray's overhead per request.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("runs/serve_ray"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(SRC))
    import ray
    from ray import serve

    from bofexits.serving.ray_app import ray_application
    from bofexits.serving.server import ServeOptions

    buf = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buf, format="PNG")
    png = buf.getvalue()
    embedded_port, ray_port = _port(), _port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bofexits",
            "-q",
            "serve",
            str(args.checkpoint),
            "--port",
            str(embedded_port),
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
        env=env,
    )
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    serve.start(http_options={"host": "127.0.0.1", "port": ray_port})
    t0 = time.perf_counter()
    opts = ServeOptions(threads=1, device="cpu")
    serve.run(ray_application(args.checkpoint, opts, replicas=1), name="bofexits", route_prefix="/")
    urls = {"embedded": f"http://127.0.0.1:{embedded_port}", "ray": f"http://127.0.0.1:{ray_port}"}
    for url in urls.values():
        _wait(url)
    run_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in urls}
    headers = {"content-type": "image/png"}
    with httpx.Client(timeout=30) as client:
        for url in urls.values():  # warm both paths
            for _ in range(20):
                client.post(f"{url}/predict", content=png, headers=headers)
        for _ in range(args.requests):
            for name, url in urls.items():
                t = time.perf_counter()
                r = client.post(f"{url}/predict", content=png, headers=headers)
                times[name].append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
    serve.shutdown()
    ray.shutdown()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    stats = {
        k: {"p50_ms": 1e3 * float(np.median(v)), "p95_ms": 1e3 * float(np.percentile(v, 95))}
        for k, v in times.items()
    }
    result = {
        "requests_each": args.requests,
        "ray_init_s": init_s,
        "serve_run_to_healthy_s": run_s,
        **stats,
        "ray_overhead_p50_ms": stats["ray"]["p50_ms"] - stats["embedded"]["p50_ms"],
        "ray_version": ray.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_ray.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
