"""The events the email service consumes, the use case each one runs, and what it reads."""

from collections.abc import Mapping
from functools import partial

from contracts import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    OrderShippedV1,
)
from servicekit.consumer import Handler

from ..handlers import (
    Sender,
    remember_order,
    send_cancellation,
    send_confirmation,
    send_dispatch_notice,
    send_rejection,
)


def event_handlers(sender: Sender) -> Mapping[type[Event], Handler]:
    return {
        OrderCreatedV2: remember_order,
        OrderConfirmedV1: partial(send_confirmation, sender=sender),
        OrderRejectedV1: partial(send_rejection, sender=sender),
        OrderShippedV1: partial(send_dispatch_notice, sender=sender),
        OrderCancelledV1: partial(send_cancellation, sender=sender),
    }


SENDING_EMAIL: tuple[type[Event], ...] = (
    OrderConfirmedV1,
    OrderRejectedV1,
    OrderShippedV1,
    OrderCancelledV1,
)
"""The events whose handlers send an email inside their transaction: each is applied in a
transaction of its own, so a commit that fails can send again only that one email. The
rest (order.created) are applied in batches."""


_IDS = ("event_id", "correlation_id", "order_id")

FIELDS_READ: Mapping[type[Event], tuple[str, ...]] = {
    OrderCreatedV2: (
        "order_id",
        "customer.name",
        "customer.email",
        "lines[].sku",
        "lines[].name",
        "lines[].quantity",
        "lines[].unit_price.amount",
        "total.amount",
        "total.currency",
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
    ),
    OrderConfirmedV1: _IDS,
    OrderRejectedV1: (
        *_IDS,
        "short_items[].sku",
        "short_items[].requested",
        "short_items[].available",
        "short_items[].reason",
    ),
    OrderShippedV1: (*_IDS, "tracking_number"),
    OrderCancelledV1: (*_IDS, "reason"),
}
"""Consumer-driven contract: the fields the handlers above read from each event."""
