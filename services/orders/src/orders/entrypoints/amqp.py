"""The events the orders service consumes, the use case each one runs, and what it reads."""

from collections.abc import Mapping

from contracts import (
    Event,
    ShipmentCancelledV1,
    ShipmentDispatchedV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from servicekit.consumer import Handler

from ..handlers import confirm_order, record_in_history, reject_order, ship_order

EVENT_HANDLERS: Mapping[type[Event], Handler] = {
    StockReservedV1: confirm_order,
    StockRejectedV1: reject_order,
    StockReleasedV1: record_in_history,
    ShipmentDispatchedV1: ship_order,
    ShipmentCancelledV1: record_in_history,
}

_ENVELOPE = ("event_id", "event_type", "producer", "occurred_at", "correlation_id")

FIELDS_READ: Mapping[type[Event], tuple[str, ...]] = {
    StockReservedV1: (*_ENVELOPE, "order_id"),
    StockRejectedV1: (
        *_ENVELOPE,
        "order_id",
        "rejected_lines[].sku",
        "rejected_lines[].requested",
        "rejected_lines[].available",
        "rejected_lines[].reason",
    ),
    StockReleasedV1: (*_ENVELOPE, "order_id"),
    ShipmentDispatchedV1: (*_ENVELOPE, "order_id", "shipment_id", "tracking_number"),
    ShipmentCancelledV1: (*_ENVELOPE, "order_id"),
}
"""Consumer-driven contract: the fields the handlers above read from each event."""
