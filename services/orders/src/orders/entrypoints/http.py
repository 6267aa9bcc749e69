"""Orders HTTP API."""

import hashlib
from typing import Annotated, Any
from uuid import UUID

from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from pydantic import BaseModel, EmailStr, Field

from contracts import (
    AVAILABILITY_QUEUE,
    AvailabilityQueryV1,
    AvailabilityV1,
    CustomerV2,
    MoneyV2,
    OrderLineV2,
    ShippingAddress,
)
from contracts.audit import OrderAudit, OrdersAudit
from contracts.common import CurrencyCode, Money, Sku
from servicekit.dependencies import PoolDep, RuntimeDep
from servicekit.rpc import NoReply, ask
from servicekit.telemetry import current_context, tag_order

from .. import handlers
from ..adapters import repository
from ..domain.order import order_total

router = APIRouter(tags=["orders"])


async def get_placing(request: Request) -> handlers.OrderPlacing:
    return request.app.state.placing


PlacingDep = Annotated[handlers.OrderPlacing, Depends(get_placing)]


class OrderItem(BaseModel):
    sku: Sku
    name: str | None = Field(None, min_length=1, max_length=200, description="Defaults to sku.")
    quantity: int = Field(gt=0, le=10_000)
    unit_price: Money


class PlaceOrderRequest(BaseModel):
    customer_email: EmailStr
    customer_name: str | None = Field(
        None, min_length=1, max_length=200, description="Defaults to the addressee's name."
    )
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    shipping_address: ShippingAddress
    currency: CurrencyCode = "EUR"

    def as_new_order(self) -> handlers.NewOrder:
        return handlers.NewOrder(
            customer=CustomerV2(
                name=self.customer_name or self.shipping_address.name, email=self.customer_email
            ),
            lines=[
                OrderLineV2(
                    sku=item.sku,
                    name=item.name or item.sku,
                    quantity=item.quantity,
                    unit_price=MoneyV2(amount=item.unit_price, currency=self.currency),
                )
                for item in self.items
            ],
            total=MoneyV2(amount=order_total(self.items), currency=self.currency),
            shipping_address=self.shipping_address,
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class OrderAccepted(BaseModel):
    order_id: UUID
    status: str


class CancelRequest(BaseModel):
    reason: str = Field("cancelled by the customer", min_length=1, max_length=500)


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe placement: the same key and body return the first answer.",
    ),
]


@router.post(
    "/orders",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderAccepted,
    responses={422: {"description": "Invalid body, or Idempotency-Key reused with another"}},
)
async def place_order(
    body: PlaceOrderRequest,
    placing: PlacingDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
    correlation_id: Annotated[UUID | None, Header(alias="X-Correlation-ID")] = None,
) -> OrderAccepted:
    """Accept an order; inventory, email and shipping react to its `order.created` event.
    A retry with the same Idempotency-Key and body gets the first answer again."""
    try:
        placed = await placing.place(
            handlers.Placement(
                body.as_new_order(),
                correlation_id=correlation_id,
                idempotency=handlers.IdempotencyKey(idempotency_key, body.fingerprint())
                if idempotency_key
                else None,
                trace_context=current_context(),
            )
        )
    except handlers.IdempotencyKeyReused as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["header", "Idempotency-Key"],
                    "msg": str(exc),
                    "type": "idempotency_key_reused",
                }
            ],
        ) from exc
    tag_order(placed.order_id)
    response.headers["Location"] = f"/orders/{placed.order_id}"
    if placed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderAccepted(order_id=placed.order_id, status=placed.status.value)


@router.post("/orders/{order_id}/cancel", response_model=OrderAccepted)
async def cancel_order(
    order_id: UUID, pool: PoolDep, body: Annotated[CancelRequest | None, Body()] = None
) -> OrderAccepted:
    """Cancel an order before it is dispatched: 409 with the reason once it is too late."""
    try:
        await handlers.cancel_order(pool, order_id, (body or CancelRequest()).reason)
    except handlers.OrderNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except handlers.CancellationRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return OrderAccepted(order_id=order_id, status="cancelled")


@router.get("/orders/{order_id}")
async def get_order(order_id: UUID, pool: PoolDep) -> dict[str, Any]:
    """The order, its timeline (every event that changed it) and every event about it."""
    async with pool.acquire() as conn:
        order = await repository.fetch_order(conn, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")
    return order


@router.get(
    "/audit/orders",
    tags=["audit"],
    responses={404: {"description": "No order `order_id`"}},
)
async def audit_orders(pool: PoolDep, order_id: UUID | None = None) -> OrdersAudit:
    """For `orderctl audit`: every order's status and whether it was ever confirmed, oldest
    first; or only `order_id`'s."""
    async with pool.acquire() as conn:
        rows = await repository.audit_orders(conn, order_id)
    if order_id is not None and not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")
    return OrdersAudit(orders=[OrderAudit(**row) for row in rows])


@router.get(
    "/availability",
    response_model=AvailabilityV1,
    responses={504: {"description": "Inventory did not answer in time"}},
)
async def availability(sku: Annotated[Sku, Query()], runtime: RuntimeDep) -> AvailabilityV1:
    """Ask inventory, over RabbitMQ request-reply, how much of `sku` is available now."""
    try:
        return await ask(
            runtime.broker,
            AVAILABILITY_QUEUE,
            AvailabilityQueryV1(sku=sku),
            AvailabilityV1,
            timeout=runtime.settings.availability_timeout,
        )
    except NoReply as exc:
        raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, f"inventory: {exc}") from exc
