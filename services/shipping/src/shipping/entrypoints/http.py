"""Shipping HTTP API."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status

from contracts.api import UNREADABLE_BODY, ErrorMessage, Page
from contracts.audit import OrderIds, ShipmentsAudit
from servicekit.auth import OPERATOR_ONLY_RESPONSES, OperatorOnly
from servicekit.dependencies import PoolDep

from .. import handlers
from ..adapters import repository

router = APIRouter(
    tags=["shipping"], dependencies=[OperatorOnly], responses=OPERATOR_ONLY_RESPONSES
)


@router.get("/shipments")
async def list_shipments(
    pool: PoolDep, page: Annotated[Page, Query()], order_id: UUID | None = None
) -> list[dict[str, Any]]:
    """Shipments (of `order_id`, if given), newest first, a page at a time."""
    async with pool.acquire() as conn:
        shipments = await repository.list_shipments(conn, order_id, page)
    if shipments is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, page.unknown_cursor())
    return shipments


@router.post(
    "/shipments/{shipment_id}/dispatch",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": ErrorMessage, "description": "No such shipment"},
        status.HTTP_409_CONFLICT: {
            "model": ErrorMessage,
            "description": "Its order is not confirmed, or it is cancelled",
        },
    },
)
async def dispatch(shipment_id: UUID, pool: PoolDep) -> dict[str, Any]:
    """Dispatch a ready shipment now, without waiting out the handling delay.

    409 while its order is unconfirmed or once it is cancelled; repeating it is harmless.
    """
    try:
        return await handlers.dispatch_now(pool, shipment_id)
    except handlers.ShipmentNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except handlers.DispatchRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.post("/audit/orders", tags=["audit"], responses=UNREADABLE_BODY)
async def audit_shipments(body: OrderIds, pool: PoolDep) -> ShipmentsAudit:
    """For `orderctl audit`: the status of each shipment of each order asked about."""
    async with pool.acquire() as conn:
        statuses = await repository.shipment_statuses(conn, body.order_ids)
    return ShipmentsAudit(shipments=statuses)
