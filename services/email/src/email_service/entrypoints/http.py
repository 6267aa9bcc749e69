"""Email HTTP API: what was sent."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from contracts.audit import EmailsAudit, OrderIds
from servicekit.dependencies import PoolDep

from ..adapters import repository

router = APIRouter(tags=["email"])


@router.get("/emails")
async def list_emails(pool: PoolDep, order_id: UUID | None = None) -> list[dict[str, Any]]:
    """Emails about one order, or the latest 100."""
    async with pool.acquire() as conn:
        return await repository.list_emails(conn, order_id)


@router.post("/audit/orders", tags=["audit"])
async def audit_emails(body: OrderIds, pool: PoolDep) -> EmailsAudit:
    """For `orderctl audit`: the kind of each email sent about each order asked about."""
    async with pool.acquire() as conn:
        kinds = await repository.kinds_sent_by_order(conn, body.order_ids)
    return EmailsAudit(emails=kinds)
