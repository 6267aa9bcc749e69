from decimal import Decimal
from types import SimpleNamespace

import pytest

from orders.domain.order import OrderStatus, order_total, status_after

PENDING, CONFIRMED, REJECTED = OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.REJECTED


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        (PENDING, "stock.reserved", CONFIRMED),
        (PENDING, "stock.rejected", REJECTED),
        (CONFIRMED, "stock.rejected", CONFIRMED),
        (REJECTED, "stock.reserved", REJECTED),
        (CONFIRMED, "stock.reserved", CONFIRMED),
        (PENDING, "shipment.created", PENDING),
    ],
)
def test_status_moves_forward_only(current, event, expected) -> None:
    assert status_after(current, event) is expected


def test_total_is_exact_decimal_sum() -> None:
    lines = [
        SimpleNamespace(quantity=3, unit_price=Decimal("0.10")),
        SimpleNamespace(quantity=1, unit_price=Decimal("19.99")),
    ]
    assert order_total(lines) == Decimal("20.29")
