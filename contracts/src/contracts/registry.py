"""Every event class ever published, found by routing key, and the request-reply messages.

Retired events stay (`ShipmentCreatedV1`, `OrderConfirmationSentV1`): their schemas are still
checked, and each service unbinds every known event it does not read.
"""

from pydantic import BaseModel

from .envelope import Event
from .inventory import (
    AvailabilityQueryV1,
    AvailabilityV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from .notifications import OrderConfirmationSentV1
from .orders import (
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    OrderShippedV1,
)
from .shipping import ShipmentCancelledV1, ShipmentCreatedV1, ShipmentDispatchedV1

ALL_EVENTS: tuple[type[Event], ...] = (
    OrderCreatedV1,
    OrderCreatedV2,
    OrderConfirmedV1,
    OrderRejectedV1,
    OrderCancelledV1,
    OrderShippedV1,
    StockReservedV1,
    StockRejectedV1,
    StockReleasedV1,
    ShipmentCreatedV1,
    ShipmentDispatchedV1,
    ShipmentCancelledV1,
    OrderConfirmationSentV1,
)

EVENTS_BY_ROUTING_KEY: dict[str, type[Event]] = {cls.routing_key(): cls for cls in ALL_EVENTS}

AVAILABILITY_QUEUE = "inventory.availability"
"""Where inventory answers availability queries (request-reply, direct reply-to)."""

REQUEST_REPLY_MESSAGES: dict[str, type[BaseModel]] = {
    "inventory.availability.query.v1": AvailabilityQueryV1,
    "inventory.availability.reply.v1": AvailabilityV1,
}
"""Schema name -> model, for messages that are not events."""
