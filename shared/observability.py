"""Request ids, access logs and timing as one plain ASGI middleware (week 7: middleware, logging).

Plain ASGI rather than `BaseHTTPMiddleware`: no extra task or body buffering per
request, which keeps it cheap enough to wrap every route.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Collection
from contextvars import ContextVar
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

# One context variable per process is the point of a ContextVar: each request's
# task sees its own value, so this is not shared state between requests.
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class ObservabilitySettings(BaseSettings):
    """Logging settings (env: LOG_LEVEL, ACCESS_LOG)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    log_level: str = "INFO"
    access_log: bool = True


def current_request_id() -> str | None:
    """The id of the request being handled, or None outside a request."""
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON line."""
    handler = logging.StreamHandler(sys.stderr)  # pragma: no mutate (stderr is its default)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing.formatter, JsonFormatter):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


_PROBLEM_500 = {
    "type": "about:blank",
    "title": "Internal Server Error",
    "status": 500,
    "detail": "Internal Server Error",
}


class RequestContextMiddleware:
    """Request id, X-Process-Time and one access-log line for every HTTP request.

    - an incoming `X-Request-ID` is kept when it matches `[A-Za-z0-9._-]{1,64}`,
      else a new one is made; it lives in `scope["state"]["request_id"]` and in
      `current_request_id()`, and goes out on every response, 500s included;
    - each request gets a `scope["state"]` of its own (a copy), so nothing one
      request stores there is seen by the next;
    - an exception below becomes a problem+json 500 carrying the id (and is logged
      once, with its traceback, never sent to the client);
    - the access log is one JSON line: method, path, status, duration_ms,
      request_id, user (`scope["state"]["user_id"]`), except for `quiet_paths`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: logging.Logger | None = None,
        quiet_paths: Collection[str] = ("/health", "/health/ready"),
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.logger = logger or logging.getLogger("shared.access")
        self.quiet_paths = frozenset(quiet_paths)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # os.urandom(16).hex(): as unique as uuid4().hex, without building a UUID object.
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        # A dict of this request's own: the ASGI spec has servers pass a copy of the
        # lifespan state, but some test harnesses share one dict between requests.
        state = dict(scope.get("state", ()))
        state["request_id"] = request_id
        scope["state"] = state
        token = _request_id.set(request_id)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))  # pragma: no mutate (codec)
        status = 500
        response_started = False  # pragma: no mutate (None is as false)

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                elapsed = f"{(time.perf_counter() - started) * 1000:.2f}".encode()
                message["headers"] = [
                    *message.get("headers", ()),
                    id_header,
                    (b"x-process-time", elapsed),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception:
            self.logger.exception(
                "unhandled error", extra={"fields": {"path": scope.get("path", "")}}
            )
            if response_started:
                raise
            body = json.dumps({**_PROBLEM_500, "request_id": request_id}).encode()
            await send_with_context(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            if self.access_log and scope.get("path") not in self.quiet_paths:
                self._log_access(scope, state, status, started, request_id)
            _request_id.reset(token)

    def _log_access(
        self, scope: Scope, state: dict[str, Any], status: int, started: float, request_id: str
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        self.logger.info(
            "%s %s %d %.2fms %s",
            scope["method"],
            scope["path"],
            status,
            duration_ms,
            request_id,
            extra={
                "request_id": request_id,
                "fields": {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                    "user": state.get("user_id"),
                },
            },
        )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None
    return None
