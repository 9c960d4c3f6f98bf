"""Responses from cached bodies: ETag, X-Cache and 304 (week 8: caching)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Scope

from .entries import CachedBody


def if_none_match(scope: Scope) -> str | None:
    """The request's If-None-Match header, read straight from the ASGI scope."""
    raw: bytes
    for name, raw in scope["headers"]:
        if name == b"if-none-match":
            return raw.decode("latin-1")  # pragma: no mutate (codec names ignore case)
    return None


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of If-None-Match against our ETag."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class CachedResponse(Response):
    """A response from a `CachedBody`: X-Cache, ETag, and 304 when If-None-Match matches.

    Check authorisation before building it: a 304 says the caller may see the body.
    """

    def __init__(
        self,
        cached: CachedBody,
        if_none_match: str | None = None,
        *,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        extra = {"etag": cached.etag, "x-cache": cached.status, **(headers or {})}
        if etag_matches(if_none_match, cached.etag):
            # No body and no content headers (Starlette leaves them out of a 304).
            super().__init__(status_code=304, headers=extra, background=background)
        else:
            # The stored bytes go out as they are: nothing to validate or encode.
            super().__init__(
                cached.body, headers=extra, media_type=media_type, background=background
            )


def cache_response(
    cached: CachedBody,
    if_none_match: str | None = None,
    *,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build the response for a `CachedBody` (see `CachedResponse`)."""
    return CachedResponse(cached, if_none_match, media_type=media_type, headers=headers)
