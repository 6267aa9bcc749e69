"""Reservation rule: an order gets every line it asks for, or nothing."""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from contracts.audit import ReservationStatus  # the audit's vocabulary too: one definition


class RequestedLine(Protocol):
    sku: str
    quantity: int


@dataclass(frozen=True)
class Shortfall:
    sku: str
    requested: int
    available: int
    reason: Literal["insufficient_stock", "unknown_sku"]


@dataclass(frozen=True)
class ReservationDecision:
    requested: Mapping[str, int]
    shortfalls: tuple[Shortfall, ...]

    @property
    def accepted(self) -> bool:
        return not self.shortfalls

    @property
    def status(self) -> ReservationStatus:
        """The status of the reservation this decision makes."""
        return ReservationStatus.RESERVED if self.accepted else ReservationStatus.REJECTED


def requested_quantities(lines: Iterable[RequestedLine]) -> dict[str, int]:
    """Quantity per SKU, lines for the same SKU added up, in SKU order.

    SKU order is also the order rows are locked in, so concurrent reservations cannot
    deadlock.
    """
    totals: Counter[str] = Counter()
    for line in lines:
        totals[line.sku] += line.quantity
    return dict(sorted(totals.items()))


def decide(requested: Mapping[str, int], available: Mapping[str, int]) -> ReservationDecision:
    """Reserve all of `requested` from `available`, or explain every line that falls short."""
    shortfalls = []
    for sku, quantity in requested.items():
        if sku not in available:
            shortfalls.append(Shortfall(sku, quantity, 0, "unknown_sku"))
        elif available[sku] < quantity:
            shortfalls.append(Shortfall(sku, quantity, available[sku], "insufficient_stock"))
    return ReservationDecision(requested=dict(requested), shortfalls=tuple(shortfalls))
