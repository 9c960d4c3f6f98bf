"""Audit events, recorded by background tasks (day 5) after the response has gone out."""

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

logger = logging.getLogger(__name__)

Action = Literal["user.created", "user.updated", "user.deleted"]


class AuditEvent(BaseModel):
    action: Action
    user_id: int
    at: datetime


class AuditLog:
    """The newest events, in memory; a real app would write them to a database or a queue."""

    def __init__(self, keep: int = 1000) -> None:
        self._events: deque[AuditEvent] = deque(maxlen=keep)

    def record(self, action: Action, user_id: int) -> None:
        self._events.appendleft(AuditEvent(action=action, user_id=user_id, at=datetime.now(UTC)))

    def newest(self, limit: int) -> list[AuditEvent]:
        return list(self._events)[:limit]


def record_event(audit: AuditLog, action: Action, user_id: int) -> None:
    """The background task. Its response is already sent, so nobody would see an error:
    log it with its traceback instead, and never let it escape into the server.

    A plain `def`, as nothing in it waits: FastAPI runs it in the threadpool."""
    try:
        audit.record(action, user_id)
    except Exception:
        logger.exception("audit event %s for user %s was not recorded", action, user_id)
