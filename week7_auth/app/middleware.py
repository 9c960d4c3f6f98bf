"""Request logging middleware (days 5-6): code that every request passes through, both ways.

Plain ASGI: a class whose `__call__(scope, receive, send)` wraps the app. It sees the
request come in and, by wrapping `send`, the response go out. (Starlette's
BaseHTTPMiddleware and `@app.middleware("http")` are shorter to write, but cost a
good part of the app's throughput.)

For every HTTP request it
- adds `X-Request-ID`: the client's own, when it is a sane one, else a new one, so a
  user's bug report and a log line can be matched;
- adds `X-Process-Time`: how long the app took, in milliseconds;
- logs one line: method, path, status, duration and request id. A request that makes
  the app crash is logged too, with the 500 it got.
"""

import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# What the client may choose: short, and nothing that could break a log line or a header.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The headers this middleware adds, as the OpenAPI file describes a response's headers.
HEADERS = {
    "X-Request-ID": {
        "description": "The request's id: yours if it was well-formed, else a new one.",
        "schema": {"type": "string"},
    },
    "X-Process-Time": {
        "description": "How long the app took, in milliseconds (e.g. 3.21).",
        "schema": {"type": "number"},
    },
}


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID if it is well-formed, else a fresh one."""
    incoming = Headers(scope=scope).get("x-request-id", "")
    if CLIENT_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """A request id, the processing time and one log line for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (start-up, shut-down) passes straight through
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        request_id = request_id_of(scope)
        response_started = False
        status = 500  # until the app answers: a crash before that is what the client gets
        duration_ms: float | None = None  # set when the response's last byte is sent

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started, status, duration_ms
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Process-Time"] = f"{elapsed_ms():.2f}"
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # The client has its answer. Background tasks run after this, while
                # the client no longer waits, so they don't count.
                duration_ms = elapsed_ms()
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # The app crashed. Answer 500 ourselves, with our headers, if nothing was sent
            # yet; then re-raise, so the server still logs the traceback.
            if not response_started:
                error = JSONResponse({"detail": "Internal Server Error"}, status_code=500)
                await error(scope, receive, send_with_headers)
            raise
        finally:
            # quote(): a path is decoded, and a %0A in the URL must not start a fake log line.
            logger.info(
                "%s %s %d %.2fms request_id=%s",
                scope["method"],
                quote(scope["path"]),
                status,
                duration_ms if duration_ms is not None else elapsed_ms(),
                request_id,
            )


def document_request_log_headers(app: FastAPI) -> None:
    """Say in the OpenAPI schema that every response carries X-Request-ID and X-Process-Time."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # built once, then cached by FastAPI: adding twice is harmless
        for operations in schema["paths"].values():
            for operation in operations.values():
                for response in operation["responses"].values():
                    # A new dict: a route's own headers (Location) may be a shared constant.
                    response["headers"] = {**response.get("headers", {}), **HEADERS}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
