"""Plain ASGI middleware of this app: the body-size limit.

Plain ASGI (not `BaseHTTPMiddleware`) keeps the per-request cost to a function
call, and sees every request, including the ones FastAPI answers with 404/405/422
before any dependency would run. (The rate limit is `shared.rate_limit`'s.)
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem

TOO_LARGE = "Request body too large"


class BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body reader lets it through."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=TOO_LARGE)


class BodySizeLimitMiddleware:
    """413 for a body over `max_bytes`, declared by Content-Length or only streamed.

    `path_limits` maps a path's first segment (`/users`, covering `/users/7`) to a
    smaller limit: a route that takes a few short fields never needs a megabyte, and every
    byte of JSON it accepts is parsed and validated on the event loop.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    def max_bytes_for(self, path: str) -> int:
        first_segment = "/" + path.split("/", 2)[1] if path.startswith("/") else path
        return min(
            self.path_limits.get(first_segment, self.default_max_bytes), self.default_max_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes_for(scope["path"])
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1  # uvicorn rejects these before us; be safe anyway
                if declared > max_bytes:
                    await problem(413, TOO_LARGE)(scope, receive, send)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked:
            # No body (a GET), or one the server cuts at its declared Content-Length,
            # checked above: nothing to count, so skip wrapping receive and send.
            await self.app(scope, receive, send)
            return

        # A chunked body declares no length, so count what actually arrives.
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Reached only when something outside FastAPI's handlers read the body.
            if started:
                raise
            await problem(413, TOO_LARGE)(scope, receive, tracking_send)
