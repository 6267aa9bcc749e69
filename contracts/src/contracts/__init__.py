"""Versioned event contracts: the only code services share about each other."""

from .envelope import Event, routing_key
from .inventory import RejectedLineV1, ReservedLineV1, StockRejectedV1, StockReservedV1
from .notifications import OrderConfirmationSentV1
from .orders import OrderCreatedV1, OrderLineV1, ShippingAddress
from .registry import ALL_EVENTS, EVENTS_BY_ROUTING_KEY
from .shipping import ShipmentCreatedV1

__all__ = [
    "ALL_EVENTS",
    "EVENTS_BY_ROUTING_KEY",
    "Event",
    "OrderConfirmationSentV1",
    "OrderCreatedV1",
    "OrderLineV1",
    "RejectedLineV1",
    "ReservedLineV1",
    "ShipmentCreatedV1",
    "ShippingAddress",
    "StockRejectedV1",
    "StockReservedV1",
    "routing_key",
]
