"""Liveness and readiness: what a load balancer and an orchestrator poll.

Both are exempt from rate limits and left out of the access log, so polling
them every second neither locks the poller out nor floods the logs.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.redis import redis_ready

from ..deps import ServicesDep
from ..schemas import Readiness, Status
from ..services import Services

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0


@router.get("/health")
async def health() -> Status:
    """Liveness: the process answers. Never touches Redis or the database."""
    return Status()


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unavailable"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: can this worker reach Redis and the database right now?"""
    redis_ok, database_ok = await asyncio.gather(
        redis_ready(services.redis), _database_ready(services)
    )
    checks = {
        "redis": "ok" if redis_ok else "unavailable",
        "database": "ok" if database_ok else "unavailable",
    }
    healthy = redis_ok and database_ok
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _database_ready(services: Services) -> bool:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            return await services.store.ping()
    except Exception:
        logger.warning("database readiness check failed", exc_info=True)
        return False
