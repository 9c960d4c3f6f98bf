"""Cache-aside for response bodies with versioned invalidation (week 8: caching, Redis).

- `aside`: `ResponseCache` and `CacheSettings`, what a route calls;
- `entries`: the Redis side, versioned keys and their Lua scripts;
- `responses`: `cache_response` / `CachedResponse`, ETag, X-Cache and 304.
"""

from .aside import CacheSettings, ResponseCache
from .entries import ETAG_LENGTH, CachedBody, CacheStatus, VersionedEntries, etag_for
from .responses import CachedResponse, cache_response, etag_matches, if_none_match

__all__ = [
    "ETAG_LENGTH",
    "CacheSettings",
    "CacheStatus",
    "CachedBody",
    "CachedResponse",
    "ResponseCache",
    "VersionedEntries",
    "cache_response",
    "etag_for",
    "etag_matches",
    "if_none_match",
]
