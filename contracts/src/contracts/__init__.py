"""Versioned event contracts: the only code services share about each other."""

from .common import ShippingAddress
from .envelope import Event, routing_key
from .inventory import (
    AvailabilityQueryV1,
    AvailabilityV1,
    RejectedLineV1,
    ReservedLineV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from .notifications import OrderConfirmationSentV1
from .orders import (
    CustomerV2,
    MoneyV2,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderLineV1,
    OrderLineV2,
    OrderRejectedV1,
    OrderShippedV1,
)
from .registry import (
    ALL_EVENTS,
    AVAILABILITY_QUEUE,
    EVENTS_BY_ROUTING_KEY,
    REQUEST_REPLY_MESSAGES,
)
from .shipping import ShipmentCancelledV1, ShipmentCreatedV1, ShipmentDispatchedV1

__all__ = [
    "ALL_EVENTS",
    "AVAILABILITY_QUEUE",
    "EVENTS_BY_ROUTING_KEY",
    "REQUEST_REPLY_MESSAGES",
    "AvailabilityQueryV1",
    "AvailabilityV1",
    "CustomerV2",
    "Event",
    "MoneyV2",
    "OrderCancelledV1",
    "OrderConfirmationSentV1",
    "OrderConfirmedV1",
    "OrderCreatedV1",
    "OrderCreatedV2",
    "OrderLineV1",
    "OrderLineV2",
    "OrderRejectedV1",
    "OrderShippedV1",
    "RejectedLineV1",
    "ReservedLineV1",
    "ShipmentCancelledV1",
    "ShipmentCreatedV1",
    "ShipmentDispatchedV1",
    "ShippingAddress",
    "StockRejectedV1",
    "StockReleasedV1",
    "StockReservedV1",
    "routing_key",
]
