"""Inventory HTTP API: stock levels and reservations."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, status
from pydantic import Field, StrictInt

from contracts.api import UNREADABLE_BODY, ErrorMessage
from contracts.audit import OrderIds, ReservationsAudit
from contracts.common import Sku, WireModel
from servicekit.auth import OPERATOR_ONLY_RESPONSES, OperatorOnly
from servicekit.dependencies import PoolDep

from .. import handlers
from ..adapters import repository

router = APIRouter(
    tags=["inventory"], dependencies=[OperatorOnly], responses=OPERATOR_ONLY_RESPONSES
)


class StockLevel(WireModel):
    available: StrictInt = Field(ge=0, le=1_000_000_000)


@router.put("/stock/{sku}", responses=UNREADABLE_BODY)
async def set_stock(sku: Sku, body: StockLevel, pool: PoolDep) -> dict[str, Any]:
    """Set how many units of `sku` are available to reserve; reservations are kept."""
    return await handlers.set_stock(pool, sku, body.available)


@router.get(
    "/stock/{sku}",
    responses={status.HTTP_404_NOT_FOUND: {"model": ErrorMessage, "description": "Not stocked"}},
)
async def get_stock(sku: Sku, pool: PoolDep) -> dict[str, Any]:
    async with pool.acquire() as conn:
        stock = await repository.fetch_stock(conn, sku)
    if stock is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sku {sku} not stocked")
    return stock


@router.get(
    "/reservations/{order_id}",
    responses={
        status.HTTP_404_NOT_FOUND: {
            "model": ErrorMessage,
            "description": "No reservation for the order (yet)",
        }
    },
)
async def get_reservation(order_id: UUID, pool: PoolDep) -> dict[str, Any]:
    async with pool.acquire() as conn:
        reservation = await repository.fetch_reservation(conn, order_id)
    if reservation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reservation for order {order_id}")
    return reservation


@router.post("/audit/orders", tags=["audit"], responses=UNREADABLE_BODY)
async def audit_reservations(body: OrderIds, pool: PoolDep) -> ReservationsAudit:
    """For `orderctl audit`: the status of each reservation of each order asked about."""
    async with pool.acquire() as conn:
        statuses = await repository.reservation_statuses(conn, body.order_ids)
    return ReservationsAudit(reservations=statuses)
