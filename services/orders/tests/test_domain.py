from decimal import Decimal
from types import SimpleNamespace

import pytest

from orders.domain.order import (
    CONFIRMATION,
    DISPATCH,
    REJECTION,
    OrderStatus,
    Transition,
    cancellation_refused,
    order_total,
)

PENDING, CONFIRMED, REJECTED = OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.REJECTED
SHIPPED, CANCELLED = OrderStatus.SHIPPED, OrderStatus.CANCELLED


@pytest.mark.parametrize(
    ("transition", "current", "expected"),
    [
        pytest.param(CONFIRMATION, PENDING, CONFIRMED, id="stock-reserved"),
        pytest.param(REJECTION, PENDING, REJECTED, id="stock-rejected"),
        pytest.param(DISPATCH, CONFIRMED, SHIPPED, id="shipment-dispatched"),
    ],
)
def test_an_event_moves_the_order_it_applies_to(
    transition: Transition, current: OrderStatus, expected: OrderStatus
) -> None:
    assert transition.status_after(current) is expected


@pytest.mark.parametrize(
    ("transition", "current"),
    [
        pytest.param(REJECTION, CONFIRMED, id="rejected-after-confirmed"),
        pytest.param(CONFIRMATION, REJECTED, id="reserved-after-rejected"),
        pytest.param(CONFIRMATION, CONFIRMED, id="reserved-twice"),
        pytest.param(DISPATCH, PENDING, id="dispatched-before-its-stock-was-reserved"),
        pytest.param(CONFIRMATION, CANCELLED, id="reserved-after-cancelled"),
        pytest.param(REJECTION, CANCELLED, id="rejected-after-cancelled"),
        pytest.param(DISPATCH, CANCELLED, id="dispatched-after-cancelled"),
        pytest.param(REJECTION, SHIPPED, id="rejected-after-shipped"),
        pytest.param(DISPATCH, SHIPPED, id="dispatched-twice"),
    ],
)
def test_an_event_arriving_too_late_or_too_early_is_stale_and_moves_nothing(
    transition: Transition, current: OrderStatus
) -> None:
    assert transition.status_after(current) is None


@pytest.mark.parametrize("transition", [CONFIRMATION, REJECTION, DISPATCH])
def test_no_event_moves_an_order_backwards_or_out_of_a_final_status(
    transition: Transition,
) -> None:
    for final in (REJECTED, SHIPPED, CANCELLED):
        assert transition.status_after(final) is None
    assert transition.status_after(transition.target) is None


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
