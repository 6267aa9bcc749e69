from decimal import Decimal
from types import SimpleNamespace

import pytest

from orders.domain.order import (
    OrderStatus,
    cancellation_refused,
    is_stale,
    order_total,
    status_after,
)

PENDING, CONFIRMED, REJECTED = OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.REJECTED
SHIPPED, CANCELLED = OrderStatus.SHIPPED, OrderStatus.CANCELLED


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        (PENDING, "stock.reserved", CONFIRMED),
        (PENDING, "stock.rejected", REJECTED),
        (CONFIRMED, "shipment.dispatched", SHIPPED),
        (PENDING, "order.cancelled", CANCELLED),
        (CONFIRMED, "order.cancelled", CANCELLED),
    ],
)
def test_an_event_moves_the_order_it_applies_to(current, event, expected) -> None:
    assert status_after(current, event) is expected


@pytest.mark.parametrize(
    ("current", "event"),
    [
        (CONFIRMED, "stock.rejected"),
        (REJECTED, "stock.reserved"),
        (CONFIRMED, "stock.reserved"),
        (PENDING, "shipment.dispatched"),  # dispatched before its stock was reserved
        (CANCELLED, "stock.reserved"),
        (CANCELLED, "shipment.dispatched"),
        (SHIPPED, "order.cancelled"),
        (REJECTED, "order.cancelled"),
        (SHIPPED, "stock.rejected"),
        (PENDING, "shipment.created"),
        (CONFIRMED, "order_confirmation.sent"),
    ],
)
def test_an_event_that_does_not_apply_leaves_the_status_alone(current, event) -> None:
    assert status_after(current, event) is current


@pytest.mark.parametrize(
    ("current", "event"),
    [
        (CANCELLED, "stock.reserved"),
        (CANCELLED, "stock.rejected"),
        (CANCELLED, "shipment.dispatched"),
        (CONFIRMED, "stock.rejected"),
        (CONFIRMED, "stock.reserved"),
        (SHIPPED, "order.cancelled"),
    ],
)
def test_a_status_changing_event_arriving_too_late_is_stale(current, event) -> None:
    assert is_stale(current, event)


@pytest.mark.parametrize(
    ("current", "event"),
    [
        (PENDING, "stock.reserved"),  # it applies
        (CONFIRMED, "shipment.dispatched"),  # it applies
        (PENDING, "shipment.created"),  # never changes a status: informational, not stale
        (CANCELLED, "stock.released"),
        (SHIPPED, "order_confirmation.sent"),
    ],
)
def test_an_event_that_applies_or_only_informs_is_not_stale(current, event) -> None:
    assert not is_stale(current, event)


@pytest.mark.parametrize("current", [PENDING, CONFIRMED, CANCELLED])
def test_an_undispatched_or_already_cancelled_order_may_be_cancelled(current) -> None:
    assert cancellation_refused(current) is None


@pytest.mark.parametrize(
    ("current", "why"),
    [(SHIPPED, "dispatched"), (REJECTED, "rejected")],
)
def test_a_shipped_or_rejected_order_cannot_be_cancelled_and_says_why(current, why) -> None:
    refusal = cancellation_refused(current)
    assert refusal is not None
    assert why in refusal


def test_total_is_exact_decimal_sum() -> None:
    lines = [
        SimpleNamespace(quantity=3, unit_price=Decimal("0.10")),
        SimpleNamespace(quantity=1, unit_price=Decimal("19.99")),
    ]
    assert order_total(lines) == Decimal("20.29")


def test_an_empty_order_totals_zero_with_cents() -> None:
    assert str(order_total([])) == "0.00"
