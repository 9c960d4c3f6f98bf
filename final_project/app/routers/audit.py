"""Audit events: written by background tasks after the response, read by admins."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from ..deps import AdminClaims, StoreDep
from ..errors import problem_responses
from ..schemas import AuditEvent
from ..store import UserStore

router = APIRouter(prefix="/audit", tags=["audit"])
logger = logging.getLogger(__name__)

Action = Literal["user.created", "user.updated", "user.deleted"]


async def record_event(store: UserStore, action: Action, user_id: int, actor_id: int) -> None:
    """The background task. The response has gone out, so nobody would see an error:
    log it with its traceback instead, and never let it escape into the server."""
    try:
        await store.add_audit(action, user_id, datetime.now(UTC), actor_id=actor_id)
    except Exception:
        logger.exception("audit event %s for user %s was not recorded", action, user_id)


@router.get("", responses=problem_responses(401, 403, 422, 429))
async def read_audit(
    _admin: AdminClaims,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[AuditEvent]:
    """The newest audit events first (admins only)."""
    events = await store.list_audit(limit=limit)
    return [AuditEvent.model_validate(event, from_attributes=True) for event in events]
