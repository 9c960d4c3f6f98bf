"""GCRA rate limits in one Redis round trip (week 8: rate limiting).

- `policies`: `parse_rate`, `Policy`, `Decision` and `LocalLimiter`, the
  in-process fallback;
- `limiter`: `RateLimiter`, GCRA over Redis in one Lua script;
- `middleware`: `RateLimitMiddleware` and `RouteLimit`, the ASGI side.
"""

from .limiter import GCRA_SCRIPT, RateLimiter
from .middleware import (
    ErrorRenderer,
    RateLimitMiddleware,
    RouteLimit,
    app_state_limiter,
    client_address,
    json_error,
)
from .policies import (
    PERIODS,
    Decision,
    LocalLimiter,
    Policy,
    PolicyState,
    Rate,
    RateLimitSettings,
    parse_rate,
)

__all__ = [
    "GCRA_SCRIPT",
    "PERIODS",
    "Decision",
    "ErrorRenderer",
    "LocalLimiter",
    "Policy",
    "PolicyState",
    "Rate",
    "RateLimitMiddleware",
    "RateLimitSettings",
    "RateLimiter",
    "RouteLimit",
    "app_state_limiter",
    "client_address",
    "json_error",
    "parse_rate",
]
