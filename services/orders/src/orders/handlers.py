"""Orders use cases, called by the HTTP and AMQP entrypoints.

The orders service is the authority on an order's status. Inventory and shipping report
what they did; orders decides what that means for the order and announces each change
(order.confirmed, order.rejected, order.shipped, order.cancelled) for email and shipping.
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from contracts import (
    CustomerV2,
    Event,
    MoneyV2,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderLineV2,
    OrderRejectedV1,
    OrderShippedV1,
    ShipmentCancelledV1,
    ShipmentDispatchedV1,
    ShippingAddress,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from contracts.versions import as_version
from servicekit import telemetry
from servicekit.batching import Batches, outcome_of
from servicekit.consumer import PermanentFailure
from servicekit.live import FellBehind, LiveHub
from servicekit.outbox import RowToPublish, add_to_outbox, handing_over, staged

from .adapters import repository
from .domain.order import (
    CONFIRMATION,
    DISPATCH,
    FINAL,
    REJECTION,
    OrderStatus,
    Transition,
    cancellation_refused,
    is_later,
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


@dataclass(frozen=True)
class Placement:
    """What one request asks to place, with the trace it came in."""

    order: NewOrder
    trace_context: Any
    correlation_id: UUID | None = None
    idempotency: IdempotencyKey | None = None


class OrderPlacing:
    """Places the orders that concurrent requests ask for together: one transaction, a
    statement per table for the whole batch, one commit. Each request still gets its own
    answer, only after that commit. A batch that fails (a key another replica inserted
    meanwhile, a lost connection) places nothing, and each of its orders is placed alone,
    so no request fails for another's."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        *,
        versions: Sequence[int],
        batch_size: int,
        key_retention: timedelta,
        hand_over: Callable[[Sequence[RowToPublish]], None],
    ) -> None:
        """`versions`: the versions of `order.created` each order is published in;
        `key_retention`: how long an idempotency key answers as it first did; `hand_over`
        publishes the outbox rows of a committed transaction (`OutboxRelay.hand_over`)."""
        self._pool = pool
        self._hand_over = hand_over
        self._versions = versions
        self._key_retention = key_retention
        self._batches = Batches(self._place_batch, batch_size) if batch_size > 1 else None

    async def place(self, placement: Placement) -> PlacedOrder:
        """Store a pending order, its `order.created` event (in each of the versions) and
        its idempotency key; or, for a key used before, answer with the order that first
        request placed. Raises IdempotencyKeyReused for that key with another body."""
        if self._batches is None:
            return await self._place_alone(placement)
        return await self._batches.submit(placement)

    async def _place_batch(
        self, placements: Sequence[Placement]
    ) -> list[PlacedOrder | IdempotencyKeyReused]:
        if len(placements) > 1:
            try:
                outcomes = await self._place_in_one_transaction(placements)
            except Exception as exc:  # noqa: BLE001 - nothing committed: each alone
                log.debug(
                    "a batch of %d orders failed (%r); placing each alone", len(placements), exc
                )
            else:
                _log_placed(placements, outcomes)
                return outcomes
        return [await outcome_of(self._place_alone(placement)) for placement in placements]

    async def _place_alone(self, placement: Placement) -> PlacedOrder:
        try:
            return await self._place_once(placement)
        except asyncpg.UniqueViolationError as exc:
            if placement.idempotency is None or exc.constraint_name != "idempotency_keys_pkey":
                raise
            # A concurrent request with the same key committed first: answer as it did.
            return await self._place_once(placement)

    async def _place_once(self, placement: Placement) -> PlacedOrder:
        outcomes = await self._place_in_one_transaction([placement])
        _log_placed([placement], outcomes)
        [placed] = outcomes
        if isinstance(placed, IdempotencyKeyReused):
            raise placed
        return placed

    async def _place_in_one_transaction(
        self, placements: Sequence[Placement]
    ) -> list[PlacedOrder | IdempotencyKeyReused]:
        """Place them and commit; then their `order.created` events go to the relay."""
        with handing_over() as written:
            async with self._pool().acquire() as conn, conn.transaction():
                outcomes = await _place_in(conn, placements, self._versions, self._key_retention)
        self._hand_over(written)
        return outcomes


