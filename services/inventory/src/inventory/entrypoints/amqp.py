"""What the inventory service consumes and answers over RabbitMQ, and what it reads."""

from collections.abc import Mapping

from contracts import (
    AVAILABILITY_QUEUE,
    AvailabilityQueryV1,
    Event,
    OrderCancelledV1,
    OrderCreatedV2,
    OrderShippedV1,
)
from servicekit.consumer import Handler
from servicekit.rpc import Responder

from ..handlers import availability, fulfil_reservation, release_stock, reserve_stock

EVENT_HANDLERS: Mapping[type[Event], Handler] = {
    OrderCreatedV2: reserve_stock,
    OrderCancelledV1: release_stock,
    OrderShippedV1: fulfil_reservation,
}

FIELDS_READ: Mapping[type[Event], tuple[str, ...]] = {
    OrderCreatedV2: ("event_id", "correlation_id", "order_id", "lines[].sku", "lines[].quantity"),
    OrderCancelledV1: ("event_id", "correlation_id", "order_id"),
    OrderShippedV1: ("event_id", "order_id"),
}
"""Consumer-driven contract: the fields the handlers above read from each event."""

RESPONDERS = [Responder(AVAILABILITY_QUEUE, AvailabilityQueryV1, availability)]
