"""Shipping use cases, called by the AMQP, HTTP and dispatcher entrypoints."""

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts import (
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    ShipmentCancelledV1,
    ShipmentDispatchedV1,
)
from servicekit import telemetry
from servicekit.consumer import OutOfOrder
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.shipment import (
    CANCELLABLE,
    ShipmentStatus,
    dispatch_refused,
    new_tracking_number,
    prepare_shipment,
)

SERVICE = "shipping"
DISPATCH_BATCH = 100
log = logging.getLogger(__name__)


class ShipmentNotFound(Exception):
    pass


class DispatchRefused(Exception):
    pass


async def create_shipment(conn: asyncpg.Connection, event: OrderCreatedV2) -> None:
    shipment = prepare_shipment(event)
    await repository.insert_shipment(conn, shipment)
    log.info("order %s: shipment %s created", event.order_id, shipment.shipment_id)


async def schedule_dispatch(
    conn: asyncpg.Connection, event: OrderConfirmedV1, *, delay: timedelta
) -> None:
    """The order is confirmed: its shipment leaves once the handling delay is over."""
    shipment = await _lock_for_order(conn, event.order_id)
    if shipment["status"] != ShipmentStatus.PREPARING:
        log.info("order %s: shipment already %s", event.order_id, shipment["status"])
        return
    await repository.mark_ready(
        conn, shipment["shipment_id"], event.event_id, delay, telemetry.trace_headers()
    )
    log.info(
        "order %s: shipment %s dispatches in %s", event.order_id, shipment["shipment_id"], delay
    )


async def cancel_shipment(
    conn: asyncpg.Connection, event: OrderRejectedV1 | OrderCancelledV1
) -> None:
    """Compensate a rejected or cancelled order: its shipment never leaves."""
    shipment = await _lock_for_order(conn, event.order_id)
    status = ShipmentStatus(shipment["status"])
    if status is ShipmentStatus.DISPATCHED:
        log.warning(
            "order %s was cancelled after shipment %s left (tracking %s): the parcel must be "
            "recalled",
            event.order_id,
            shipment["shipment_id"],
            shipment["tracking_number"],
        )
        return
    if status not in CANCELLABLE:
        return
    reason = "order_rejected" if isinstance(event, OrderRejectedV1) else "order_cancelled"
    await repository.mark_cancelled(conn, shipment["shipment_id"], reason)
    await add_to_outbox(
        conn,
        ShipmentCancelledV1.caused_by(
            event,
            producer=SERVICE,
            shipment_id=shipment["shipment_id"],
            order_id=event.order_id,
            reason=reason,
        ),
    )
    log.info(
        "order %s: shipment %s cancelled (%s)", event.order_id, shipment["shipment_id"], reason
    )


async def dispatch_now(pool: asyncpg.Pool, shipment_id: UUID) -> dict[str, Any]:
    """Dispatch a ready shipment without waiting; a dispatched one is returned as it is."""
    async with pool.acquire() as conn, conn.transaction():
        shipment = await repository.lock(conn, shipment_id)
        if shipment is None:
            raise ShipmentNotFound(f"shipment {shipment_id} not found")
        if refusal := dispatch_refused(ShipmentStatus(shipment["status"])):
            raise DispatchRefused(f"shipment {shipment_id} cannot be dispatched: {refusal}")
        if shipment["status"] == ShipmentStatus.DISPATCHED:
            return dict(shipment)
        return dict(await _dispatch(conn, shipment))


async def dispatch_due(pool: asyncpg.Pool) -> int:
    """Dispatch every ready shipment whose handling delay is over, up to one batch."""
    async with pool.acquire() as conn, conn.transaction():
        due = await repository.lock_due(conn, DISPATCH_BATCH)
        for shipment in due:
            with telemetry.linked_trace(
                "shipment dispatch", shipment["ready_trace"], order_id=shipment["order_id"]
            ):
                await _dispatch(conn, shipment)
    return len(due)


async def _dispatch(conn: asyncpg.Connection, shipment: asyncpg.Record) -> asyncpg.Record:
    dispatched = await repository.mark_dispatched(
        conn, shipment["shipment_id"], new_tracking_number()
    )
    await add_to_outbox(
        conn,
        ShipmentDispatchedV1(
            shipment_id=dispatched["shipment_id"],
            order_id=dispatched["order_id"],
            tracking_number=dispatched["tracking_number"],
            correlation_id=dispatched["correlation_id"],
            causation_id=dispatched["ready_event_id"],
            producer=SERVICE,
        ),
    )
    log.info(
        "order %s: shipment %s dispatched, tracking %s",
        dispatched["order_id"],
        dispatched["shipment_id"],
        dispatched["tracking_number"],
    )
    return dispatched


async def _lock_for_order(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record:
    shipment = await repository.lock_for_order(conn, order_id)
    if shipment is None:
        raise OutOfOrder(f"order {order_id} has no shipment yet")
    return shipment
