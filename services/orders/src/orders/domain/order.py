"""Order rules: what an order costs and how its status may move."""

from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


_TRANSITIONS: dict[str, dict[OrderStatus, OrderStatus]] = {
    "stock.reserved": {OrderStatus.PENDING: OrderStatus.CONFIRMED},
    "stock.rejected": {OrderStatus.PENDING: OrderStatus.REJECTED},
}


def status_after(current: OrderStatus, event_type: str) -> OrderStatus:
    """The status once `event_type` has happened; unchanged when the event does not apply.

    Events can arrive late or twice; one that no longer applies never moves an order
    backwards or sideways.
    """
    return _TRANSITIONS.get(event_type, {}).get(current, current)


class PricedLine(Protocol):
    quantity: int
    unit_price: Decimal


def order_total(lines: Iterable[PricedLine]) -> Decimal:
    return sum((line.quantity * line.unit_price for line in lines), Decimal("0.00"))
