"""Reads that ride on another module's Redis round trip (`PeekSource`).

A signed-in request needs two Redis reads: the rate limit (an EVALSHA) and the
revocation check (the denylist, the session's "valid from" mark). The limiter's
script can GET extra keys on its way, so the check costs no round trip of its
own. The contract between the two modules, all of it:

1. the reader names its keys for a request: `PeekSource.peek_keys(scope)`
   (`TokenService` is one);
2. the limiter reads them in its script and leaves the values with the request:
   `keep_peeked(scope, keys, values)`;
3. the reader takes them from there, `peeked(scope)`, and falls back to a read of
   its own when they are missing (no limiter, a route without limits, Redis down).

Neither module imports the other. Without a `PeekSource` everything works with
one more round trip per signed-in request: the path bench R2 measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from starlette.types import Scope

# The request-state entry that carries the values: key -> value (None: no such key).
PEEK_STATE = "redis_peek"


class PeekSource(Protocol):
    """A module whose Redis reads for a request may ride on another module's round trip."""

    def peek_keys(self, scope: Scope) -> Sequence[str]:
        """The keys to read for this request; empty when there is nothing to read."""
        ...


def keep_peeked(scope: Scope, keys: Sequence[str], values: Sequence[bytes | None]) -> None:
    """Leave the values read for `keys` with the request, for `peeked`."""
    scope.setdefault("state", {})[PEEK_STATE] = dict(zip(keys, values, strict=True))


def peeked(scope: Scope | None) -> Mapping[str, bytes | None] | None:
    """The values another module read for this request, else None."""
    if scope is None:
        return None
    values: Mapping[str, bytes | None] | None = scope.get("state", {}).get(PEEK_STATE)
    return values
