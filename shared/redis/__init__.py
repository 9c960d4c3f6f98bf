"""Redis for the other modules of `shared` (week 8: Redis basics, Redis with FastAPI).

- `client`: `create_redis` for one server, a cluster or a Sentinel-watched primary
  (short timeouts, no retries, a bounded pool, restart detection), `redis_ready`,
  `RedisCircuit`;
- `keys`: hash tags, so that what one script or pipeline touches shares a cluster slot;
- `batching`: `Batcher`, one command for the calls of one event-loop iteration;
- `recovery`: `RedisRecovery`, when a module may trust its Redis state again;
- `peek`: `PeekSource`, reads that ride on another module's round trip.
"""

from .batching import Batcher
from .client import (
    REDIS_ERRORS,
    AnyRedis,
    RedisCircuit,
    RedisSettings,
    RedisTarget,
    RedisWatch,
    SentinelRedis,
    create_redis,
    is_cluster,
    parse_redis_url,
    parse_run_id,
    redis_ready,
    redis_watch,
    server_run_id,
)
from .keys import hash_tag, key_slot, same_slot
from .peek import PEEK_STATE, PeekSource, keep_peeked, peeked
from .recovery import OneAtATime, RedisRecovery, Repair

__all__ = [
    "PEEK_STATE",
    "REDIS_ERRORS",
    "AnyRedis",
    "Batcher",
    "OneAtATime",
    "PeekSource",
    "RedisCircuit",
    "RedisRecovery",
    "RedisSettings",
    "RedisTarget",
    "RedisWatch",
    "Repair",
    "SentinelRedis",
    "create_redis",
    "hash_tag",
    "is_cluster",
    "keep_peeked",
    "key_slot",
    "parse_redis_url",
    "parse_run_id",
    "peeked",
    "redis_ready",
    "redis_watch",
    "same_slot",
    "server_run_id",
]
