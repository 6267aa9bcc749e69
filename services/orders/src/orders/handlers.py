"""Orders use cases, called by the HTTP and AMQP entrypoints.

The orders service is the authority on an order's status. Inventory and shipping report
what they did; orders decides what that means for the order and announces each change
(order.confirmed, order.rejected, order.shipped, order.cancelled) for email and shipping.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

import asyncpg

from contracts import (
    CustomerV2,
    Event,
    MoneyV2,
    OrderCancelledV1,
    OrderConfirmationSentV1,
    OrderConfirmedV1,
    OrderCreatedV2,
    OrderLineV2,
    OrderRejectedV1,
    OrderShippedV1,
    ShipmentCancelledV1,
    ShipmentCreatedV1,
    ShipmentDispatchedV1,
    ShippingAddress,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from contracts.versions import as_version
from servicekit.consumer import PermanentFailure
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.order import (
    CONFIRMATION,
    DISPATCH,
    REJECTION,
    OrderStatus,
    Transition,
    cancellation_refused,
)

SERVICE = "orders"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewOrder:
    customer: CustomerV2
    lines: Sequence[OrderLineV2]
    total: MoneyV2
    shipping_address: ShippingAddress


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    request_hash: str
    """Fingerprint of the request body: the same key with another body is refused."""


@dataclass(frozen=True)
class PlacedOrder:
    order_id: UUID
    status: OrderStatus
    """The status placing the order left it in."""
    replayed: bool
    """True when an earlier request with the same idempotency key placed it: this one
    placed nothing."""


class IdempotencyKeyReused(Exception):
    """The idempotency key was already used for a different request body."""


class OrderNotFound(Exception):
    pass


class CancellationRefused(Exception):
    pass


async def place_order(
    pool: asyncpg.Pool,
    order: NewOrder,
    *,
    versions: Sequence[int],
    correlation_id: UUID | None = None,
    idempotency: IdempotencyKey | None = None,
) -> PlacedOrder:
    """Store a pending order, its `order.created` event (in each of `versions`) and its
    idempotency key in one transaction; or, for a key used before, the order that first
    request placed."""
    try:
        return await _place_once(pool, order, versions, correlation_id, idempotency)
    except asyncpg.UniqueViolationError as exc:
        if idempotency is None or exc.constraint_name != "idempotency_keys_pkey":
            raise
        # A concurrent request with the same key committed first: answer as it did.
        return await _place_once(pool, order, versions, correlation_id, idempotency)


async def _place_once(
    pool: asyncpg.Pool,
    order: NewOrder,
    versions: Sequence[int],
    correlation_id: UUID | None,
    idempotency: IdempotencyKey | None,
) -> PlacedOrder:
    async with pool.acquire() as conn, conn.transaction():
        if idempotency is not None:
            earlier = await repository.find_idempotency_key(conn, idempotency.key)
            if earlier is not None:
                if earlier["request_hash"] != idempotency.request_hash:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was already used for a different request body"
                    )
                return PlacedOrder(
                    earlier["order_id"], OrderStatus(earlier["status"]), replayed=True
                )
        event = OrderCreatedV2(
            order_id=uuid4(),
            customer=order.customer,
            lines=tuple(order.lines),
            total=order.total,
            shipping_address=order.shipping_address,
            correlation_id=correlation_id or uuid4(),
            producer=SERVICE,
        )
        await repository.insert_order(conn, event)
        await repository.append_history(conn, event.order_id, event, OrderStatus.PENDING)
        for version in versions:
            await add_to_outbox(conn, as_version(event, version))
        placed = PlacedOrder(event.order_id, OrderStatus.PENDING, replayed=False)
        if idempotency is not None:
            await repository.insert_idempotency_key(
                conn, idempotency.key, idempotency.request_hash, placed.order_id, placed.status
            )
    log.info("order %s placed; event %s in the outbox", event.order_id, event.event_id)
    return placed


async def cancel_order(pool: asyncpg.Pool, order_id: UUID, reason: str) -> None:
    """Cancel an order not yet dispatched; cancelling a cancelled order changes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        order = await repository.lock_order(conn, order_id)
        if order is None:
            raise OrderNotFound(f"order {order_id} not found")
        current = OrderStatus(order["status"])
        if current is OrderStatus.CANCELLED:
            return
        if refusal := cancellation_refused(current):
            raise CancellationRefused(f"order {order_id} cannot be cancelled: {refusal}")
        event = OrderCancelledV1(
            order_id=order_id,
            previous_status=current.value,
            reason=reason,
            correlation_id=order["correlation_id"],
            producer=SERVICE,
        )
        await repository.set_status(conn, order_id, OrderStatus.CANCELLED)
        await repository.append_history(conn, order_id, event, OrderStatus.CANCELLED)
        await add_to_outbox(conn, event)
    log.info("order %s: %s -> cancelled (%s)", order_id, current, reason)


