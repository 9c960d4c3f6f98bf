"""What the background tasks recorded, newest first."""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from ..audit import AuditEvent, AuditLog

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("")
async def read_audit(
    request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[AuditEvent]:
    """The latest audit events, newest first."""
    audit: AuditLog = request.app.state.audit
    return audit.newest(limit)
