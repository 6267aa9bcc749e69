"""Shipping HTTP API."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from servicekit.http import PoolDep

from ..adapters import repository

router = APIRouter(tags=["shipping"])


@router.get("/shipments")
async def list_shipments(pool: PoolDep, order_id: UUID | None = None) -> list[dict[str, Any]]:
    """Shipments of one order, or the latest 100."""
    async with pool.acquire() as conn:
        return await repository.list_shipments(conn, order_id)