async def confirm_order(conn: asyncpg.Connection, event: StockReservedV1) -> None:
    """Inventory reserved every line: a pending order is confirmed."""
    announcement = OrderConfirmedV1.caused_by(event, producer=SERVICE, order_id=event.order_id)
    await _move(conn, event, event.order_id, CONFIRMATION, announcement)


async def reject_order(conn: asyncpg.Connection, event: StockRejectedV1) -> None:
    """Inventory could not reserve some line: a pending order is rejected, naming them."""
    announcement = OrderRejectedV1.caused_by(
        event, producer=SERVICE, order_id=event.order_id, short_items=event.rejected_lines
    )
    await _move(conn, event, event.order_id, REJECTION, announcement)


async def ship_order(conn: asyncpg.Connection, event: ShipmentDispatchedV1) -> None:
    """Shipping sent the parcel: a confirmed order is shipped, with its tracking number."""
    announcement = OrderShippedV1.caused_by(
        event,
        producer=SERVICE,
        order_id=event.order_id,
        shipment_id=event.shipment_id,
        tracking_number=event.tracking_number,
    )
    shipped = await _move(
        conn,
        event,
        event.order_id,
        DISPATCH,
        announcement,
        shipment_id=event.shipment_id,
        tracking_number=event.tracking_number,
    )
    if not shipped:
        log.warning(
            "order %s: shipment %s left after cancellation", event.order_id, event.shipment_id
        )


async def record_in_history(
    conn: asyncpg.Connection,
    event: StockReleasedV1 | ShipmentCreatedV1 | ShipmentCancelledV1 | OrderConfirmationSentV1,
) -> None:
    """An event that moves no order, only recorded in its history."""
    current = await _status_of(conn, event.order_id)
    await repository.append_history(conn, event.order_id, event, None)
    log.info("order %s stays %s on %s", event.order_id, current, event.routing_key())


async def _move(
    conn: asyncpg.Connection,
    event: Event,
    order_id: UUID,
    transition: Transition,
    announcement: Event,
    *,
    shipment_id: UUID | None = None,
    tracking_number: str | None = None,
) -> bool:
    """Record `event` in the order's history and, if `transition` applies, move the order
    and write `announcement` to the outbox; whether the order moved.

    A stale event (e.g. stock reserved after the customer cancelled) is recorded with a note
    and moves nothing: inventory releases that stock when it sees the cancellation.
    """
    current = await _status_of(conn, order_id)
    new = transition.status_after(current)
    if new is None:
        note = f"stale: the order was already {current}"
        await repository.append_history(conn, order_id, event, None, note)
        log.info("order %s stays %s on %s", order_id, current, event.routing_key())
        return False
    await repository.append_history(conn, order_id, event, new)
    await repository.set_status(
        conn, order_id, new, shipment_id=shipment_id, tracking_number=tracking_number
    )
    await add_to_outbox(conn, announcement)
    log.info("order %s: %s -> %s", order_id, current, new)
    return True


async def _status_of(conn: asyncpg.Connection, order_id: UUID) -> OrderStatus:
    """The order's status, its row locked until the transaction ends."""
    order = await repository.lock_order(conn, order_id)
    if order is None:
        raise PermanentFailure(f"order {order_id} is unknown to the orders service")
    return OrderStatus(order["status"])
