"""The events the shipping service consumes, the use case each one runs, and what it reads."""

from collections.abc import Mapping
from datetime import timedelta
from functools import partial

from contracts import Event, OrderCancelledV1, OrderConfirmedV1, OrderCreatedV2, OrderRejectedV1
from servicekit.consumer import Handler

from ..config import ShippingSettings
from ..handlers import cancel_shipment, create_shipment, schedule_dispatch


def event_handlers(settings: ShippingSettings) -> Mapping[type[Event], Handler]:
    return {
        OrderCreatedV2: create_shipment,
        OrderConfirmedV1: partial(
            schedule_dispatch, delay=timedelta(seconds=settings.dispatch_delay)
        ),
        OrderRejectedV1: cancel_shipment,
        OrderCancelledV1: cancel_shipment,
    }


_IDS = ("event_id", "correlation_id", "order_id")

FIELDS_READ: Mapping[type[Event], tuple[str, ...]] = {
    OrderCreatedV2: (
        *_IDS,
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
        "lines[].sku",
        "lines[].quantity",
    ),
    OrderConfirmedV1: _IDS,
    OrderRejectedV1: _IDS,
    OrderCancelledV1: _IDS,
}
"""Consumer-driven contract: the fields the handlers above read from each event."""
