"""Shipping use cases, called by the HTTP and AMQP entrypoints."""

import logging

import asyncpg

from contracts import OrderCreatedV1, ShipmentCreatedV1
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.shipment import prepare_shipment

SERVICE = "shipping"
log = logging.getLogger(__name__)


async def create_shipment(conn: asyncpg.Connection, event: OrderCreatedV1) -> None:
    shipment = prepare_shipment(event)
    await repository.insert_shipment(conn, shipment)
    await add_to_outbox(
        conn,
        ShipmentCreatedV1.caused_by(
            event,
            producer=SERVICE,
            shipment_id=shipment.shipment_id,
            order_id=shipment.order_id,
            shipping_address=shipment.shipping_address,
        ),
    )
    log.info("order %s: shipment %s created", event.order_id, shipment.shipment_id)
