"""The HTTP app with a fake engine: answers, and a one-line 4xx for every kind of bad request."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the HTTP app needs the serve extra: pip install 'bofexits[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the serve extra's test dependency)")

from fastapi.testclient import TestClient  # noqa: E402

from bofexits.errors import InputError  # noqa: E402
from bofexits.serving import Answer, ModelFacts, Overloaded, ShuttingDown, Telemetry  # noqa: E402
from bofexits.serving.http import create_app  # noqa: E402

FACTS = ModelFacts(
    "pytorch", "cpu", [f"c{i}" for i in range(10)], (1, 28, 28), [0.5], [0.25], "L", "max_prob", "accuracy"
)


class FakeEngine:
    """Answers class = round(mean input) % 10 at exit 2; or raises what `refuse` holds."""

    def __init__(self) -> None:
        self.telemetry = Telemetry(4)
        self.refuse: Exception | None = None
        self.fail_batch = False
        self.seen: list[np.ndarray] = []

    def submit(self, x: np.ndarray, on_done: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.seen.append(x)
        if self.fail_batch:
            on_done(0, InputError("an exit produced NaN or inf logits"))
            return
        on_done(0, Answer(int(round(float(x.mean())) % 10), 0.9, 2, 4, 1.5, 0.5, 0.8))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "in_flight": 0, "batch_failures": 0}


def _png(size: tuple[int, int] = (28, 28), value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> TestClient:
    return TestClient(create_app(engine, FACTS, max_body=20_000))


def test_a_png_is_answered(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/predict", content=_png(value=255), headers={"content-type": "image/png"})
    assert r.status_code == 200
    body = r.json()
    assert body["exit"] == 2 and body["num_exits"] == 4 and body["confidence"] == 0.9
    assert body["class"] == f"c{body['class_index']}" and body["ms"] == 1.5 and body["beta"] == 0.8
    np.testing.assert_allclose(engine.seen[0], 2.0)  # (255/255 - 0.5) / 0.25: normalised as in training


def test_tensors_are_answered(client: TestClient, engine: FakeEngine) -> None:
    x = np.full((1, 28, 28), 3.0, np.float32)
    r = client.post("/predict", content=_npy(x), headers={"content-type": "application/x-npy"})
    assert r.status_code == 200 and r.json()["class_index"] == 3
    r = client.post(
        "/predict", content=x.astype("<f4").tobytes(), headers={"content-type": "application/octet-stream"}
    )
    assert r.status_code == 200 and engine.seen[-1].shape == (1, 1, 28, 28)


BAD: dict[str, tuple[bytes, str, int, str]] = {
    "not an image": (b"hello", "image/png", 400, "not an image"),
    "truncated png": (_png()[:40], "image/png", 400, "not an image"),
    "too small": (_png((5, 5)), "image/png", 400, "larger image"),
    "decompression bomb": (_png((2000, 2000), 0), "image/png", 400, "pixels, more than"),
    "wrong tensor shape": (_npy(np.zeros((3, 28, 28), np.float32)), "application/x-npy", 400, "shape"),
    "NaN tensor": (_npy(np.full((1, 28, 28), np.nan, np.float32)), "application/x-npy", 400, "NaN"),
    "pickled npy": (_npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", 400, "npy"),
    "raw wrong length": (b"\0" * 12, "application/octet-stream", 400, "3136 bytes"),
    "inf raw": (np.full(784, np.inf, "<f4").tobytes(), "application/octet-stream", 400, "NaN or inf"),
    "empty": (b"", "image/png", 400, "empty"),
    "too big": (b"\0" * 20_001, "image/png", 413, "limit"),
    "wrong type": (b"{}", "application/json", 415, "not accepted"),
    "no type": (b"abc", "", 415, "not accepted"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_get_a_one_line_4xx(client: TestClient, case: str) -> None:
    body, kind, status, words = BAD[case]
    headers = {"content-type": kind} if kind else {}
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "\n" not in message


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for _ in range(30):
            yield b"\0" * 1000

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413


def test_the_api_key(engine: FakeEngine) -> None:
    client = TestClient(create_app(engine, FACTS, api_key="s3cret"))
    png = {"content-type": "image/png"}
    assert client.post("/predict", content=_png(), headers=png).status_code == 401
    r = client.post("/predict", content=_png(), headers={**png, "authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        client.post("/predict", content=_png(), headers={**png, "authorization": "Bearer s3cret"}).status_code
        == 200
    )
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # load balancers probe without the key


def test_overload_draining_and_failed_batches(client: TestClient, engine: FakeEngine) -> None:
    png = {"content-type": "image/png"}
    engine.refuse = Overloaded("10 requests in flight, the limit is 10; retry later", 3.0)
    r = client.post("/predict", content=_png(), headers=png)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    engine.refuse = ShuttingDown("the server is shutting down")
    r = client.post("/predict", content=_png(), headers=png)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    engine.refuse, engine.fail_batch = None, True
    r = client.post("/predict", content=_png(), headers=png)
    assert r.status_code == 500 and "inference failed for this batch" in r.json()["error"]


def test_health_and_metrics(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"]["input_shape"] == [1, 28, 28]
    client.post("/predict", content=b"", headers={"content-type": "image/png"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in (
        "bofexits_requests_total",
        "bofexits_exits_total",
        "bofexits_stage_batch_size_bucket",
        "bofexits_queue_depth",
        "bofexits_request_latency_seconds_bucket",
        "bofexits_beta",
    ):
        assert name in r.text
    assert 'bofexits_requests_total{status="invalid"} 1' in r.text
