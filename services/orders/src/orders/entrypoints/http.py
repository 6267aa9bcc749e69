"""Orders HTTP API."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Response, status
from pydantic import BaseModel, EmailStr, Field

from contracts import OrderLineV1, ShippingAddress
from contracts.orders import CurrencyCode, Money, Sku
from servicekit.http import PoolDep

from .. import handlers
from ..adapters import repository

router = APIRouter(tags=["orders"])


class OrderItem(BaseModel):
    sku: Sku
    quantity: int = Field(gt=0, le=10_000)
    unit_price: Money


class PlaceOrderRequest(BaseModel):
    customer_email: EmailStr
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    shipping_address: ShippingAddress
    currency: CurrencyCode = "EUR"


class OrderAccepted(BaseModel):
    order_id: UUID
    status: str


@router.post("/orders", status_code=status.HTTP_202_ACCEPTED, response_model=OrderAccepted)
async def place_order(
    body: PlaceOrderRequest,
    pool: PoolDep,
    response: Response,
    correlation_id: Annotated[UUID | None, Header(alias="X-Correlation-ID")] = None,
) -> OrderAccepted:
    """Accept an order; inventory, email and shipping react to its `order.created` event."""
    event = await handlers.place_order(
        pool,
        customer_email=body.customer_email,
        lines=[OrderLineV1(**item.model_dump()) for item in body.items],
        currency=body.currency,
        shipping_address=body.shipping_address,
        correlation_id=correlation_id,
    )
    response.headers["Location"] = f"/orders/{event.order_id}"
    response.headers["X-Correlation-ID"] = str(event.correlation_id)
    return OrderAccepted(order_id=event.order_id, status="pending")


@router.get("/orders/{order_id}")
async def get_order(order_id: UUID, pool: PoolDep) -> dict[str, Any]:
    async with pool.acquire() as conn:
        order = await repository.fetch_order(conn, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")
    return order
