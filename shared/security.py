"""What every response of a public API should get right (week 7: a secure API).

- `TrustedHostMiddleware`: a request whose `Host` is not one of the names the app
  answers to gets 400 before the app sees it. Anything that builds an absolute URL
  from the request (Starlette's trailing-slash redirect does) would otherwise put
  an attacker's host name in a `Location` header, or a cache keyed on the URL.
- `SecurityHeadersMiddleware`: `X-Content-Type-Options: nosniff` on every response
  (a browser never guesses a JSON error is HTML), and `Cache-Control: private` on
  responses to requests that carry credentials, so no shared cache (a proxy, a CDN)
  keeps one user's data for another. A response that sets its own Cache-Control
  (e.g. `no-store` on tokens) keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .rate_limit import ErrorRenderer, json_error

NOSNIFF = (b"x-content-type-options", b"nosniff")
PRIVATE = b"private"
# With an ETag, the client may keep the response but must revalidate it (a 304).
PRIVATE_REVALIDATE = b"private, no-cache"


def host_name(header: str) -> str:
    """`Host` without its port, lower-cased: `[::1]:8000` → `::1`, `A.example:80` → `a.example`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") > 1:  # a bare IPv6 address, no port
        return header
    return header.partition(":")[0]


class TrustedHostMiddleware:
    """400 for a `Host` outside `allowed_hosts`.

    An entry is a name (`api.example.com`, any port), `*.example.com` (any
    subdomain), or `*` (any host: the check is off). A request without `Host` is
    refused too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        render_error: ErrorRenderer = json_error,
    ) -> None:
        self.app = app
        hosts = [host.strip().lower() for host in allowed_hosts if host.strip()]
        self.any_host = "*" in hosts
        self.names = frozenset(host_name(h) for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self.render_error = render_error
        # Raw Host values already allowed: clients repeat theirs on every request.
        self._allowed_raw: set[bytes] = set()

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))

    def _allows_raw(self, raw: bytes) -> bool:
        if raw in self._allowed_raw:
            return True
        if not self.allows(raw.decode("latin-1")):  # pragma: no mutate (codec case)
            return False
        # Bounded: ports and spellings vary. Only a shortcut: a miss asks `allows` again.
        if len(self._allowed_raw) < 1024:  # pragma: no mutate (the bound of a shortcut)
            self._allowed_raw.add(raw)  # pragma: no mutate (the shortcut only saves time)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any_host or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = b""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        if self._allows_raw(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        content_type, body = self.render_error(400, "Invalid host header", scope)
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` everywhere; `Cache-Control: private` when signed in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentials = False  # pragma: no mutate (None is as false)
        for name, _ in scope["headers"]:
            if name == b"authorization":
                credentials = True
                break

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), NOSNIFF]
                if credentials and (cache_control := _private_unless_set(headers)) is not None:
                    headers.append(cache_control)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _private_unless_set(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """The Cache-Control header to add, or None when the response chose its own."""
    tagged = False  # pragma: no mutate (None is as false)
    for name, _ in headers:
        lowered = name.lower()
        if lowered == b"cache-control":
            return None
        tagged = tagged or lowered == b"etag"
    return b"cache-control", PRIVATE_REVALIDATE if tagged else PRIVATE


__all__ = ["SecurityHeadersMiddleware", "TrustedHostMiddleware", "host_name"]
