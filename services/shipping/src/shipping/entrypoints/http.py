"""Shipping HTTP API."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, status

from contracts.audit import OrderIds, ShipmentsAudit
from servicekit.dependencies import PoolDep

from .. import handlers
from ..adapters import repository

router = APIRouter(tags=["shipping"])


@router.get("/shipments")
async def list_shipments(pool: PoolDep, order_id: UUID | None = None) -> list[dict[str, Any]]:
    """Shipments of one order, or the latest 100."""
    async with pool.acquire() as conn:
        return await repository.list_shipments(conn, order_id)


@router.post("/shipments/{shipment_id}/dispatch")
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


@router.post("/audit/orders", tags=["audit"])
async def audit_shipments(body: OrderIds, pool: PoolDep) -> ShipmentsAudit:
    """For `orderctl audit`: the status of each shipment of each order asked about."""
    async with pool.acquire() as conn:
        statuses = await repository.shipment_statuses(conn, body.order_ids)
    return ShipmentsAudit(shipments=statuses)
