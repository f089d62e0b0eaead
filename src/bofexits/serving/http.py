"""The HTTP app (FastAPI): `POST /predict`, `GET /health`, `GET /metrics`, thin over an engine.

Requests carry one image as the raw body (no multipart), so ``curl --data-binary @x.png`` works:

* ``Content-Type: image/png`` or ``image/jpeg``: read as `bofexits predict` reads files
  (`bofexits.deploy.predict.decode_image`), then normalised;
* ``application/x-npy``: a numpy ``.npy`` array (never unpickled), (C, H, W) or (1, C, H, W),
  already normalised;
* ``application/octet-stream``: C*H*W little-endian float32 values, already normalised.

Every refusal is a 4xx with a one-line JSON ``{"error": ...}``: 400 bad image or tensor,
401 missing or wrong bearer token (compared in constant time), 413 body over `max_body`,
415 other content types, 503 with ``Retry-After`` past `max_queue` or while draining. A
batch that fails inside the engine answers its own requests 500, and `/health` says so.

The app is built around anything with the engine's surface (`submit`, `health`,
`telemetry.render`), so tests drive it with a fake engine.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from bofexits.deploy.predict import decode_image
from bofexits.deploy.runner import preprocess
from bofexits.errors import BofexitsError, InputError
from bofexits.serving.engine import Answer, Overloaded, ShuttingDown
from bofexits.serving.stages import ModelFacts, check_sample

__all__ = ["IMAGE_TYPES", "TENSOR_TYPES", "create_app", "parse_body"]

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("image/png", "image/jpeg")
TENSOR_TYPES = ("application/x-npy", "application/octet-stream")
_MAX_PIXELS_FACTOR = 64  # decoded images may have at most 64x the model's input pixels


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def parse_body(body: bytes, content_type: str, facts: ModelFacts) -> np.ndarray:
    """A request body as the (1, C, H, W) float32 input; `InputError` (400) or `_Refused` (415) otherwise.

    >>> facts = ModelFacts("x", "cpu", ["a"], (1, 1, 2), [0.0], [1.0], "L", "max_prob", "accuracy")
    >>> parse_body(np.zeros(2, "<f4").tobytes(), "application/octet-stream", facts).shape
    (1, 1, 1, 2)
    """
    kind = content_type.split(";")[0].strip().lower()
    if not body:
        raise InputError("the request body is empty; send one PNG/JPEG image or one tensor")
    c, h, w = facts.input_shape
    if kind in IMAGE_TYPES:
        if facts.color_mode is None:
            raise InputError(f"the model reads {c}-channel inputs; send a tensor (application/x-npy)")
        image = decode_image(
            io.BytesIO(body),
            (h, w),
            facts.color_mode,
            name="the image",
            max_pixels=_MAX_PIXELS_FACTOR * h * w,
        )
        return preprocess(image[None], facts.input_shape, facts.mean, facts.std)
    if kind == "application/x-npy":
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(
                f"the body is not a readable .npy array ({exc}); write it with numpy.save"
            ) from exc
        return check_sample(array, facts.input_shape)
    if kind == "application/octet-stream":
        need = 4 * c * h * w
        if len(body) != need:
            raise InputError(
                f"a raw tensor is {need} bytes ({c}x{h}x{w} float32), got {len(body)}; check the shape"
            )
        return check_sample(np.frombuffer(body, dtype="<f4").reshape(c, h, w), facts.input_shape)
    raise _Refused(
        415,
        f"content type {kind or 'none'!r} is not accepted; send {', '.join(IMAGE_TYPES + TENSOR_TYPES)}",
    )


def create_app(
    engine: Any,
    facts: ModelFacts,
    *,
    api_key: str | None = None,
    max_body: int = 1 << 20,
    request_timeout_s: float = 30.0,
) -> Any:
    """The FastAPI app serving `engine` (module docstring).

    Args:
        engine: an `Engine` (started by the app's lifespan if it has `start`), or a fake with
            `submit(x, on_done)`, `health()` and `telemetry.render()`.
        facts: the served model's facts (`ModelFacts`).
        api_key: bearer token required on /predict and /metrics (None: open).
        max_body: largest accepted body, bytes (413 beyond).
        request_timeout_s: a request not answered in this time gets 504.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if hasattr(engine, "start"):
            engine.start()
        yield
        if hasattr(engine, "stop"):  # uvicorn stops taking connections first, then this drains
            drained = await asyncio.get_running_loop().run_in_executor(None, engine.stop)
            logger.info(
                "engine %s: %d requests answered, %d in flight",
                "drained" if drained else "timed out draining",
                engine.telemetry.requests["ok"],
                engine.in_flight,
            )

    app = FastAPI(title="bofexits", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    key = api_key.encode() if api_key else None

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorised(request: Request) -> bool:
        if key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key)

    def unauthorised() -> Response:
        return refuse(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, f"Content-Length {length!r} is not a byte count")
            if int(length) > max_body:
                raise _Refused(
                    413, f"the body is {length} bytes, the limit is {max_body}; send a smaller image"
                )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise _Refused(413, f"the body is over the limit of {max_body} bytes; send a smaller image")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        try:
            body = await read_body(request)
            x = parse_body(body, request.headers.get("content-type", ""), facts)
        except _Refused as exc:
            engine.telemetry.count_request("invalid")
            return refuse(exc.status, str(exc), exc.headers)
        except ClientDisconnect:  # gone before its body arrived: nothing was queued, nobody to answer
            return Response(status_code=400)
        except BofexitsError as exc:
            engine.telemetry.count_request("invalid")
            return refuse(400, str(exc))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer | BaseException] = loop.create_future()

        def on_done(row: int, result: Answer | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        try:
            engine.submit(x, on_done)
        except Overloaded as exc:
            return refuse(503, str(exc), {"Retry-After": str(int(exc.retry_after_s))})
        except ShuttingDown as exc:
            return refuse(503, str(exc), {"Retry-After": "1"})
        try:
            result = await asyncio.wait_for(asyncio.shield(future), request_timeout_s)
        except asyncio.TimeoutError:
            return refuse(504, f"no answer within {request_timeout_s:g} s; the server is overloaded")
        if isinstance(result, BaseException):
            message = str(result) if isinstance(result, BofexitsError) else type(result).__name__
            return refuse(500, f"inference failed for this batch: {message}")
        return JSONResponse(
            {
                "class": facts.classes[result.class_index],
                "class_index": result.class_index,
                "confidence": result.confidence,
                "exit": result.exit,
                "num_exits": result.num_exits,
                "ms": round(result.latency_ms, 3),
                "queue_ms": round(result.queue_ms, 3),
                "beta": result.beta,
            }
        )

    @app.get("/health")
    async def health() -> Response:
        state = engine.health()
        body = {
            **state,
            "model": {
                "backend": facts.backend,
                "device": facts.device,
                "classes": len(facts.classes),
                "input_shape": list(facts.input_shape),
                "score": facts.score,
                "variant": facts.variant,
            },
        }
        return JSONResponse(body, status_code=200 if state["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        return PlainTextResponse(engine.telemetry.render(), media_type="text/plain; version=0.0.4")

    return app


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the client may have gone: its future was cancelled, nothing to keep
        future.set_result(result)
