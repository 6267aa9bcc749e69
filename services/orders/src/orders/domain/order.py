"""Order rules: what an order costs, how its status may move, and when it may be cancelled."""

from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from contracts.audit import OrderStatus  # the audit's vocabulary too: one definition

CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED})

_TRANSITIONS: dict[str, dict[OrderStatus, OrderStatus]] = {
    "stock.reserved": {OrderStatus.PENDING: OrderStatus.CONFIRMED},
    "stock.rejected": {OrderStatus.PENDING: OrderStatus.REJECTED},
    "shipment.dispatched": {OrderStatus.CONFIRMED: OrderStatus.SHIPPED},
    "order.cancelled": dict.fromkeys(CANCELLABLE, OrderStatus.CANCELLED),
}


def status_after(current: OrderStatus, event_type: str) -> OrderStatus:
    """The status once `event_type` has happened; unchanged when the event does not apply.

    Events arrive late, twice, or after the customer cancelled: one that no longer applies
    never moves an order backwards or sideways.
    """
    return _TRANSITIONS.get(event_type, {}).get(current, current)


def is_stale(current: OrderStatus, event_type: str) -> bool:
    """The event would move an order in another status, but not one in `current`."""
    return event_type in _TRANSITIONS and current not in _TRANSITIONS[event_type]


def cancellation_refused(current: OrderStatus) -> str | None:
    """Why an order in `current` cannot be cancelled, or None when it can."""
    if current in CANCELLABLE or current is OrderStatus.CANCELLED:
        return None
    if current is OrderStatus.SHIPPED:
        return "it has already been dispatched"
    return "it was rejected, so there is nothing to cancel"


class PricedLine(Protocol):
    quantity: int
    unit_price: Decimal


def order_total(lines: Iterable[PricedLine]) -> Decimal:
    return sum((line.quantity * line.unit_price for line in lines), Decimal("0.00"))
