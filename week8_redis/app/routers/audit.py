"""What the background tasks recorded, newest first: for signed-in users only."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ..audit import AuditEvent, AuditLog
from ..deps import UNAUTHORIZED, get_current_user

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", responses=UNAUTHORIZED, dependencies=[Depends(get_current_user)])
async def read_audit(
    request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[AuditEvent]:
    """The latest audit events, newest first."""
    audit: AuditLog = request.app.state.audit
    return audit.newest(limit)
