"""Orders HTTP API."""

import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
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
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, EmailStr, Field, StrictInt, field_validator

from contracts import (
    AVAILABILITY_QUEUE,
    AvailabilityQueryV1,
    AvailabilityV1,
    CustomerV2,
    MoneyV2,
    OrderLineV2,
    ShippingAddress,
)
from contracts.api import UNREADABLE_BODY, ErrorMessage, Page
from contracts.audit import OrderAudit, OrdersAudit, OrderStatus
from contracts.common import MAX_AMOUNT, Amount, CurrencyCode, Sku, WireModel
from servicekit.auth import (
    OPERATOR_ONLY_RESPONSES,
    ORDER_ACCESS_RESPONSES,
    OperatorOnly,
    OrderAccess,
    OrderAccessInQuery,
    mint_order_token,
)
from servicekit.dependencies import PoolDep, RuntimeDep
from servicekit.live import LiveHub, LiveUnavailable
from servicekit.rpc import NoReply, ask
from servicekit.telemetry import current_context, tag_order

from .. import handlers
from ..adapters import repository
from ..domain.order import order_total

router = APIRouter(tags=["orders"])


async def get_placing(request: Request) -> handlers.OrderPlacing:
    return request.app.state.placing


PlacingDep = Annotated[handlers.OrderPlacing, Depends(get_placing)]


async def get_live_hub(request: Request) -> LiveHub:
    return request.app.state.live


LiveHubDep = Annotated[LiveHub, Depends(get_live_hub)]


class OrderItem(WireModel):
    sku: Sku
    name: str | None = Field(None, min_length=1, max_length=200, description="Defaults to sku.")
    quantity: StrictInt = Field(gt=0, le=10_000)
    unit_price: Amount


class PlaceOrderRequest(WireModel):
    customer_email: EmailStr
    customer_name: str | None = Field(
        None, min_length=1, max_length=200, description="Defaults to the addressee's name."
    )
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    shipping_address: ShippingAddress
    currency: CurrencyCode = "EUR"

    @field_validator("items")
    @classmethod
    def _total_is_an_amount(cls, items: list[OrderItem]) -> list[OrderItem]:
        if (total := order_total(items)) > MAX_AMOUNT:
            raise ValueError(
                f"the order's total, {total}, is more than an order may cost: {MAX_AMOUNT}"
            )
        return items

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


class OrderPlaced(OrderAccepted):
    access_token: str | None = Field(
        None,
        description="Bearer token for GET /orders/{order_id} and its cancel: this order "
        "alone, until it expires. Absent where the service checks no order tokens.",
    )


class CancelRequest(WireModel):
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


NOT_FOUND = {status.HTTP_404_NOT_FOUND: {"model": ErrorMessage, "description": "No such order"}}


@router.post(
    "/orders",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderPlaced,
    response_model_exclude_none=True,
    responses=UNREADABLE_BODY,
)
async def place_order(
    body: PlaceOrderRequest,
    placing: PlacingDep,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
    correlation_id: Annotated[UUID | None, Header(alias="X-Correlation-ID")] = None,
) -> OrderPlaced:
    """Accept an order; inventory, email and shipping react to its `order.created` event.
    A retry with the same Idempotency-Key and body gets the first answer again; the key
    reused with another body is a 422 naming the header."""
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
    return OrderPlaced(
        order_id=placed.order_id,
        status=placed.status.value,
        access_token=mint_order_token(runtime.settings, placed.order_id),
    )


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderAccepted,
    dependencies=[OrderAccess],
    responses={
        **ORDER_ACCESS_RESPONSES,
        **UNREADABLE_BODY,
        **NOT_FOUND,
        status.HTTP_409_CONFLICT: {"model": ErrorMessage, "description": "Too late to cancel"},
    },
)
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


