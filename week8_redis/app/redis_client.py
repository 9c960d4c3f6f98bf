"""The app's one Redis client (day 2), built for a server that may be down, hung or restarted.

Redis makes the app faster (the cache) and fairer (the rate limits), but the app
must keep answering without it. So every call is bounded, and fails fast:

- 0.5 s to connect and 0.5 s for an answer. Redis answers in well under a
  millisecond, but a busy process can be slow to read even a quick answer: at
  0.2 s, a loaded 2-core machine saw timeouts from a healthy Redis. A socket
  without a timeout would wait for a hung server for minutes;
- no automatic retries: redis-py 8 retries a failed call 10 times with back-off by
  default (seconds per call against a dead server); the callers fall back instead;
- at most 64 connections, and 0.2 s to wait for a free one: a burst of requests
  against a hung server can't pile up sockets, or wait in line for them;
- a circuit breaker: after a failure, nobody asks Redis again for a second, so
  during an outage one request a second pays the timeout, not every request.

The client connects lazily, so the app starts even while Redis is down. It is
created in the app's lifespan and closed there (`await client.aclose()`).
"""

import logging
import time

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SOCKET_TIMEOUT = 0.5
MAX_CONNECTIONS = 64
POOL_TIMEOUT = 0.2
RETRY_REDIS_AFTER = 1.0

# What "Redis is unusable right now" looks like to a caller: redis-py's own errors, and
# the OSError (TimeoutError, ConnectionResetError, ...) a socket can raise underneath.
REDIS_ERRORS = (RedisError, OSError)


def create_redis(url: str) -> Redis:
    """A client for `url` whose every call either answers or fails within a second."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), retries=0),
    )
    # from_pool: the client owns the pool, so `aclose()` closes its connections too.
    return Redis.from_pool(pool)


class CircuitBreaker:
    """Whether to ask Redis now: not for RETRY_REDIS_AFTER seconds after it failed.

    The cache and the rate limiter share one, so a request that found Redis hung in
    the limiter doesn't wait for it again in the cache. It also logs each outage once,
    when it starts and when it ends, however many requests it touched.
    """

    def __init__(self) -> None:
        self.down = False
        self._retry_at = 0.0

    def ready(self) -> bool:
        """True when Redis may be asked: it worked last time, or the pause is over."""
        return time.monotonic() >= self._retry_at

    def failed(self, error: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_REDIS_AFTER
        if not self.down:
            self.down = True
            logger.warning(
                "Redis unusable (%s: %s): the cache steps aside and rate limits are per process",
                type(error).__name__,
                error,
            )

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            logger.info("Redis answers again: rate limits are shared again")
