"""The audit route every service serves alike: what its outbox has not published yet.

Each service adds its own `/audit/...` routes for what only it holds; `orderctl audit`
reads them all over HTTP, never the services' tables.
"""

from fastapi import APIRouter, Request

from contracts.audit import OutboxAudit

from .auth import OPERATOR_ONLY_RESPONSES, OperatorOnly
from .outbox import count_unpublished

audit_router = APIRouter(
    prefix="/audit", tags=["audit"], dependencies=[OperatorOnly], responses=OPERATOR_ONLY_RESPONSES
)


@audit_router.get("/outbox")
async def outbox(request: Request) -> OutboxAudit:
    """How many events the service's outbox holds that the broker has not confirmed yet."""
    async with request.app.state.runtime.pool.acquire() as conn:
        unpublished = await count_unpublished(conn)
    return OutboxAudit(service=request.app.state.spec.name, unpublished=unpublished)
