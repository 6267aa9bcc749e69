"""Email HTTP API: what was sent."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status

from contracts.api import UNREADABLE_BODY, Page
from contracts.audit import EmailsAudit, OrderIds
from servicekit.auth import OPERATOR_ONLY_RESPONSES, OperatorOnly
from servicekit.dependencies import PoolDep

from ..adapters import repository

router = APIRouter(tags=["email"], dependencies=[OperatorOnly], responses=OPERATOR_ONLY_RESPONSES)


@router.get("/emails")
async def list_emails(
    pool: PoolDep, page: Annotated[Page, Query()], order_id: UUID | None = None
) -> list[dict[str, Any]]:
    """Emails sent (about `order_id`, if given), newest first, a page at a time."""
    async with pool.acquire() as conn:
        emails = await repository.list_emails(conn, order_id, page)
    if emails is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, page.unknown_cursor())
    return emails


@router.post("/audit/orders", tags=["audit"], responses=UNREADABLE_BODY)
async def audit_emails(body: OrderIds, pool: PoolDep) -> EmailsAudit:
    """For `orderctl audit`: the kind of each email sent about each order asked about."""
    async with pool.acquire() as conn:
        kinds = await repository.kinds_sent_by_order(conn, body.order_ids)
    return EmailsAudit(emails=kinds)