@router.get(
    "/orders/{order_id}",
    dependencies=[OrderAccess],
    responses={**ORDER_ACCESS_RESPONSES, **NOT_FOUND},
)
async def get_order(order_id: UUID, pool: PoolDep) -> dict[str, Any]:
    """The order, its timeline (every event that changed it) and every event about it."""
    async with pool.acquire() as conn:
        order = await repository.fetch_order(conn, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")
    return order


class StatusEvent(BaseModel):
    """The `data` of each `status` event of GET /orders/{order_id}/events."""

    order_id: UUID
    status: OrderStatus
    at: datetime = Field(description="When the order took this status.")
    event_type: str = Field(
        description="The event orders announced it with, e.g. `order.confirmed`."
    )
    producer: str


async def order_followed(
    order_id: UUID, pool: PoolDep, hub: LiveHubDep, runtime: RuntimeDep
) -> AsyncIterator[AsyncIterator[handlers.StatusChange]]:
    """The order's status changes, listened to from before the order is read (404 if it is
    unknown) until the stream ends."""
    if not runtime.broker_ready:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "not connected to RabbitMQ yet: no live events"
        )
    async with contextlib.AsyncExitStack() as following:
        try:
            changes = await following.enter_async_context(
                handlers.follow_status(pool, hub, order_id)
            )
        except handlers.OrderNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        except LiveUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        yield changes


def json_error(description: str) -> dict[str, Any]:
    """An ErrorMessage answer of a route whose own media type is not JSON: FastAPI documents
    a response's `model` under the route's media type. ErrorMessage is in the document's
    components as the other routes' `model`."""
    schema = {"$ref": "#/components/schemas/ErrorMessage"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


FollowedDep = Annotated[AsyncIterator[handlers.StatusChange], Depends(order_followed)]


@router.get(
    "/orders/{order_id}/events",
    response_class=EventSourceResponse,
    dependencies=[OrderAccessInQuery],
    responses={
        status.HTTP_200_OK: {
            "description": "`status` events, and a `: ping` comment every 15 s of quiet",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "required": ["event"],
                        "properties": {"event": {"const": "status"}},
                    }
                }
            },
        },
        **ORDER_ACCESS_RESPONSES,
        status.HTTP_404_NOT_FOUND: json_error("No such order"),
        status.HTTP_503_SERVICE_UNAVAILABLE: json_error(
            "This process is not connected to RabbitMQ yet"
        ),
    },
)
async def stream_status(changes: FollowedDep) -> AsyncIterator[StatusEvent]:
    """The order's status as Server-Sent Events: first its status now, then one `status`
    event per change as it happens, from whichever replica answers; the stream ends after
    a final status (shipped, rejected, cancelled). For a browser's EventSource, which sends
    no headers, the order's token may come as `?access_token=` (this route alone)."""
    # Annotated with the data, so OpenAPI documents it; each is sent as a ServerSentEvent
    # to name its event, which FastAPI passes through without validating it again.
    async for change in changes:
        yield ServerSentEvent(
            event="status",
            data=StatusEvent(
                order_id=change.order_id,
                status=change.status,
                at=change.at,
                event_type=change.event_type,
                producer=change.producer,
            ),
        )


class OrderSummary(BaseModel):
    """One order of GET /orders."""

    order_id: UUID
    status: OrderStatus
    customer_name: str
    total: Amount
    currency: CurrencyCode
    created_at: datetime
    updated_at: datetime


@router.get(
    "/orders",
    dependencies=[OperatorOnly],
    responses=OPERATOR_ONLY_RESPONSES,
)
async def list_orders(pool: PoolDep, page: Annotated[Page, Query()]) -> list[OrderSummary]:
    """For operators: the orders, newest first, a page at a time."""
    async with pool.acquire() as conn:
        rows = await repository.list_orders(conn, page)
    if rows is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, page.unknown_cursor())
    return [OrderSummary(**row) for row in rows]


@router.get(
    "/audit/orders",
    tags=["audit"],
    dependencies=[OperatorOnly],
    responses={**OPERATOR_ONLY_RESPONSES, **NOT_FOUND},
)
async def audit_orders(
    pool: PoolDep, page: Annotated[Page, Query()], order_id: UUID | None = None
) -> OrdersAudit:
    """For `orderctl audit`: a page of the orders, each with its status and whether it was
    ever confirmed, oldest first; or only `order_id`'s (then the page is not read)."""
    if order_id is not None:
        async with pool.acquire() as conn:
            order = await repository.audit_order(conn, order_id)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")
        return OrdersAudit(orders=[OrderAudit(**order)])
    async with pool.acquire() as conn:
        rows = await repository.audit_orders(conn, page)
    if rows is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, page.unknown_cursor())
    return OrdersAudit(orders=[OrderAudit(**row) for row in rows])


@router.get(
    "/availability",
    response_model=AvailabilityV1,
    responses={
        status.HTTP_504_GATEWAY_TIMEOUT: {
            "model": ErrorMessage,
            "description": "Inventory did not answer in time",
        }
    },
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