async def _place_in(
    conn: asyncpg.Connection,
    placements: Sequence[Placement],
    versions: Sequence[int],
    key_retention: timedelta,
) -> list[PlacedOrder | IdempotencyKeyReused]:
    """Place each order on `conn`, in the caller's transaction, with one statement per
    table; a key used before (or earlier in `placements`) answers as it first did, unless
    it is older than `key_retention`: then it is a new key, whether or not the retention
    job has deleted it yet."""
    keys = {p.idempotency.key for p in placements if p.idempotency is not None}
    earlier = await repository.find_idempotency_keys(conn, keys, key_retention) if keys else {}
    outcomes: list[PlacedOrder | IdempotencyKeyReused] = []
    created: list[tuple[OrderCreatedV2, Placement]] = []
    for placement in placements:
        key = placement.idempotency
        if key is not None and (first := earlier.get(key.key)) is not None:
            request_hash, order_id, status = first
            if request_hash != key.request_hash:
                outcomes.append(
                    IdempotencyKeyReused(
                        "this Idempotency-Key was already used for a different request body"
                    )
                )
            else:
                outcomes.append(PlacedOrder(order_id, OrderStatus(status), replayed=True))
            continue
        order = placement.order
        event = OrderCreatedV2(
            order_id=uuid4(),
            customer=order.customer,
            lines=tuple(order.lines),
            total=order.total,
            shipping_address=order.shipping_address,
            correlation_id=placement.correlation_id or uuid4(),
            producer=SERVICE,
        )
        created.append((event, placement))
        if key is not None:
            earlier[key.key] = (key.request_hash, event.order_id, OrderStatus.PENDING.value)
        outcomes.append(PlacedOrder(event.order_id, OrderStatus.PENDING, replayed=False))
    if created:
        events = [event for event, _ in created]
        await repository.insert_orders(conn, events)
        await repository.append_histories(
            conn, [(e.order_id, e, OrderStatus.PENDING) for e in events]
        )
        async with staged(conn):
            for event, placement in created:
                with telemetry.attached(placement.trace_context):
                    for version in versions:
                        await add_to_outbox(conn, as_version(event, version))
        if keys_used := [
            (p.idempotency.key, p.idempotency.request_hash, e.order_id, OrderStatus.PENDING)
            for e, p in created
            if p.idempotency is not None
        ]:
            await repository.insert_idempotency_keys(conn, keys_used, key_retention)
    return outcomes


def _log_placed(
    placements: Sequence[Placement], outcomes: Sequence[PlacedOrder | IdempotencyKeyReused]
) -> None:
    """Once committed: a line for each order placed, in its request's trace."""
    for placement, placed in zip(placements, outcomes, strict=True):
        if isinstance(placed, PlacedOrder) and not placed.replayed:
            with telemetry.attached(placement.trace_context):
                log.info("order %s placed; order.created in the outbox", placed.order_id)


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
    event: StockReleasedV1 | ShipmentCancelledV1,
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


STATUS_ANNOUNCED_BY: dict[type[Event], OrderStatus] = {
    OrderCreatedV1: OrderStatus.PENDING,
    OrderCreatedV2: OrderStatus.PENDING,
    OrderConfirmedV1: OrderStatus.CONFIRMED,
    OrderRejectedV1: OrderStatus.REJECTED,
    OrderCancelledV1: OrderStatus.CANCELLED,
    OrderShippedV1: OrderStatus.SHIPPED,
}
"""The events orders publishes as an order's status changes, each with the status it
announces: what a live view of the status listens to."""
_ANNOUNCING = {status: cls.TYPE for cls, status in STATUS_ANNOUNCED_BY.items()}


@dataclass(frozen=True)
class StatusChange:
    """An order's status and the announcement that set it (the event type, unversioned)."""

    order_id: UUID
    status: OrderStatus
    at: datetime
    event_type: str
    producer: str


@contextlib.asynccontextmanager
async def follow_status(
    pool: asyncpg.Pool, hub: LiveHub, order_id: UUID
) -> AsyncIterator[AsyncIterator[StatusChange]]:
    """The order's status now, then each change as orders announces it, ending after a
    final status; OrderNotFound on entering for an unknown order.

    It listens before it reads, so a change committed meanwhile is in what it reads or in
    what it hears, or both: a status is passed on only if it comes after the last one. A
    listener that falls behind ends early (its client reconnects and reads the status
    again)."""
    async with hub.listen(order_id) as heard:
        async with pool.acquire() as conn:
            row = await repository.fetch_status(conn, order_id)
        if row is None:
            raise OrderNotFound(f"order {order_id} not found")
        status = OrderStatus(row["status"])
        now = StatusChange(order_id, status, row["updated_at"], _ANNOUNCING[status], SERVICE)

        async def changes() -> AsyncIterator[StatusChange]:
            last = now
            yield last
            while last.status not in FINAL:
                try:
                    event = await heard.get()
                except FellBehind as exc:
                    log.warning("order %s: status stream ended: %s", order_id, exc)
                    return
                announced = STATUS_ANNOUNCED_BY.get(type(event))
                if announced is not None and is_later(announced, than=last.status):
                    last = StatusChange(
                        order_id, announced, event.occurred_at, event.TYPE, event.producer
                    )
                    yield last

        yield changes()


async def _status_of(conn: asyncpg.Connection, order_id: UUID) -> OrderStatus:
    """The order's status, its row locked until the transaction ends."""
    order = await repository.lock_order(conn, order_id)
    if order is None:
        raise PermanentFailure(f"order {order_id} is unknown to the orders service")
    return OrderStatus(order["status"])
