"""Redis for the other modules of `shared` (week 8: Redis basics, Redis with FastAPI).

- `client`: `create_redis` (short timeouts, no retries, a bounded pool, restart
  detection), `redis_ready`, `RedisCircuit`;
- `batching`: `Batcher`, one command for the calls of one event-loop iteration;
- `recovery`: `RedisRecovery`, when a module may trust its Redis state again;
- `peek`: `PeekSource`, reads that ride on another module's round trip.
"""

from .batching import Batcher
from .client import (
    REDIS_ERRORS,
    RedisCircuit,
    RedisSettings,
    RedisWatch,
    create_redis,
    parse_run_id,
    redis_ready,
    redis_watch,
    server_run_id,
)
from .peek import PEEK_STATE, PeekSource, keep_peeked, peeked
from .recovery import OneAtATime, RedisRecovery, Repair

__all__ = [
    "PEEK_STATE",
    "REDIS_ERRORS",
    "Batcher",
    "OneAtATime",
    "PeekSource",
    "RedisCircuit",
    "RedisRecovery",
    "RedisSettings",
    "RedisWatch",
    "Repair",
    "create_redis",
    "keep_peeked",
    "parse_run_id",
    "peeked",
    "redis_ready",
    "redis_watch",
    "server_run_id",
]
