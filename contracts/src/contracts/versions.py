"""Moving events between versions of their contract, in this one place.

Consumers handle the latest version only: an older one is upcast as it is decoded, so a
consumer accepts every version still on the wire. A producer that must still speak an older
version to consumers not yet upgraded downcasts from the latest. Both keep the envelope
(event id included), so one event in two versions is still one event to an idempotent
consumer.
"""

from collections.abc import Callable
from typing import Any

from .envelope import Event
from .orders import CustomerV2, MoneyV2, OrderCreatedV1, OrderCreatedV2, OrderLineV1, OrderLineV2

ENVELOPE_FIELDS = ("event_id", "occurred_at", "correlation_id", "causation_id", "producer")


def _envelope(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in ENVELOPE_FIELDS}


def order_created_v1_to_v2(old: OrderCreatedV1) -> OrderCreatedV2:
    """v1 knew neither names nor per-line currencies: the addressee stands in for the
    customer's name, the SKU for the product's, and the order's currency for each line's."""
    return OrderCreatedV2(
        **_envelope(old),
        order_id=old.order_id,
        customer=CustomerV2(name=old.shipping_address.name, email=old.customer_email),
        lines=tuple(
            OrderLineV2(
                sku=line.sku,
                name=line.sku,
                quantity=line.quantity,
                unit_price=MoneyV2(amount=line.unit_price, currency=old.currency),
            )
            for line in old.lines
        ),
        total=MoneyV2(amount=old.total, currency=old.currency),
        shipping_address=old.shipping_address,
    )


def order_created_v2_to_v1(new: OrderCreatedV2) -> OrderCreatedV1:
    return OrderCreatedV1(
        **_envelope(new),
        order_id=new.order_id,
        customer_email=new.customer.email,
        lines=tuple(
            OrderLineV1(sku=line.sku, quantity=line.quantity, unit_price=line.unit_price.amount)
            for line in new.lines
        ),
        total=new.total.amount,
        currency=new.total.currency,
        shipping_address=new.shipping_address,
    )


UPCASTERS: dict[type[Event], tuple[type[Event], Callable[[Any], Event]]] = {
    OrderCreatedV1: (OrderCreatedV2, order_created_v1_to_v2),
}
"""Older version -> (the next version, how to get there)."""
DOWNCASTERS: dict[tuple[type[Event], int], Callable[[Any], Event]] = {
    (OrderCreatedV2, 1): order_created_v2_to_v1,
}


def upcast(event: Event, to: type[Event] | None = None) -> Event:
    """The event in version `to` of its contract (default: the latest)."""
    while type(event) is not to and type(event) in UPCASTERS:
        event = UPCASTERS[type(event)][1](event)
    return event


def latest_version(event_class: type[Event]) -> type[Event]:
    while event_class in UPCASTERS:
        event_class = UPCASTERS[event_class][0]
    return event_class


def readable_as(event_class: type[Event]) -> tuple[type[Event], ...]:
    """Every version a consumer of `event_class` accepts: itself and all that upcast to it."""
    older = tuple(cls for cls in UPCASTERS if latest_version(cls) is event_class)
    return (event_class, *older)


def as_version(event: Event, version: int) -> Event:
    """`event` (in its latest version) as `version` of its contract, for older consumers."""
    if version == event.VERSION:
        return event
    try:
        return DOWNCASTERS[(type(event), version)](event)
    except KeyError:
        raise ValueError(f"{event.routing_key()} cannot be written as version {version}") from None
