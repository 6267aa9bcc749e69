"""Order rules: what an order costs, how its status may move, and when it may be cancelled."""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from contracts.audit import OrderStatus  # the audit's vocabulary too: one definition

CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED})
FINAL = frozenset({OrderStatus.SHIPPED, OrderStatus.REJECTED, OrderStatus.CANCELLED})
"""Statuses an order never leaves."""
_STAGE = {OrderStatus.PENDING: 0, OrderStatus.CONFIRMED: 1} | dict.fromkeys(FINAL, 2)


def is_later(status: OrderStatus, than: OrderStatus) -> bool:
    """Whether an order in `than` can only have reached `status` after it: statuses move
    forward, pending, then confirmed, then a final one (pending may go straight to one)."""
    return _STAGE[status] > _STAGE[than]


@dataclass(frozen=True)
class Transition:
    """The status change one kind of event makes to an order in one of `sources`."""

    sources: frozenset[OrderStatus]
    target: OrderStatus

    def status_after(self, current: OrderStatus) -> OrderStatus | None:
        """`target` for an order in `current`, or None when the event is stale.

        Events arrive late, twice, or after the customer cancelled: one that no longer
        applies never moves an order backwards or sideways.
        """
        return self.target if current in self.sources else None


CONFIRMATION = Transition(frozenset({OrderStatus.PENDING}), OrderStatus.CONFIRMED)
"""Inventory reserved every line."""
REJECTION = Transition(frozenset({OrderStatus.PENDING}), OrderStatus.REJECTED)
"""Inventory could not reserve some line."""
DISPATCH = Transition(frozenset({OrderStatus.CONFIRMED}), OrderStatus.SHIPPED)
"""Shipping sent the parcel."""


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
